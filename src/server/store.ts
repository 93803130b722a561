/**
 * Where registrations live. The core reaches the store only through `RegistrationStore` (as `effect` actions run by
 * src/server/runner.ts), so a store shared by several processes or servers can replace the in-memory one:
 * src/node/server-ipc.ts serves this one to the workers of a multi-process server, and a Redis store implements
 * the same three operations (docs/protocol.md, "Scaling out").
 */
import type { Endpoint } from '../codec/address.js';
import type { Candidate, NatFiltering, NatMapping, PeerMode, PortAllocation, Transport } from '../codec/messages.js';
import type { Awaitable, Owner } from './types.js';

export interface Registration {
  /** The store's name space: the network id (hex). UDP and TCP registrations share it (one name, one peer). */
  readonly network: string;
  readonly name: string;
  readonly target: string;
  /** Hex of the 16-byte session nonce. */
  readonly nonce: string;
  readonly mapped: Endpoint;
  readonly candidates: readonly Candidate[];
  readonly mapping: NatMapping;
  /** The peer's port allocation, when it reported one (passed on in introductions). */
  readonly allocation?: PortAllocation;
  /** The peer's filtering, when it reported one (passed on in introductions). */
  readonly filtering?: NatFiltering;
  /** What the peer runs (MODE), if it said; passed to its partner in the introduction. */
  readonly mode?: PeerMode;
  /**
   * Which kind of path the registration is for (absent: UDP). Registrations of the two kinds pair only when both say
   * what they run, so that each side can report the mismatch (a `send` facing a `punch`).
   */
  readonly transport?: Transport;
  /**
   * When it expires unless refreshed: a few of the peer's refresh periods (REFRESH-INTERVAL) after this REGISTER, so
   * that a peer killed without a word disappears within seconds (src/server/introductions.ts `lifetimeMsOf`).
   */
  readonly expiresAt: number;
  /** The server and channel that can reach the peer (pushes go there). */
  readonly owner: Owner;
  /**
   * Which REGISTER wrote it last (hex of its transaction id): a push made against one version is acknowledged
   * by any later one (src/server/pushes.ts).
   */
  readonly version: string;
}

export interface RegisterResult {
  /** The live registration of the same name that this one replaced (a refresh, or another session). */
  readonly previous: Registration | undefined;
  /** The live registration named by `target` in the same name space, as it was at that moment. */
  readonly partner: Registration | undefined;
  /** Registrations evicted to stay within the store's bound. */
  readonly evicted: number;
  /**
   * Set when a refresh (`refresh`) met a live registration of another session under the same name: nothing was
   * written; `previous` is that newer session, which replaced the sender's.
   */
  readonly superseded?: boolean;
}

export interface RegistrationStore {
  /**
   * In one atomic step: stores `reg` (replacing any registration of its name), and returns what it replaced and
   * the registration of its target. Two peers registering for each other at once, on any servers, can never both
   * miss the other: whichever is stored second sees the first. (Redis: one Lua script, SET … GET then GET.)
   * With `refresh` (the sender refreshes a session it holds), a live registration of another session under the name
   * is left in place and nothing is written (`superseded`): a displaced peer's refresh never takes the name back.
   */
  register(reg: Registration, now: number, refresh?: boolean): Awaitable<RegisterResult>;
  /** The live registration of `name`, if any. */
  lookup(network: string, name: string, now: number): Awaitable<Registration | undefined>;
  /**
   * Deletes the registration of `name` only if it is still session `nonce` (and, when `owner` is given, still held
   * by that owner): a late or replayed withdrawal never removes a newer session. Returns what it deleted.
   */
  withdraw(network: string, name: string, nonce: string, owner: Owner | undefined, now: number): Awaitable<Registration | undefined>;
}

export function sameOwner(a: Owner, b: Owner): boolean {
  if (a.server !== b.server || a.channel.kind !== b.channel.kind) return false;
  return a.channel.kind === 'udp' || (b.channel.kind === 'tcp' && a.channel.conn === b.channel.conn);
}

/**
 * In-memory store: a Map kept in refresh order (a refresh moves an entry to the end), so evictions of the oldest
 * entry start at the front and cost O(removed). Lifetimes differ per registration (a few of its own refresh periods),
 * so every lookup checks `expiresAt`; expired entries at the front go on every write, and all of them on `sweep`
 * (the host calls it once a second). Answers at once (no promise).
 */
export class MemoryStore implements RegistrationStore {
  private readonly entries = new Map<string, Registration>();
  /** One Owner object per server for UDP registrations, however many registrations name it. */
  private readonly udpOwners = new Map<string, Owner>();
  /** Registrations that expired without a refresh. */
  expirations = 0;

  constructor(private readonly maxEntries: number) {}

  get size(): number {
    return this.entries.size;
  }

  register(reg: Registration, now: number, refresh = false): RegisterResult {
    this.sweepFront(now);
    const key = keyOf(reg.network, reg.name);
    const previous = this.entries.get(key);
    if (refresh && previous && previous.expiresAt > now && previous.nonce !== reg.nonce) {
      return { previous, partner: undefined, evicted: 0, superseded: true };
    }
    this.entries.delete(key);
    let evicted = 0;
    while (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
      evicted++;
    }
    this.entries.set(key, this.intern(reg));
    return { previous: previous && previous.expiresAt > now ? previous : undefined, partner: this.lookup(reg.network, reg.target, now), evicted };
  }

  lookup(network: string, name: string, now: number): Registration | undefined {
    const r = this.entries.get(keyOf(network, name));
    return r && r.expiresAt > now ? r : undefined;
  }

  withdraw(network: string, name: string, nonce: string, owner: Owner | undefined, now: number): Registration | undefined {
    const r = this.lookup(network, name, now);
    if (!r || r.nonce !== nonce || (owner && !sameOwner(r.owner, owner))) return undefined;
    this.entries.delete(keyOf(network, name));
    return r;
  }

  /** Removes every expired entry; returns how many. O(size): the host calls it about once a second. */
  sweep(now: number): number {
    let removed = 0;
    for (const [key, reg] of this.entries) {
      if (reg.expiresAt > now) continue;
      this.entries.delete(key);
      removed++;
    }
    this.expirations += removed;
    return removed;
  }

  /** Removes the expired entries at the front (the least recently refreshed), up to the first live one. */
  private sweepFront(now: number): void {
    for (const [key, reg] of this.entries) {
      if (reg.expiresAt > now) break;
      this.entries.delete(key);
      this.expirations++;
    }
  }

  private intern(reg: Registration): Registration {
    if (reg.owner.channel.kind !== 'udp') return reg;
    const shared = this.udpOwners.get(reg.owner.server);
    if (shared === reg.owner) return reg;
    if (shared) return { ...reg, owner: shared };
    // A handful of servers at most; bounded anyway so that nothing a client sends can grow it.
    if (this.udpOwners.size < 1024) this.udpOwners.set(reg.owner.server, reg.owner);
    return reg;
  }
}

function keyOf(network: string, name: string): string {
  return `${network}\u0000${name}`;
}
