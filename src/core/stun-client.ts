/**
 * A STUN Binding client as a sans-IO machine (RFC 8489 section 6.2.1 retransmissions, shortened for an
 * interactive tool: 250 ms doubling to 2 s, until the deadline). Used by `burrow stun`; works against any STUN
 * server. Runs under the generic driver (src/node/driver.ts).
 */
import { endpointKey, type Endpoint } from '../codec/address.js';
import { decodeMessage, encodeMessage, type BindingRequest } from '../codec/messages.js';
import { TRANSACTION_ID_LENGTH } from '../codec/stun.js';
import { BurrowError } from '../errors.js';
import { Backoff } from './backoff.js';
import type { ClientMachine, DoneAction, DriverInput, FailAction, SendAction, TransportId } from './machine.js';
import { StunTransaction } from './stun-transaction.js';

/**
 * A Binding request padded with a SOFTWARE attribute to 44 bytes, the size of the longest plain answer
 * (XOR-MAPPED-ADDRESS for IPv6), so that answering it never amplifies.
 */
export function bindingRequest(txid: Uint8Array): BindingRequest {
  return { kind: 'binding', txid, fingerprint: false, software: 'burrow (padded to answer)' .padEnd(20, ' ').slice(0, 20) };
}

/** The Binding retransmission schedule of `burrow stun`. */
export const STUN_CLIENT_BACKOFF = Backoff.exponential(250, 2000);

export interface StunClientConfig {
  readonly server: Endpoint;
  /** The transport the requests leave from. */
  readonly transport: TransportId;
  readonly timeoutMs: number;
  readonly randomBytes: (n: number) => Uint8Array;
}

export type StunClientInput = DriverInput;
export type StunClientAction = SendAction | DoneAction<Endpoint> | FailAction;

export class StunClientMachine implements ClientMachine<StunClientInput, StunClientAction> {
  private readonly transaction: StunTransaction;
  private deadline = 0;
  private finished = false;

  constructor(private readonly config: StunClientConfig) {
    const txid = config.randomBytes(TRANSACTION_ID_LENGTH);
    this.transaction = new StunTransaction({
      txid,
      transport: config.transport,
      to: config.server,
      request: encodeMessage(bindingRequest(txid)),
      backoff: STUN_CLIENT_BACKOFF,
    });
  }

  get isFinished(): boolean {
    return this.finished;
  }

  /** Requests sent so far. */
  get attempts(): number {
    return this.transaction.sends;
  }

  nextTimeoutAt(): number | undefined {
    if (this.finished) return undefined;
    const retransmit = this.transaction.nextTimeoutAt();
    return retransmit === undefined ? this.deadline : Math.min(retransmit, this.deadline);
  }

  handle(input: StunClientInput): StunClientAction[] {
    if (this.finished) return [];
    switch (input.type) {
      case 'start':
        this.deadline = input.now + this.config.timeoutMs;
        return [this.transaction.start(input.now)];
      case 'timer': {
        if (input.now >= this.deadline) return this.fail(BurrowError.serverUnreachable(endpointKey(this.config.server), this.attempts, this.config.timeoutMs / 1000));
        const due = this.transaction.onTimer(input.now);
        return due !== undefined && due !== 'timed-out' ? [due] : [];
      }
      case 'datagram':
        return this.onDatagram(input.transport, input.from, input.data);
      case 'transport-closed':
        return [];
      case 'abort':
        return this.fail(BurrowError.aborted());
      default: {
        const never: never = input;
        throw new Error(`unknown input ${String(never)}`);
      }
    }
  }

  private onDatagram(transport: TransportId, from: Endpoint, data: Uint8Array): StunClientAction[] {
    const d = decodeMessage(data);
    if (!d.ok || !this.transaction.matches(transport, from, d.msg.txid)) return [];
    if (d.msg.kind === 'binding-ok') {
      this.transaction.answered();
      this.finished = true;
      return [{ type: 'done', result: d.msg.mapped }];
    }
    if (d.msg.kind === 'error') {
      this.transaction.answered();
      const server = endpointKey(this.config.server);
      return this.fail(new BurrowError('SERVER_UNREACHABLE', `the STUN server at ${server} answered with an error (${d.msg.code} ${d.msg.reason}); it may not serve Binding requests on this port.`));
    }
    return [];
  }

  private fail(error: BurrowError): StunClientAction[] {
    this.finished = true;
    this.transaction.cancel();
    return [{ type: 'fail', error }];
  }
}
