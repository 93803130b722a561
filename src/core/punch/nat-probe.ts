/**
 * The NAT probe: every connect's cheap classification of its own NAT, as part of registration. Is our public mapping
 * independent of the destination (RFC 4787 section 4.1), and does the NAT keep our port? One padded Binding request
 * to the server's second port, from the socket that registered, retransmitted like any STUN transaction; the
 * mapping it reports and the one the server's main port saw are classified by the one NAT classification module
 * (src/core/nat/classify.ts, which `burrow netcheck` uses for the full RFC 5780 test). The findings travel to the
 * partner in NAT-MAPPING (mapping and port allocation).
 */
import type { Endpoint } from '../../codec/address.js';
import { encodeMessage, type NatFiltering, type NatMapping, type PortAllocation } from '../../codec/messages.js';
import { encodeTestRequest, rfc5780AnswerLength } from '../../codec/rfc5780.js';
import { classifyAllocation, classifyFiltering, classifyMapping, isHard, wireMapping } from '../nat/classify.js';
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
  private filteringFinding: NatFiltering = 'unknown';
  /** The server's other IP and port, when its Binding answer named one (RFC 5780): filtering can be tested. */
  private other: Endpoint | undefined;
  private filterTx: StunTransaction | undefined;
  private filterKind: 'ip-port' | 'port' = 'ip-port';

  constructor(
    /** The server registered with now (it may change: failover). */
    private readonly serverNow: () => Endpoint,
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

  /** How the NAT filters (RFC 5780 section 4.4), once tested against a server with a second IP. */
  get filtering(): NatFiltering {
    return this.filteringFinding;
  }

  /**
   * Starts the filtering test once the mapping is known and the server has a second IP: a request from the
   * registering socket asking for the answer from the other IP and port (answered: endpoint-independent filtering),
   * then, if that never comes, from the other port (answered: address-dependent; else address-and-port-dependent).
   * Padded to the answer's length, like every request of Burrow's.
   */
  startFiltering(now: number): SendAction | undefined {
    if (!this.other || this.filterTx || this.finding === 'unknown') return undefined;
    return this.filterRequest('ip-port', now);
  }

  private filterRequest(kind: 'ip-port' | 'port', now: number): SendAction {
    const txid = this.newTxid();
    this.filterKind = kind;
    const server = this.serverNow();
    const family = server.address.includes(':') ? 6 : 4;
    this.filterTx = new StunTransaction({
      txid,
      transport: this.transport,
      to: server,
      request: encodeTestRequest(txid, { change: { ip: kind === 'ip-port', port: true }, padTo: rfc5780AnswerLength(family) }),
      backoff: this.backoff,
      maxSends: MAX_SENDS,
    });
    return this.filterTx.start(now);
  }

  /** An answer to the filtering test (from whichever address it was asked to come from), or 'unmatched'. */
  handleFilter(transport: TransportId, txid: Uint8Array): NatFiltering | 'unmatched' {
    const tx = this.filterTx;
    if (!tx || tx.state !== 'pending' || transport !== this.transport || !Buffer.from(txid).equals(tx.txid)) return 'unmatched';
    tx.answered();
    this.filteringFinding = classifyFiltering(this.filterKind === 'ip-port' ? { otherIpPort: true } : { otherIpPort: false, otherPort: true });
    return this.filteringFinding;
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
    const a = this.transaction?.nextTimeoutAt();
    const b = this.filterTx?.nextTimeoutAt();
    return a === undefined ? b : b === undefined ? a : Math.min(a, b);
  }

  /** Retransmissions due, and the filtering finding when its last test ran out unanswered. */
  onTimer(now: number): { sends: SendAction[]; filtering: NatFiltering | undefined } {
    const sends: SendAction[] = [];
    let filtering: NatFiltering | undefined;
    const due = this.transaction?.onTimer(now);
    if (due !== undefined && due !== 'timed-out') sends.push(due);
    const filter = this.filterTx?.onTimer(now);
    if (filter === 'timed-out') {
      if (this.filterKind === 'ip-port') sends.push(this.filterRequest('port', now));
      else filtering = this.filteringFinding = classifyFiltering({ otherIpPort: false, otherPort: false });
    } else if (filter !== undefined) {
      sends.push(filter);
    }
    return { sends, filtering };
  }

  /**
   * A Binding answer: 'unmatched' if it answers nothing of ours, else the finding (undefined while our main mapping
   * is unknown or once the mapping was settled).
   */
  handle(transport: TransportId, from: Endpoint, txid: Uint8Array, reported: Endpoint, mainMapped: Endpoint | undefined, other?: Endpoint): NatMapping | 'unmatched' | undefined {
    if (!this.transaction?.matches(transport, from, txid)) return 'unmatched';
    this.transaction.answered();
    const server = this.serverNow();
    if (other && other.address !== server.address && other.address.includes(':') === server.address.includes(':')) this.other = other;
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
    this.filterTx?.cancel();
  }
}

