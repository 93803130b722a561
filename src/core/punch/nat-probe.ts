/**
 * The NAT probe: every connect's cheap classification of its own NAT, as part of registration. Is our public mapping
 * independent of the destination (RFC 4787 section 4.1), and does the NAT keep our port? One padded Binding request
 * to the server's second port, from the socket that registered, retransmitted like any STUN transaction; the
 * mapping it reports and the one the server's main port saw are classified by the one NAT classification module
 * (src/core/nat/classify.ts, which `burrow netcheck` uses for the full RFC 5780 test). The findings travel to the
 * partner in NAT-MAPPING (mapping and port allocation).
 */
import type { Endpoint } from '../../codec/address.js';
import { encodeMessage, type NatMapping, type PortAllocation } from '../../codec/messages.js';
import { classifyAllocation, classifyMapping, isHard, wireMapping } from '../nat/classify.js';
import type { Backoff } from '../backoff.js';
import type { SendAction, TransportId } from '../machine.js';
import { bindingRequest } from '../stun-client.js';
import { StunTransaction } from '../stun-transaction.js';

/** Binding requests the probe sends at most. */
const MAX_SENDS = 4;

export class NatProbe {
  private transaction: StunTransaction | undefined;
  private finding: NatMapping = 'unknown';
  private allocationFinding: PortAllocation = 'unknown';

  constructor(
    private readonly server: Endpoint,
    private readonly transport: TransportId,
    private readonly backoff: Backoff,
    private readonly newTxid: () => Uint8Array,
    /** The registering socket's own address (its port tells whether the NAT preserves ports). */
    private readonly local?: Endpoint,
  ) {}

  get mapping(): NatMapping {
    return this.finding;
  }

  /** How the NAT allocated our public ports, as far as two mappings tell. */
  get allocation(): PortAllocation {
    return this.allocationFinding;
  }

  /**
   * Starts the test once the server names its second port (OTHER-ADDRESS). Only the port is taken from it: the
   * server's IP is the one we already reach it by. Once per attempt.
   */
  start(alternate: Endpoint, now: number): SendAction | undefined {
    if (this.transaction || alternate.port === this.server.port) return undefined;
    const txid = this.newTxid();
    this.transaction = new StunTransaction({
      txid,
      transport: this.transport,
      to: { address: this.server.address, port: alternate.port },
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
    const behaviour = classifyMapping({ primary: mainMapped, otherPort: reported });
    this.finding = wireMapping(behaviour);
    if (this.local) {
      const samples = [{ local: this.local, mapped: mainMapped }, ...(isHard(behaviour) ? [{ local: this.local, mapped: reported }] : [])];
      this.allocationFinding = classifyAllocation(samples);
    }
    return this.finding;
  }

  cancel(): void {
    this.transaction?.cancel();
  }
}

