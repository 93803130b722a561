/**
 * Why a punch failed, as data: the stage it reached, both NAT findings, what got through, and every pair's state.
 * The library error carries it (`error.details`, read back with `punchFailureOf`); the prose a person reads comes
 * from `describeNoPath`, the one place that words a diagnosis (so that it can move to the CLI as it is).
 */
import type { NatFiltering, NatMapping, PortAllocation } from '../../codec/messages.js';
import { factsFromWire, pairPath } from '../nat/classify.js';
import { BurrowError } from '../../errors.js';
import type { PairState } from './checklist.js';
import type { PunchPath } from './types.js';

/**
 * A partner that gave up at its own deadline without a path (its REPORT `failed`) lets the other side blame the network
 * only if both checked together at least this long; after a shorter overlap it simply left (a direct path usually
 * validates within a second or two), and the other side says so (PEER_LEFT).
 */
export const MIN_CHECKING_FOR_DIAGNOSIS_MS = 3000;

/** How far the attempt got: never answered by the server, never introduced to the partner, or no path to it. */
export type FailureStage = 'no-server' | 'no-partner' | 'no-path';

export type PairReport = {
  readonly transport: string;
  readonly remote: string;
  readonly remoteKind: string;
  readonly path: PunchPath;
  readonly state: PairState;
  readonly checks: number;
};

/** What the TCP punch saw of its simultaneous-open attempts. */
export type TcpAttemptStats = {
  readonly attempts: number;
  readonly refused: number;
  readonly timedOut: number;
  readonly handshakesFailed: number;
  readonly lastError: string;
};

/**
 * What became of the relay: turned off by the caller ('disabled'), none offered by the server ('none-offered'), its
 * allocation failed or was lost ('failed'; `server` names it, `code` is the TURN error code or 0 for no answer), or
 * still being allocated at the deadline ('pending').
 */
export type RelayReport = {
  readonly state: 'disabled' | 'none-offered' | 'failed' | 'pending';
  readonly server?: string;
  readonly code?: number;
  readonly reason: string;
  /** Only relayed paths were allowed: the direct checks say nothing. */
  readonly only?: boolean;
};

/** Plain JSON values throughout, so that it can be an error's `details` as it is. */
export type PunchFailure = {
  readonly kind: 'punch-failure';
  readonly stage: FailureStage;
  /** The UDP punch (probes and pairs) or the TCP simultaneous open (attempt counts). */
  readonly transport: 'udp' | 'tcp';
  /** The rendezvous server, `HOST:PORT`. */
  readonly server: string;
  readonly peer: string;
  /** The timeout, in seconds. */
  readonly seconds: number;
  readonly registerAttempts: number;
  /**
   * Our NAT's mapping behaviour as we measured it at registration, and the partner's as it reported it (NAT-MAPPING,
   * forwarded in the introduction); with the port allocation of each when known.
   */
  readonly nat: {
    readonly ours: NatMapping;
    readonly theirs: NatMapping;
    readonly oursAllocation?: PortAllocation;
    readonly theirsAllocation?: PortAllocation;
    readonly oursFiltering?: NatFiltering;
    readonly theirsFiltering?: NatFiltering;
  };
  readonly probes: { readonly sent: number; readonly heard: number; readonly answersHeard: number; readonly candidates: number };
  readonly pairs: readonly PairReport[];
  /** Birthday probing this side did (src/core/punch/birthday.ts): its role, attempts, and probes sent or sockets opened. */
  readonly birthday?: { readonly role: 'easy' | 'hard'; readonly attempts: number; readonly count: number };
  readonly tcp?: TcpAttemptStats;
  /** Set by a caller that tried (or was told not to try) a relay. */
  readonly relay?: RelayReport;
};

/** The structured reason of a failed punch, if `error` carries one (in its `details`). */
export function punchFailureOf(error: unknown): PunchFailure | undefined {
  if (!(error instanceof BurrowError)) return undefined;
  return error.details.kind === 'punch-failure' ? (error.details as unknown as PunchFailure) : undefined;
}

/** The library error for a failure, with the failure in its `details` (besides each factory's own keys). */
export function punchFailureError(f: PunchFailure): BurrowError {
  switch (f.stage) {
    case 'no-server':
      return BurrowError.serverUnreachable(f.server, f.registerAttempts, f.seconds, f);
    case 'no-partner':
      return BurrowError.peerNotFound(f.peer, f.server, f.seconds, f);
    case 'no-path':
      return BurrowError.noPath(f.peer, f.seconds, describeNoPath(f), f);
    default: {
      const never: never = f.stage;
      throw new Error(`unknown stage ${String(never)}`);
    }
  }
}

/** Says why there is no relayed path either. */
export function describeRelay(r: RelayReport): string {
  switch (r.state) {
    case 'disabled':
      return 'relaying was turned off for this attempt';
    case 'none-offered':
      return r.reason;
    case 'failed':
      return r.reason;
    case 'pending':
      return `the relay at ${r.server ?? 'the server'} had not answered by the deadline`;
    default: {
      const never: never = r.state;
      throw new Error(`unknown relay state ${String(never)}`);
    }
  }
}

/** What birthday probing did, for the diagnosis. */
function birthdayNote(f: PunchFailure): string {
  const b = f.birthday;
  if (!b) return '';
  const attempts = b.attempts === 1 ? 'one attempt' : `${b.attempts} attempts`;
  return b.role === 'easy'
    ? ` Birthday probing found no open port: ${attempts}, ${b.count} probes sent.`
    : ` Birthday probing found no open port: ${attempts}, ${b.count} sockets opened, no probe arrived.`;
}

/** Explains a failed check phase, and the relay's failure when one was tried. */
export function describeNoPath(f: PunchFailure): string {
  if (f.relay?.only === true) return `only relayed paths were allowed, and there is no relay: ${describeRelay(f.relay)}.`;
  const direct = describeDirect(f);
  return f.relay ? `${direct} No relay either: ${describeRelay(f.relay)}.` : direct;
}

/** Explains a failed check phase from what both sides observed about their NATs and what got through. */
function describeDirect(f: PunchFailure): string {
  if (f.tcp) {
    const s = f.tcp;
    return `${s.attempts} TCP connection attempts failed (${s.refused} refused or reset, ${s.timedOut} unanswered, ` +
      `${s.handshakesFailed} failed handshakes${s.lastError ? `; last: ${s.lastError}` : ''}). Likely causes: a NAT that allocates a new port per destination ` +
      '(symmetric), or one that answers unsolicited SYNs with a reset; try `burrow punch` (UDP), which works through ' +
      'more NATs, or a relay.';
  }
  const mine = f.nat.ours;
  const theirs = f.nat.theirs;
  const traffic =
    `(sent ${f.probes.sent} probes to ${f.probes.candidates} candidate addresses; ` +
    `heard ${f.probes.heard} probes and ${f.probes.answersHeard} answers from the peer)`;
  const relay = 'a relay or port prediction is needed for this pair.';
  // What the two NATs' classification says this pair needs (src/core/nat/classify.ts).
  const path = pairPath(factsFromWire(mine, f.nat.oursAllocation, f.nat.oursFiltering), factsFromWire(theirs, f.nat.theirsAllocation, f.nat.theirsFiltering));
  const allocation = (who: string, a: PortAllocation | undefined, bothHard = false): string =>
    a === 'random' ? ` ${who} NAT picks those ports at random${bothHard ? '' : ', so only birthday probing or a relay can bridge it'}.`
      : a === 'sequential' ? ` ${who} NAT allocates those ports in sequence, so they are predictable.`
        : '';
  if (mine === 'endpoint-dependent' && theirs === 'endpoint-dependent') {
    return `both sides' NATs allocate a new public port for every destination (symmetric NAT), so neither side can learn ` +
      `the port the other will use; ${relay}${allocation('your', f.nat.oursAllocation, true)}${allocation("the peer's", f.nat.theirsAllocation, true)} ${traffic}`;
  }
  if (mine === 'endpoint-dependent' || theirs === 'endpoint-dependent') {
    const who = mine === 'endpoint-dependent' ? 'your' : "the peer's";
    const other = mine === 'endpoint-dependent' ? "the peer's" : 'your';
    return `${who} NAT allocates a new public port for every destination (symmetric NAT) and ${other} NAT or firewall ` +
      `only admits packets from the exact address and port it has sent to (port-restricted or stricter), so the ` +
      `probes never match an open mapping; ${path === 'birthday' ? relay.replace('port prediction', 'port prediction (birthday probing)') : relay}` +
      `${allocation(who === 'your' ? 'your' : "the peer's", mine === 'endpoint-dependent' ? f.nat.oursAllocation : f.nat.theirsAllocation)}${birthdayNote(f)} ${traffic}`;
  }
  if (f.probes.heard > 0 || f.probes.answersHeard > 0) {
    return `packets got through in one direction only: a firewall or NAT on one side drops the other side's probes ` +
      `(check UDP filtering on both sides). ${traffic}`;
  }
  return `no probe got through in either direction although neither NAT was seen to be symmetric` +
    `${mine === 'unknown' || theirs === 'unknown' ? " (one side's NAT behaviour is unknown: the server's second port may be blocked)" : ''}; ` +
    `a firewall likely drops UDP between the peers. ${traffic}`;
}
