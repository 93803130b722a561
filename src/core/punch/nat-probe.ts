/**
 * The NAT probe: is our public mapping independent of the destination (RFC 4787 section 4.1)? One padded Binding
 * request to the server's second port, from the socket that registered, retransmitted like any STUN transaction;
 * the mapping it reports is compared with the one the server's main port saw. The home of RFC 5780 behaviour
 * discovery (filtering, a second IP) when the server offers it.
 */
import { sameEndpoint, type Endpoint } from '../../codec/address.js';
import { encodeMessage, type NatMapping } from '../../codec/messages.js';
import type { Backoff } from '../backoff.js';
import type { SendAction, TransportId } from '../machine.js';
import { bindingRequest } from '../stun-client.js';
import { StunTransaction } from '../stun-transaction.js';

/** Binding requests the probe sends at most. */
const MAX_SENDS = 4;

export class NatProbe {
  private transaction: StunTransaction | undefined;
  private finding: NatMapping = 'unknown';

  constructor(
    /** The server registered with now (it may change: failover). */
    private readonly serverNow: () => Endpoint,
    private readonly transport: TransportId,
    private readonly backoff: Backoff,
    private readonly newTxid: () => Uint8Array,
  ) {}

  get mapping(): NatMapping {
    return this.finding;
  }

  /**
   * Starts the test once the server names its second port (OTHER-ADDRESS). Only the port is taken from it: the
   * server's IP is the one we already reach it by. Once per attempt.
   */
  start(alternate: Endpoint, now: number): SendAction | undefined {
    const server = this.serverNow();
    if (this.transaction || alternate.port === server.port) return undefined;
    const txid = this.newTxid();
    this.transaction = new StunTransaction({
      txid,
      transport: this.transport,
      to: { address: server.address, port: alternate.port },
      request: encodeMessage(bindingRequest(txid)),
      backoff: this.backoff,
      maxSends: MAX_SENDS,
    });
    return this.transaction.start(now);
  }

  nextTimeoutAt(): number | undefined {
    return this.transaction?.nextTimeoutAt();
  }

  onTimer(now: number): SendAction | undefined {
    const due = this.transaction?.onTimer(now);
    return due === 'timed-out' ? undefined : due;
  }

  /**
   * A Binding answer: 'unmatched' if it answers nothing of ours, else the finding (undefined while our main mapping
   * is unknown or once the mapping was settled).
   */
  handle(transport: TransportId, from: Endpoint, txid: Uint8Array, reported: Endpoint, mainMapped: Endpoint | undefined): NatMapping | 'unmatched' | undefined {
    if (!this.transaction?.matches(transport, from, txid)) return 'unmatched';
    this.transaction.answered();
    if (!mainMapped || this.finding !== 'unknown') return undefined;
    this.finding = sameEndpoint(reported, mainMapped) ? 'endpoint-independent' : 'endpoint-dependent';
    return this.finding;
  }

  cancel(): void {
    this.transaction?.cancel();
  }
}

