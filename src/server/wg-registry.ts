/**
 * The WireGuard registry: what every server of a deployment knows about each interface — the endpoint its
 * WireGuard handshakes proved (written by the responder's server, src/server/wg.ts) and the facts its `burrow wg`
 * announced with a valid WG-PROOF (LAN addresses, listen port, NAT mapping). WG-SYNC is answered from it on any
 * server. Behind an interface so that a shared store can hold it: the in-memory `MemoryWgRegistry` serves one
 * process and, over IPC, the workers of a multi-process server; a Redis registry keeps one hash per interface
 * with an expiry.
 */
import type { Endpoint } from '../codec/address.js';
import type { WgPeerInfo } from '../codec/wg-messages.js';
import type { Awaitable, WgFacts } from './types.js';

export interface WgRegistry {
  /** Stores what an interface announced about itself (its WG-PROOF checked). */
  announce(network: string, key: Uint8Array, facts: WgFacts, now: number): Awaitable<undefined>;
  /** Records an endpoint proven by an authenticated WireGuard packet (a confirmed handshake, a keepalive). */
  setEndpoint(network: string, key: Uint8Array, endpoint: Endpoint, now: number): Awaitable<undefined>;
  /** What is known about each key, in order, as WG-SYNC reports it. */
  lookup(network: string, keys: readonly Uint8Array[], now: number): Awaitable<readonly WgPeerInfo[]>;
}

interface InterfaceRecord {
  endpoint: Endpoint | undefined;
  confirmedAt: number;
  announcedAt: number | undefined;
  listenPort: number;
  hosts: readonly Endpoint[];
  mapping: WgFacts['mapping'];
  touchedAt: number;
}

/**
 * In memory: a Map kept in the order records were last touched, so expiry and eviction (oldest first) look at the
 * front only. Answers at once.
 */
export class MemoryWgRegistry implements WgRegistry {
  private readonly records = new Map<string, InterfaceRecord>();

  constructor(
    private readonly maxInterfaces: number,
    /** A record untouched (no endpoint, no announcement) for this long is forgotten. */
    private readonly lifetimeMs: number,
  ) {}

  get size(): number {
    return this.records.size;
  }

  announce(network: string, key: Uint8Array, facts: WgFacts, now: number): undefined {
    const r = this.touch(network, key, now);
    r.announcedAt = now;
    r.listenPort = facts.listenPort;
    r.hosts = facts.hosts;
    r.mapping = facts.mapping;
    return undefined;
  }

  setEndpoint(network: string, key: Uint8Array, endpoint: Endpoint, now: number): undefined {
    const r = this.touch(network, key, now);
    r.endpoint = endpoint;
    r.confirmedAt = now;
    return undefined;
  }

  lookup(network: string, keys: readonly Uint8Array[], now: number): WgPeerInfo[] {
    return keys.map((key) => {
      const record = this.records.get(recordKey(network, key));
      const live = record && now - record.touchedAt < this.lifetimeMs ? record : undefined;
      const endpointLive = live?.endpoint && now - live.confirmedAt < this.lifetimeMs;
      return {
        key: new Uint8Array(key),
        announced: live?.announcedAt !== undefined && now - live.announcedAt < this.lifetimeMs,
        endpoint: endpointLive ? live.endpoint : undefined,
        ageSeconds: endpointLive ? Math.floor((now - live.confirmedAt) / 1000) : 0,
        listenPort: live?.listenPort ?? 0,
        hosts: live?.hosts ?? [],
        mapping: live?.mapping ?? 'unknown',
      };
    });
  }

  /** Forgets records untouched for a lifetime; returns how many. */
  sweep(now: number): number {
    let removed = 0;
    for (const [id, record] of this.records) {
      if (now - record.touchedAt < this.lifetimeMs) break;
      this.records.delete(id);
      removed++;
    }
    return removed;
  }

  private touch(network: string, key: Uint8Array, now: number): InterfaceRecord {
    const id = recordKey(network, key);
    let record = this.records.get(id);
    if (record) {
      this.records.delete(id); // re-inserted at the end: least recently touched first
    } else {
      while (this.records.size >= this.maxInterfaces) {
        const oldest = this.records.keys().next();
        if (oldest.done) break;
        this.records.delete(oldest.value);
      }
      record = { endpoint: undefined, confirmedAt: 0, announcedAt: undefined, listenPort: 0, hosts: [], mapping: 'unknown', touchedAt: now };
    }
    record.touchedAt = now;
    this.records.set(id, record);
    return record;
  }
}

function recordKey(network: string, key: Uint8Array): string {
  return `${network}:${Buffer.from(key).toString('base64')}`;
}
