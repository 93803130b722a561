/**
 * One STUN client transaction (RFC 8489 section 6.2.1), pure: the same request (same transaction id, same bytes)
 * is retransmitted on a back-off until an answer matches or the tries run out. An answer matches only if it carries
 * the transaction id and comes from the transport and address the request went to (RFC 8445 section 7.2.5.2.1:
 * an answer from elsewhere says nothing about this path).
 *
 * The caller feeds it the time and forwards what it returns; it owns no timer.
 */
import { sameEndpoint, type Endpoint } from '../codec/address.js';
import type { Backoff } from './backoff.js';
import type { SendAction, TransportId } from './machine.js';

export interface StunTransactionOptions {
  readonly txid: Uint8Array;
  readonly transport: TransportId;
  readonly to: Endpoint;
  /** The encoded request, sent unchanged every time. */
  readonly request: Uint8Array;
  readonly backoff: Backoff;
  /** Requests to send at most; after the last, one more back-off step passes before it times out. Default: no limit. */
  readonly maxSends?: number;
}

export type StunTransactionState = 'idle' | 'pending' | 'answered' | 'timed-out';

export class StunTransaction {
  private nextAt = 0;
  private sendsSoFar = 0;
  private current: StunTransactionState = 'idle';

  constructor(private readonly options: StunTransactionOptions) {}

  get state(): StunTransactionState {
    return this.current;
  }

  /** Requests sent so far. */
  get sends(): number {
    return this.sendsSoFar;
  }

  get txid(): Uint8Array {
    return this.options.txid;
  }

  /** Sends the first request. */
  start(now: number): SendAction {
    this.current = 'pending';
    return this.transmit(now);
  }

  /** When the next retransmission (or the timeout) is due, while pending. */
  nextTimeoutAt(): number | undefined {
    return this.current === 'pending' ? this.nextAt : undefined;
  }

  /** A retransmission when one is due, 'timed-out' once the tries are spent, else nothing. */
  onTimer(now: number): SendAction | 'timed-out' | undefined {
    if (this.current !== 'pending' || now < this.nextAt) return undefined;
    if (this.options.maxSends !== undefined && this.sendsSoFar >= this.options.maxSends) {
      this.current = 'timed-out';
      return 'timed-out';
    }
    return this.transmit(now);
  }

  /** Whether an answer with `txid` from `from` on `transport` belongs to this transaction (while pending). */
  matches(transport: TransportId, from: Endpoint, txid: Uint8Array): boolean {
    return this.current === 'pending' && transport === this.options.transport && sameEndpoint(from, this.options.to) && Buffer.from(txid).equals(this.options.txid);
  }

  /** Marks the transaction answered: no more retransmissions. */
  answered(): void {
    this.current = 'answered';
  }

  /** Stops retransmitting without an answer (the caller gave up). */
  cancel(): void {
    if (this.current === 'pending') this.current = 'timed-out';
  }

  private transmit(now: number): SendAction {
    this.sendsSoFar++;
    this.nextAt = this.options.backoff.nextAt(now, this.sendsSoFar);
    return { type: 'send', transport: this.options.transport, to: this.options.to, data: this.options.request };
  }
}
