/**
 * The punch agent's public contract: configuration, timing defaults, inputs, actions, events and results.
 * See agent.ts for the theory of operation.
 */
import type { Endpoint } from '../../codec/address.js';
import type { Candidate, Introduction, NatFiltering, NatMapping, PeerMode, PortAllocation } from '../../codec/messages.js';
import type { NetworkKeys } from '../../crypto/keys.js';
import type { DoneAction, DriverInput, EventAction, FailAction, SendAction, TransportId } from '../machine.js';
import type { BirthdayGate, BirthdayOptions } from './birthday.js';

export interface PunchTiming {
  /** Retransmission back-off for REGISTER before the first answer (ms, last value repeats). */
  readonly registerBackoffMs: readonly number[];
  /** Refresh period while waiting for the partner. */
  readonly waitingRefreshMs: number;
  /** Refresh period while checking paths (keeps the server's view fresh, recovers from a restart). */
  readonly checkingRefreshMs: number;
  /** The NAT probe's Binding retransmissions to the server's alternate port (ms, last value repeats; 4 requests at most). */
  readonly natProbeBackoffMs: readonly number[];
  /** Probe back-off per candidate pair while checking (ms, last value repeats). */
  readonly probeBackoffMs: readonly number[];
  /** Ordinary checks per second at most, over all pairs (a token bucket; triggered checks and answers are not paced). */
  readonly checksPerSecond: number;
  /** The token bucket's depth: how many checks may leave at once. */
  readonly checkBurst: number;
  /** Behind one NAT: how long the controlling side holds back nominating direct paths so a LAN path wins. */
  readonly lanGraceMs: number;
  /**
   * How long after checks begin the controlling side holds back nominating a relayed pair, and then only while no
   * better pair is valid (pion/ice `relayAcceptanceMinWait`). At most 1 s by design; see docs/protocol.md.
   */
  readonly relayWaitMs: number;
  /** Handoff mode: the controlled side's wait for CLOSE after accepting, renewed by each nomination it sees. */
  readonly lingerMs: number;
  /** How often the controlled side repeats ACCEPTED (in a probe of its own) until the controlling side confirms. */
  readonly acceptedRepeatMs: number;
  /** Accepted clock difference for timestamps, after correcting for the server's clock. */
  readonly timestampWindowMs: number;
  /** Delay before acknowledging a pushed introduction (the server re-sends unacknowledged ones after 100 ms). */
  readonly pushAckDelayMs: number;
  /** Session mode: checks on pairs that are not valid (yet), per pair, once a path is selected. */
  readonly upgradeCheckMs: number;
  /** Session mode: consent checks on valid pairs (RFC 7675), per pair. */
  readonly consentIntervalMs: number;
  /** Session mode: a valid pair with no answer for this long loses consent (fails); a selected one is replaced. */
  readonly consentTimeoutMs: number;
  /** Checks sent to a predicted candidate (birthday probing) at most, unless the partner probes us from it. */
  readonly predictedChecks: number;
}

export const DEFAULT_TIMING: PunchTiming = {
  registerBackoffMs: [100, 200, 250],
  waitingRefreshMs: 1000,
  checkingRefreshMs: 2000,
  natProbeBackoffMs: [100, 200, 400],
  probeBackoffMs: [10, 20, 40, 50],
  checksPerSecond: 200,
  checkBurst: 16,
  lanGraceMs: 25,
  relayWaitMs: 500,
  lingerMs: 500,
  acceptedRepeatMs: 50,
  timestampWindowMs: 30_000,
  pushAckDelayMs: 60,
  upgradeCheckMs: 1000,
  consentIntervalMs: 3000,
  consentTimeoutMs: 15_000,
  predictedChecks: 1,
};

/** 'udp': a socket of ours, whose pairs are direct or LAN paths. 'relay': an allocation on a relay; its pairs are relayed. */
export type TransportKind = 'udp' | 'relay';

/** A local transport as the agent sees it: where checks leave from and answers arrive. */
export interface TransportSpec {
  readonly id: TransportId;
  readonly kind: TransportKind;
  /** The address its socket is bound to, as reported in results (the local port a handoff gives away). */
  readonly local: Endpoint;
  /** Its candidates: a socket's host addresses (and port mappings), a relay allocation's relayed address. */
  readonly candidates: readonly Candidate[];
  /**
   * 'active' (default): ordinary checks leave from it, and its candidates are advertised. 'passive': it only answers
   * and sends triggered checks (a birthday socket that must stay silent until the partner's probe arrives), and its
   * candidates are not advertised.
   */
  readonly checks?: 'active' | 'passive';
}

/**
 * 'handoff' (default): finish once both sides know the path, so that the caller can close the socket and hand its
 * port to another program. 'session': keep running after the first path: consent checks, upgrade to a better path,
 * fall back when the selected one stops answering, `path-changed` events; end on a `close` input or the partner's CLOSE.
 * 'auto': handoff when the agreed path is LAN or direct, session when it is relayed (the caller then proxies the
 * relayed path and keeps the session for an upgrade). Both sides agree on the pair, so both take the same branch.
 */
export type PunchMode = 'handoff' | 'session' | 'auto';

/**
 * Which paths the agent may use. 'auto' (default): every kind, relayed ones only when nothing better validates.
 * 'only': relayed paths only; probes on direct and LAN pairs are neither sent nor answered, and no host address is
 * advertised (for tests, and for users who do not want to reveal their address to the peer). Whether a relay is
 * allocated at all ('never') is the caller's business: the agent just has no relay transport then.
 */
export type RelayPolicy = 'auto' | 'only';

export interface PunchConfig {
  readonly name: string;
  readonly peer: string;
  readonly keys: NetworkKeys;
  /** The rendezvous server (resolved to an IP literal). */
  readonly server: Endpoint;
  /**
   * Other servers sharing its store (`--server S1,S3`, or a name with several addresses), in order: registered with
   * when the current one stops answering (timing.failoverMs).
   */
  readonly fallbacks?: readonly Endpoint[];
  /** The local transports at the start; more can be added later (`add-transport`). At least one. */
  readonly transports: readonly TransportSpec[];
  /** The transport that talks to the rendezvous server. Default: the first. */
  readonly rendezvousTransport?: TransportId;
  /** Give up after this long without a path (the first path, in session mode). */
  readonly timeoutMs: number;
  readonly sessionNonce: Uint8Array;
  /** Injected randomness (transaction ids). */
  readonly randomBytes: (n: number) => Uint8Array;
  readonly timing?: Partial<PunchTiming>;
  readonly mode?: PunchMode;
  /** Default 'auto'. */
  readonly relay?: RelayPolicy;
  /**
   * What this side runs (`punch` by default), sent to the server in REGISTER (MODE) and passed to the partner in its
   * introduction. A partner that runs something incompatible ends the attempt on both sides with MODE_MISMATCH.
   */
  readonly purpose?: PeerMode;
  /**
   * Birthday-paradox probing (birthday.ts) when exactly one side's NAT is symmetric; false turns it off. `gate` is
   * the process-wide limit on attempts (the Node driver passes one per process).
   */
  readonly birthday?: false | (Partial<BirthdayOptions> & { readonly gate?: BirthdayGate });
}

/** How a path was found by birthday probing: our role, and the probes the easy side sent (the hard side: its sockets). */
export interface BirthdayResult {
  readonly role: 'easy' | 'hard';
  /** The easy side: probe datagrams it sent in the winning attempt, up to the hit. The hard side: sockets it opened. */
  readonly probes: number;
}

/** Which kind of path a pair is: a LAN address of the partner, a direct path through NATs, or through a relay. */
export type PunchPath = 'lan' | 'direct' | 'relay';

export interface PunchResult {
  /** The local address of the transport the path leaves from (its bound address). */
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly path: PunchPath;
  /** From the start until this side knew the path. */
  readonly elapsedMs: number;
  readonly peer: string;
  /** The local transport the path leaves from. */
  readonly transport: TransportId;
  /** Present when birthday probing found this path (`path` is then 'direct'). */
  readonly birthday?: BirthdayResult;
}

/** Why the selected path moved: a better kind validated, the partner nominated another, or the old one failed or vanished. */
export type PathChangeReason = 'upgrade' | 'renominated' | 'consent-lost' | 'transport-closed';

export type PunchEvent =
  | { readonly type: 'registered'; readonly mapped: Endpoint }
  /** Our NAT as the registration probe classified it (src/core/nat/classify.ts); also sent to the partner. */
  | { readonly type: 'nat-mapping'; readonly mapping: NatMapping; readonly allocation?: PortAllocation; readonly filtering?: NatFiltering }
  | { readonly type: 'introduced'; readonly peer: string; readonly candidates: readonly Endpoint[]; readonly intro: Introduction; readonly sameNat: boolean }
  | { readonly type: 'path-valid'; readonly remote: Endpoint; readonly transport: TransportId; readonly path: PunchPath }
  /** The first path both sides agreed on (in handoff mode the result follows). */
  | { readonly type: 'connected'; readonly remote: Endpoint; readonly path: PunchPath; readonly transport: TransportId; readonly result: PunchResult }
  /** Session mode: the selected path moved (an upgrade, a renomination, or a fall-back after lost consent). */
  | { readonly type: 'path-changed'; readonly previous: PunchResult | undefined; readonly result: PunchResult; readonly reason: PathChangeReason }
  /** Session mode: the selected path is gone and no other is valid; checks go on. */
  | { readonly type: 'path-lost'; readonly previous: PunchResult; readonly reason: 'consent-lost' | 'transport-closed' | 'partner-restarted' }
  /** Session mode: the partner ended the session (its CLOSE). */
  | { readonly type: 'partner-left' }
  | { readonly type: 'dropped'; readonly from: Endpoint; readonly transport: TransportId; readonly reason: string }
  /** The server stopped answering (no answer for timing.failoverMs): registering with the next one now. */
  | { readonly type: 'failover'; readonly from: Endpoint; readonly to: Endpoint }
  /** Birthday probing: an attempt's progress (see birthday.ts). */
  | { readonly type: 'birthday'; readonly role: 'easy' | 'hard'; readonly attempt: number; readonly phase: 'opening' | 'open' | 'probing' | 'won' | 'gave-up' | 'deferred'; readonly count: number; readonly detail?: string };

export type PunchInput =
  | DriverInput
  /** A new local transport (a relay allocation, birthday sockets); its pairs join the checklist at once. */
  | { readonly type: 'add-transport'; readonly transport: TransportSpec; readonly now: number }
  /** A new candidate of an existing transport (a port mapping that arrived); advertised to the partner at once. */
  | { readonly type: 'add-candidate'; readonly transport: TransportId; readonly candidate: Candidate; readonly now: number }
  /** A remote candidate learnt other than from the server (a predicted port); paired with every active transport. */
  | { readonly type: 'add-remote-candidate'; readonly candidate: Candidate; readonly now: number }
  /** Session mode: end the session (CLOSE to the partner, outcome to the server). Before a path: fail as aborted. */
  | { readonly type: 'close'; readonly now: number }
  /** The driver opened the birthday sockets `birthday-open` asked for (passive transports, attached already); none if it could not. */
  | { readonly type: 'birthday-opened'; readonly attempt: number; readonly transports: readonly TransportSpec[]; readonly error?: string; readonly now: number };

/**
 * The hard side of a birthday attempt: open `sockets` UDP sockets (on the address family of the rendezvous
 * transport) and send `data` once from each to `to` with IP TTL `ttl` (then back to the default), attach them under
 * ids `${prefix}${i}`, and answer with `birthday-opened`.
 */
export interface BirthdayOpenAction {
  readonly type: 'birthday-open';
  readonly attempt: number;
  readonly sockets: number;
  readonly ttl: number;
  readonly to: Endpoint;
  readonly data: Uint8Array;
  readonly prefix: string;
}

/** Close these birthday sockets (the attempt is over, or another socket won). */
export interface BirthdayCloseAction {
  readonly type: 'birthday-close';
  readonly transports: readonly TransportId[];
}

export type PunchAction = SendAction | EventAction<PunchEvent> | DoneAction<PunchResult> | FailAction | BirthdayOpenAction | BirthdayCloseAction;
