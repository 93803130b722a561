/**
 * Outstanding requests and the set of probes already answered, both bounded.
 *
 * A response is accepted only for an outstanding transaction, only from the transport and address the request went
 * to (RFC 8445 section 7.2.5.2.1), and only once. A probe request is answered once per transaction id: a replayed or
 * raced copy is dropped.
 */
import { sameEndpoint, type Endpoint } from '../../codec/address.js';
import type { TransportId } from '../machine.js';

/** 'birthday': a probe to a guessed port of a hard partner (birthday.ts), answered from wherever it hit. */
export type TransactionPurpose = 'register' | 'probe' | 'birthday';

export interface Outstanding {
  readonly transport: TransportId;
  readonly to: Endpoint;
  readonly purpose: TransactionPurpose;
  /** For probes: the flags it carried (NOMINATE, ACCEPTED). */
  readonly flags: number;
  /** When it was sent (REGISTER: whether its answer can know about a partner we heard of since). */
  readonly sentAt?: number;
}

/** Upper bound on outstanding transactions: one per retransmission over the timeout, trimmed oldest first. */
const MAX_OUTSTANDING = 4096;
/** Upper bound on remembered probe transaction ids. */
const MAX_SEEN_PROBES = 4096;

export function txidKey(txid: Uint8Array): string {
  return Buffer.from(txid).toString('hex');
}

export class TransactionTable {
  private readonly open = new Map<string, Outstanding>();

  track(txid: Uint8Array, o: Outstanding): void {
    this.open.set(txidKey(txid), o);
    if (this.open.size > MAX_OUTSTANDING) {
      const first = this.open.keys().next();
      if (!first.done) this.open.delete(first.value);
    }
  }

  /** Takes an outstanding transaction if the answer comes from where the request went, on the same transport. */
  claim(txid: Uint8Array, transport: TransportId, from: Endpoint, purpose: TransactionPurpose): Outstanding | undefined {
    const id = txidKey(txid);
    const o = this.open.get(id);
    if (!o || o.purpose !== purpose || o.transport !== transport || !sameEndpoint(o.to, from)) return undefined;
    this.open.delete(id);
    return o;
  }

  /** Forgets every transaction sent on `transport` (it is gone). */
  dropTransport(transport: TransportId): void {
    for (const [k, v] of this.open) if (v.transport === transport) this.open.delete(k);
  }

  clear(): void {
    this.open.clear();
  }
}

/** Probe transaction ids already answered (so each is answered once), oldest forgotten first. */
export class SeenProbes {
  private readonly seen = new Set<string>();

  /** Remembers `txid`; false if it was seen before. */
  firstTime(txid: Uint8Array): boolean {
    const id = txidKey(txid);
    if (this.seen.has(id)) return false;
    this.seen.add(id);
    if (this.seen.size > MAX_SEEN_PROBES) {
      const first = this.seen.values().next();
      if (!first.done) this.seen.delete(first.value);
    }
    return true;
  }

  clear(): void {
    this.seen.clear();
  }
}
