/**
 * T-STUN ("trivial STUN"), punchhole's TCP matchmaker on 3477/tcp, as a sans-IO core: the driver
 * (src/node/tstun.ts) reports connections, bytes, half-closes, closes and the time; the core answers
 * with writes, closes, destroys and events. No sockets, no timers, no clock. docs/tstun.md has the
 * wire format and a sequence diagram.
 *
 * Theory of operation. A client connects, sends SHA-256(pairing key) — exactly 32 bytes — and usually
 * half-closes. When a second client presents the same 32 bytes, each of the two is sent the other's
 * address as the server saw it, as ASCII `"<ip> <port>"` with no line ending, and both connections are
 * closed. Clients then do TCP simultaneous open to each other from the port they used towards us.
 *
 * Every connection is in exactly one phase, each kept in its own Map:
 *
 *   collecting ──32 bytes──▶ waiting ──same key arrives──▶ closing ──driver reports close──▶ (gone)
 *       │  └─32 bytes, a partner already waits──────────────▲
 *       └─▶ rejected (too long, EOF early, timeout)   waiting ─▶ rejected (extra bytes, timeout)
 *
 * A phase's deadline is its entry time plus a constant, and a connection only ever moves forward, so
 * each Map's insertion order is its deadline order: expiry looks at the front of each Map only, and
 * the next deadline is the smallest of three first entries. This relies on `now` never going back
 * (the driver uses a monotonic clock); if it did, expiry would be late by the step, never early.
 *
 * Compatibility with punchhole (github.com/dxdxdt/punchhole, tstun/__main__.py and tcp/__main__.py):
 * its server reads the key with one `recv(32)` and never waits for the half-close, and its client
 * reads the answer with one `recv(52)` (INET6_ADDRSTRLEN + 1 + 5) and takes `split()[:2]`. So the key
 * counts as complete at 32 bytes whether or not EOF follows (a client that never half-closes still
 * gets its answer), and the answer goes out as one write of at most 45 bytes, no newline.
 *
 * Everything is bounded: connections overall and per source, the time to send the key, the time to
 * wait for a partner and the time to finish closing, plus a per-source connection-rate limit in a
 * fixed table. State per connection is a 32-byte buffer and a few fields; nothing outlives its
 * connection. Input never throws: misbehaving clients are counted and dropped.
 */
import { addressToBytes, normaliseAddress, type Endpoint } from '../codec/address.js';
import { BurrowError } from '../errors.js';
import { SourceRateLimiter } from './limits.js';

/** punchhole's port, TCP. */
export const TSTUN_PORT = 3477;
/** The key is SHA-256 of the user's pairing key; the server never sees the pairing key itself. */
export const TSTUN_KEY_BYTES = 32;

export interface TstunLimits {
  /** Open connections at once, all phases. */
  readonly maxConnections: number;
  /** Open connections at once from one IPv4 address or one IPv6 /64. */
  readonly maxConnectionsPerSource: number;
  /** From accept to the 32nd key byte. */
  readonly keyTimeoutMs: number;
  /** From the 32nd key byte to the partner's arrival. */
  readonly partnerTimeoutMs: number;
  /** From our answer to the connection being fully closed (a client that never reads or closes). */
  readonly lingerTimeoutMs: number;
  /** New connections per second per source (token bucket), and the bucket size. */
  readonly perSourceRate: number;
  readonly perSourceBurst: number;
  /** Slots in the fixed per-source rate table (a power of two, 16 bytes each). */
  readonly rateTableSlots: number;
}

export const DEFAULT_TSTUN_LIMITS: TstunLimits = {
  maxConnections: 1024,
  maxConnectionsPerSource: 16,
  keyTimeoutMs: 10_000,
  partnerTimeoutMs: 120_000,
  lingerTimeoutMs: 10_000,
  perSourceRate: 5,
  perSourceBurst: 20,
  rateTableSlots: 4096,
};

/** Fills in defaults and checks values; bad limits are the operator's mistake, so a USAGE error. */
export function resolveTstunLimits(partial: Partial<TstunLimits> = {}): TstunLimits {
  const limits: TstunLimits = { ...DEFAULT_TSTUN_LIMITS, ...partial };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isFinite(value) || value <= 0) {
      throw BurrowError.usage(`T-STUN limit ${name} = ${String(value)} must be a positive number`);
    }
  }
  const slots = limits.rateTableSlots;
  if (!Number.isInteger(slots) || (slots & (slots - 1)) !== 0) {
    throw BurrowError.usage(`T-STUN limit rateTableSlots = ${slots} must be a power of two`);
  }
  return limits;
}

/** Chosen by the driver; unique among open connections. */
export type TstunConnectionId = number;

/** Why a connection was turned away or dropped before its answer. */
export type TstunRejectReason =
  /** Its source opened connections faster than `perSourceRate`. */
  | 'rate-limited'
  /** `maxConnections` were open. */
  | 'too-many-connections'
  /** `maxConnectionsPerSource` were open from its address (IPv6: its /64). */
  | 'too-many-from-source'
  /** More than 32 bytes before the answer. */
  | 'key-too-long'
  /** EOF before 32 bytes. */
  | 'key-too-short';

/** key: no complete key in time; partner: nobody else presented it; linger: our answer never finished closing. */
export type TstunTimeoutPhase = 'key' | 'partner' | 'linger';

export type TstunDropReason = TstunRejectReason | `${TstunTimeoutPhase}-timeout`;

/** One side of a pair, for logs. The key is deliberately absent: whoever reads it can be paired. */
export interface TstunClient {
  readonly id: TstunConnectionId;
  /** As observed, IPv4-mapped IPv6 shown as IPv4. */
  readonly remote: Endpoint;
}

export type TstunEvent =
  /** Key complete, nobody waiting with it yet. */
  | { readonly type: 'waiting'; readonly client: TstunClient }
  /** `first` had waited `waitedMs` for `second`; both were sent the other's address. */
  | { readonly type: 'paired'; readonly first: TstunClient; readonly second: TstunClient; readonly waitedMs: number }
  | { readonly type: 'rejected'; readonly client: TstunClient; readonly reason: TstunRejectReason }
  | { readonly type: 'timed-out'; readonly client: TstunClient; readonly phase: TstunTimeoutPhase }
  /** The client closed or reset before it had an answer; it will never be paired. */
  | { readonly type: 'left'; readonly client: TstunClient; readonly phase: 'collecting' | 'waiting' };

export type TstunAction =
  | { readonly type: 'write'; readonly id: TstunConnectionId; readonly data: Uint8Array }
  /** Finish sending what was written, then close (FIN, not RST). */
  | { readonly type: 'close'; readonly id: TstunConnectionId }
  /** Close at once, discarding anything unsent; the core has already forgotten the connection. */
  | { readonly type: 'destroy'; readonly id: TstunConnectionId; readonly reason: TstunDropReason }
  | { readonly type: 'event'; readonly event: TstunEvent };

/** Counters and gauges, read by metrics and tests. */
export interface TstunStats {
  /** `connected` inputs, including those turned away at once. */
  connections: number;
  bytesIn: number;
  bytesOut: number;
  pairs: number;
  rejected: Record<TstunRejectReason, number>;
  timedOut: Record<TstunTimeoutPhase, number>;
  /** Clients gone before their answer. */
  left: number;
  /** Gauges, read from the tables themselves: connections tracked, keys waiting, distinct sources. */
  open: number;
  waiting: number;
  sources: number;
}

export interface TstunConfig {
  readonly limits?: Partial<TstunLimits>;
  /** Keys the per-source hash so collisions cannot be aimed at a victim; pass a random value. */
  readonly seed: number;
}

interface Collecting {
  readonly client: TstunClient;
  readonly source: string;
  readonly deadline: number;
  readonly key: Uint8Array;
  filled: number;
}

interface Waiting {
  readonly client: TstunClient;
  readonly source: string;
  readonly deadline: number;
  readonly keyHex: string;
  readonly since: number;
}

interface Closing {
  readonly client: TstunClient;
  readonly source: string;
  readonly deadline: number;
}

export class TstunCore {
  readonly limits: TstunLimits;
  readonly stats: TstunStats = {
    connections: 0, bytesIn: 0, bytesOut: 0, pairs: 0,
    rejected: { 'rate-limited': 0, 'too-many-connections': 0, 'too-many-from-source': 0, 'key-too-long': 0, 'key-too-short': 0 },
    timedOut: { key: 0, partner: 0, linger: 0 },
    left: 0, open: 0, waiting: 0, sources: 0,
  };
  private readonly collecting = new Map<TstunConnectionId, Collecting>();
  private readonly waiting = new Map<TstunConnectionId, Waiting>();
  private readonly closing = new Map<TstunConnectionId, Closing>();
  /**
   * Waiting connection per key. One entry at most: a second arrival is paired at once, so FIFO order
   * is simply "the one that waits", and a third client with the key waits for a fourth.
   */
  private readonly byKey = new Map<string, TstunConnectionId>();
  /** Open connections per source; an entry exists only while its count is positive. */
  private readonly perSource = new Map<string, number>();
  private readonly limiter: SourceRateLimiter;

  constructor(config: TstunConfig) {
    this.limits = resolveTstunLimits(config.limits);
    this.limiter = new SourceRateLimiter(this.limits.rateTableSlots, this.limits.perSourceRate, this.limits.perSourceBurst, config.seed);
  }

  /** When the driver should next call `handleTimer`, or undefined when nothing can expire. */
  get nextTimeoutAt(): number | undefined {
    let next: number | undefined;
    for (const phase of [this.collecting, this.waiting, this.closing]) {
      const first = phase.values().next();
      if (!first.done && (next === undefined || first.value.deadline < next)) next = first.value.deadline;
    }
    return next;
  }

  handleConnected(id: TstunConnectionId, remote: Endpoint, now: number): TstunAction[] {
    const out: TstunAction[] = [];
    this.stats.connections++;
    // A reused id is a driver bug; ignoring it keeps the tracked connection's accounting intact.
    if (this.isOpen(id)) return out;
    const client: TstunClient = { id, remote: { address: normaliseAddress(remote.address) ?? remote.address, port: remote.port } };
    const source = sourceOf(client.remote.address);
    // The rate check comes first so that a source hammering a full server still spends its tokens.
    const reason: TstunRejectReason | undefined =
      !this.limiter.allow(source, now) ? 'rate-limited' :
      this.stats.open >= this.limits.maxConnections ? 'too-many-connections' :
      (this.perSource.get(source) ?? 0) >= this.limits.maxConnectionsPerSource ? 'too-many-from-source' :
      undefined;
    if (reason !== undefined) {
      this.stats.rejected[reason]++;
      out.push({ type: 'destroy', id, reason }, { type: 'event', event: { type: 'rejected', client, reason } });
      return out;
    }
    this.perSource.set(source, (this.perSource.get(source) ?? 0) + 1);
    this.collecting.set(id, { client, source, deadline: now + this.limits.keyTimeoutMs, key: new Uint8Array(TSTUN_KEY_BYTES), filled: 0 });
    this.updateGauges();
    return out;
  }

  handleData(id: TstunConnectionId, bytes: Uint8Array, now: number): TstunAction[] {
    const out: TstunAction[] = [];
    this.stats.bytesIn += bytes.length;
    if (bytes.length === 0) return out;
    const c = this.collecting.get(id);
    if (c) {
      if (c.filled + bytes.length > TSTUN_KEY_BYTES) {
        this.reject(id, c, 'key-too-long', out);
        return out;
      }
      c.key.set(bytes, c.filled);
      c.filled += bytes.length;
      if (c.filled === TSTUN_KEY_BYTES) this.keyComplete(id, c, now, out);
      return out;
    }
    const w = this.waiting.get(id);
    // The key was 32 bytes and anything after it is not T-STUN.
    if (w) this.reject(id, w, 'key-too-long', out);
    // Bytes after our answer (closing) are ignored: the pairing has happened, and the linger
    // timeout bounds how long such a client can keep the connection.
    return out;
  }

  /** The client half-closed (EOF). Normal after the key; before it, the key is short. */
  handleEnded(id: TstunConnectionId): TstunAction[] {
    const out: TstunAction[] = [];
    const c = this.collecting.get(id);
    if (c) this.reject(id, c, 'key-too-short', out);
    return out;
  }

  /** The connection is fully closed (by either side, or reset). Never pairs with it afterwards. */
  handleClosed(id: TstunConnectionId): TstunAction[] {
    const out: TstunAction[] = [];
    const c = this.collecting.get(id) ?? this.waiting.get(id);
    if (c) {
      this.stats.left++;
      out.push({ type: 'event', event: { type: 'left', client: c.client, phase: this.collecting.has(id) ? 'collecting' : 'waiting' } });
      this.forget(id, c);
      return out;
    }
    const done = this.closing.get(id);
    if (done) this.forget(id, done);
    return out;
  }

  handleTimer(now: number): TstunAction[] {
    const out: TstunAction[] = [];
    const phases = [[this.collecting, 'key'], [this.waiting, 'partner'], [this.closing, 'linger']] as const;
    for (const [phase, name] of phases) {
      // Insertion order is deadline order (see the top of the file), so stop at the first live one.
      for (const [id, c] of phase) {
        if (c.deadline > now) break;
        this.stats.timedOut[name]++;
        out.push({ type: 'destroy', id, reason: `${name}-timeout` }, { type: 'event', event: { type: 'timed-out', client: c.client, phase: name } });
        this.forget(id, c);
      }
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------

  private keyComplete(id: TstunConnectionId, c: Collecting, now: number, out: TstunAction[]): void {
    this.collecting.delete(id);
    const keyHex = hexOf(c.key);
    const partnerId = this.byKey.get(keyHex);
    const partner = partnerId === undefined ? undefined : this.waiting.get(partnerId);
    if (partnerId === undefined || !partner) {
      this.waiting.set(id, { client: c.client, source: c.source, deadline: now + this.limits.partnerTimeoutMs, keyHex, since: now });
      this.byKey.set(keyHex, id);
      this.updateGauges();
      out.push({ type: 'event', event: { type: 'waiting', client: c.client } });
      return;
    }
    this.waiting.delete(partnerId);
    this.byKey.delete(keyHex);
    this.stats.pairs++;
    const deadline = now + this.limits.lingerTimeoutMs;
    this.closing.set(partnerId, { client: partner.client, source: partner.source, deadline });
    this.closing.set(id, { client: c.client, source: c.source, deadline });
    this.updateGauges();
    // The one that waited hears first. Each answer is one write so that punchhole's single recv()
    // gets all of it.
    for (const [to, about] of [[partner.client, c.client], [c.client, partner.client]] as const) {
      const data = encodeTstunAnswer(about.remote);
      this.stats.bytesOut += data.length;
      out.push({ type: 'write', id: to.id, data }, { type: 'close', id: to.id });
    }
    out.push({ type: 'event', event: { type: 'paired', first: partner.client, second: c.client, waitedMs: now - partner.since } });
  }

  private reject(id: TstunConnectionId, c: Collecting | Waiting, reason: TstunRejectReason, out: TstunAction[]): void {
    this.stats.rejected[reason]++;
    out.push({ type: 'destroy', id, reason }, { type: 'event', event: { type: 'rejected', client: c.client, reason } });
    this.forget(id, c);
  }

  /** Drops every trace of a connection, in whichever phase it is. */
  private forget(id: TstunConnectionId, c: { readonly source: string }): void {
    const w = this.waiting.get(id);
    if (w) {
      this.waiting.delete(id);
      if (this.byKey.get(w.keyHex) === id) this.byKey.delete(w.keyHex);
    }
    this.collecting.delete(id);
    this.closing.delete(id);
    const n = (this.perSource.get(c.source) ?? 1) - 1;
    if (n > 0) this.perSource.set(c.source, n);
    else this.perSource.delete(c.source);
    this.updateGauges();
  }

  /** Gauges come from the tables, so a table that failed to shrink shows in the stats (and tests). */
  private updateGauges(): void {
    this.stats.open = this.collecting.size + this.waiting.size + this.closing.size;
    this.stats.waiting = this.byKey.size;
    this.stats.sources = this.perSource.size;
  }

  private isOpen(id: TstunConnectionId): boolean {
    return this.collecting.has(id) || this.waiting.has(id) || this.closing.has(id);
  }
}

/**
 * The answer: `"<ip> <port>"` in ASCII, no line ending (punchhole's server writes
 * `' '.join(sa)` and nothing else; its client splits on whitespace, so it would tolerate one, but
 * other clients written against punchhole's server may not). At most 39 + 1 + 5 = 45 bytes.
 */
export function encodeTstunAnswer(peer: Endpoint): Uint8Array {
  return new TextEncoder().encode(`${peer.address} ${peer.port}`);
}

/**
 * The unit for per-source limits: the IPv4 address, or the /64 of an IPv6 address, because one IPv6
 * subscriber is usually handed a whole /64 and limiting single addresses would limit nothing.
 */
function sourceOf(address: string): string {
  const bytes = addressToBytes(address);
  return bytes?.length === 16 ? `${hexOf(bytes.subarray(0, 8))}/64` : address;
}

function hexOf(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}
