/**
 * Where registrations live. The server core talks to this interface only, so a shared store (several
 * rendezvous servers over Redis, see docs/protocol.md "Scaling out") can replace the in-memory one.
 */
import type { Endpoint } from '../codec/address.js';
import type { Candidate, NatMapping } from '../codec/messages.js';

export interface Registration {
  readonly network: string;
  readonly name: string;
  readonly target: string;
  /** Hex of the 16-byte session nonce. */
  readonly nonce: string;
  readonly mapped: Endpoint;
  readonly candidates: readonly Candidate[];
  readonly mapping: NatMapping;
  readonly expiresAt: number;
  /** For TCP registrations: the server's connection id, down which introductions are pushed. */
  readonly conn?: number;
}

export interface RegistrationStore {
  get(network: string, name: string, now: number): Registration | undefined;
  /** Inserts or refreshes; may evict the least recently refreshed entry to stay within bounds. */
  put(reg: Registration): { evicted: number };
  delete(network: string, name: string): void;
  /** Removes expired entries; returns how many. */
  sweep(now: number): number;
  readonly size: number;
}

/**
 * In-memory store: a Map kept in refresh order (a refresh moves an entry to the end), so both expiry
 * sweeps and evictions of the oldest entry start at the front and cost O(removed).
 */
export class MemoryStore implements RegistrationStore {
  private readonly entries = new Map<string, Registration>();

  constructor(private readonly maxEntries: number) {}

  get size(): number {
    return this.entries.size;
  }

  get(network: string, name: string, now: number): Registration | undefined {
    const r = this.entries.get(`${network}/${name}`);
    return r && r.expiresAt > now ? r : undefined;
  }

  put(reg: Registration): { evicted: number } {
    const key = `${reg.network}/${reg.name}`;
    this.entries.delete(key);
    let evicted = 0;
    while (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
      evicted++;
    }
    this.entries.set(key, reg);
    return { evicted };
  }

  delete(network: string, name: string): void {
    this.entries.delete(`${network}/${name}`);
  }

  sweep(now: number): number {
    let removed = 0;
    for (const [key, reg] of this.entries) {
      if (reg.expiresAt > now) break;
      this.entries.delete(key);
      removed++;
    }
    return removed;
  }
}
