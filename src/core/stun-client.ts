/**
 * A STUN Binding client as a sans-IO machine (RFC 8489 section 6.2.1 retransmissions, shortened for an
 * interactive tool). Used by `burrow stun`; works against any STUN server.
 */
import type { Endpoint } from '../codec/address.js';
import { decodeMessage, encodeMessage, type BindingRequest } from '../codec/messages.js';
import { TRANSACTION_ID_LENGTH } from '../codec/stun.js';

/**
 * A Binding request padded with a SOFTWARE attribute to 44 bytes, the size of the longest plain answer
 * (XOR-MAPPED-ADDRESS for IPv6), so that answering it never amplifies.
 */
export function bindingRequest(txid: Uint8Array): BindingRequest {
  return { kind: 'binding', txid, fingerprint: false, software: 'burrow (padded to answer)' .padEnd(20, ' ').slice(0, 20) };
}

export type StunClientAction =
  | { readonly type: 'send'; readonly data: Uint8Array }
  | { readonly type: 'done'; readonly mapped: Endpoint }
  | { readonly type: 'fail'; readonly reason: 'timeout' | 'error-response'; readonly detail: string };

export class StunClientMachine {
  private readonly txid: Uint8Array;
  private nextAt = 0;
  private interval = 250;
  private deadline = 0;
  private finished = false;
  attempts = 0;

  constructor(
    randomBytes: (n: number) => Uint8Array,
    private readonly server: Endpoint,
    private readonly timeoutMs: number,
  ) {
    this.txid = randomBytes(TRANSACTION_ID_LENGTH);
  }

  nextTimeoutAt(): number | undefined {
    return this.finished ? undefined : Math.min(this.nextAt, this.deadline);
  }

  start(now: number): StunClientAction[] {
    this.deadline = now + this.timeoutMs;
    return this.transmit(now);
  }

  timer(now: number): StunClientAction[] {
    if (this.finished) return [];
    if (now >= this.deadline) {
      this.finished = true;
      return [{ type: 'fail', reason: 'timeout', detail: `no answer after ${this.attempts} requests` }];
    }
    return now >= this.nextAt ? this.transmit(now) : [];
  }

  datagram(from: Endpoint, data: Uint8Array): StunClientAction[] {
    if (this.finished || from.port !== this.server.port || from.address !== this.server.address) return [];
    const d = decodeMessage(data);
    if (!d.ok || !Buffer.from(d.msg.txid).equals(this.txid)) return [];
    if (d.msg.kind === 'binding-ok') {
      this.finished = true;
      return [{ type: 'done', mapped: d.msg.mapped }];
    }
    if (d.msg.kind === 'error') {
      this.finished = true;
      return [{ type: 'fail', reason: 'error-response', detail: `${d.msg.code} ${d.msg.reason}` }];
    }
    return [];
  }

  private transmit(now: number): StunClientAction[] {
    this.attempts++;
    this.nextAt = now + this.interval;
    this.interval = Math.min(this.interval * 2, 2000);
    return [{ type: 'send', data: encodeMessage(bindingRequest(this.txid)) }];
  }
}
