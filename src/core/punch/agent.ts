/**
 * The punch agent: an ICE-style (RFC 8445) agent, sans-IO. Inputs in (`start`, `datagram`, `timer`, transports and
 * candidates that arrive later, `close`), actions out (`send` from a named transport, `event`, `done`, `fail`); the
 * driver owns the transports and the timer and passes the time in (src/node/driver.ts).
 *
 * Theory of operation
 * -------------------
 * Where each part lives: rendezvous-client.ts (1, 3, 8), nat-probe.ts (2), candidates.ts (4), checklist.ts (5),
 * nomination.ts (6), transactions.ts (replay tables), failure.ts (7). This file only moves between phases and
 * dispatches.
 *
 * 0. Transports and candidates. The agent has local transports, each with an id: the UDP socket it registers from,
 *    later relay allocations, birthday sockets, more sockets. Each has candidates with a kind and an RFC 8445
 *    priority: a socket's host addresses (and port mappings), an allocation's relayed address. Transports and
 *    candidates may arrive at any time (`add-transport`, `add-candidate`): new candidates are registered at once, so
 *    the server re-introduces us to the partner with them (trickle). Every `send` names the transport it leaves from;
 *    every datagram says which transport it arrived on, and answers leave from that same transport.
 * 1. Register. The agent sends REGISTER (name, partner's name, a fresh 16-byte session nonce, a timestamp, its
 *    advertised candidates, its NAT finding) to the rendezvous server over the rendezvous transport, authenticated
 *    with the client-to-server key. It retransmits with back-off until answered, then refreshes every
 *    `waitingRefreshMs` while it waits (that keeps its NAT mapping to the server fresh and recovers a lost
 *    introduction) and every `checkingRefreshMs` afterwards.
 * 2. Learn the NAT. The answer names the server's alternate port; a padded Binding request there tells whether our
 *    public port depends on the destination (a symmetric NAT). The finding goes to the server with the next refresh,
 *    which passes it to the partner, so both sides can explain a failure.
 * 3. Introduction. As soon as both partners are registered the server pushes INTRODUCE to each (and puts the
 *    introduction in REGISTER answers). It carries the partner's nonce, its server-reflexive address and its
 *    advertised candidates (CANDIDATE attributes: kind, priority, address). From the two nonces and two names both
 *    sides derive direction-specific probe keys (src/crypto/keys.ts), so no message of another session, pair or
 *    direction verifies.
 * 4. Pairs. Every active local transport is paired with every remote candidate of its address family; each pair has
 *    an RFC 8445 priority and a path kind: LAN (a host address of the partner), direct, or relay (either end a
 *    relay). Pairs of passive transports start frozen: they wait for the partner's probe.
 * 5. Checks (RFC 8445 section 7.2). Each side probes every pair, highest priority first, on a short per-pair back-off
 *    (10, 20, 40, then every 50 ms), within a global budget of `checksPerSecond`. A probe from an unknown address is
 *    answered and that address becomes a peer-reflexive candidate, paired only with the transport it arrived on
 *    (this is what lets a cone NAT reach a symmetric one); every probe received triggers a check straight back on
 *    its pair (a triggered check). A pair is *valid* (succeeded) once an answer to our own probe comes back from the
 *    very address, on the very transport, we sent it to, and says our probe came from an address of ours.
 * 6. Nomination. The side whose name sorts first is controlling and sets NOMINATE on its checks of nominatable pairs
 *    (aggressive nomination): LAN at once, direct at once (after `lanGraceMs` when both share a NAT), relayed after
 *    `relayWaitMs` and only while no better pair is valid (nomination.ts). The controlled side accepts the first
 *    nominated pair that is valid for it and says so in its answer (ACCEPTED), and again in a probe of its own every
 *    `acceptedRepeatMs` until the controlling side confirms. Then each side knows the other has heard it: the
 *    controlled side got an answer from the partner on that pair, and the controlling side got the acceptance (in an
 *    answer, or in a probe from a pair it validated or from one of the partner's server-introduced addresses).
 *    - Handoff mode (default): the controlling side finishes and sends CLOSE; the controlled side finishes on CLOSE
 *      or after `lingerMs` without another nomination (the CLOSE was lost and the partner is gone). The caller then
 *      closes the socket and hands its port to another program.
 *    - Session mode: both keep running with the pair selected. Valid pairs get consent checks every
 *      `consentIntervalMs` (RFC 7675) and fail after `consentTimeoutMs` without an answer; pairs not (yet) valid are
 *      checked every `upgradeCheckMs`. When a pair of a better kind validates, the controlling side nominates it
 *      and both move to it once it is accepted (`path-changed`, an upgrade: relay → direct); when the selected pair
 *      fails, each side falls back to its best valid pair (`path-changed`, consent-lost) or reports `path-lost`. The
 *      session ends on `close` (CLOSE to the partner) or on the partner's CLOSE (`partner-left`).
 *    - Auto mode (what the CLI uses): handoff when the agreed pair is LAN or direct, session when it is relayed, so a
 *      relayed path can be proxied and later upgraded. Both sides agree on one pair, so both take the same branch.
 *    - Relay policy 'only': pairs that are not relayed are never formed, and probes on them are dropped unanswered.
 * 7. Failure. At the deadline without a path the agent fails with a structured reason (failure.ts): the stage it
 *    reached (no server, no partner, no path), both NAT findings, what was sent and heard, every pair's state.
 * 8. Withdrawal. However the attempt ends (connected, no path, the timeout without a partner, an error, `abort`),
 *    the agent withdraws its registration with one authenticated REPORT carrying the outcome; the server drops the
 *    registration and tells a partner that still waits (NOTICE partner-left). A partner that leaves before a path is
 *    found ends our attempt with PEER_LEFT, never a firewall diagnosis: on its NOTICE, or when a refresh answer sent
 *    after the introduction no longer carries it (its registration expired: killed) and nothing was heard from it
 *    lately. Another session registering under our own name ends ours with DISPLACED (its NOTICE, or 409 to our next
 *    refresh). Both sides say what they run (MODE, `purpose`); an introduction to an incompatible partner ends the
 *    attempt with MODE_MISMATCH on both sides.
 *
 * Replay protection: every message carries a timestamp checked against a window (on the server's clock, learned
 * from its answers); probe requests are remembered by transaction id and answered once; an answer is accepted only
 * for an outstanding transaction, only from the transport and address the request went to.
 */
import { endpointKey, familyOf, type Endpoint } from '../../codec/address.js';
import { decodeMessage, encodeMessage, modesCompatible, partnerModeFor, ProbeFlag, type BurrowMessage, type Candidate, type Introduction, MAX_CANDIDATES, type Outcome } from '../../codec/messages.js';
import { TRANSACTION_ID_LENGTH, verifyIntegrity, type StunMessage } from '../../codec/stun.js';
import { readRfc5780Answer } from '../../codec/rfc5780.js';
import { deriveProbeKeys, type ProbeKeys } from '../../crypto/keys.js';
import { BurrowError } from '../../errors.js';
import { Backoff } from '../backoff.js';
import type { ClientMachine, TransportId } from '../machine.js';
import { BirthdayGate, BirthdayProber, birthdayRole, DEFAULT_BIRTHDAY, hardWindowMs, type BirthdayOptions } from './birthday.js';
import { candidatePriority, LocalTransport, RemoteCandidates, type RemoteCandidate } from './candidates.js';
import { Checklist, nextCheckAt, Pacer, PATH_RANK, wantsCheck, type Pair } from './checklist.js';
import { MIN_CHECKING_FOR_DIAGNOSIS_MS, punchFailureError, type PunchFailure } from './failure.js';
import { NatProbe } from './nat-probe.js';
import { ControlledSelector, ControllingSelector, type NominationContext } from './nomination.js';
import { RendezvousClient, type RendezvousNote } from './rendezvous-client.js';
import { SeenProbes, TransactionTable } from './transactions.js';
import {
  DEFAULT_TIMING,
  type PathChangeReason,
  type PunchAction,
  type PunchConfig,
  type PunchEvent,
  type PunchInput,
  type PunchMode,
  type PunchResult,
  type PunchTiming,
  type RelayPolicy,
  type BirthdayResult,
  type TransportSpec,
} from './types.js';

type Phase = 'idle' | 'registering' | 'waiting' | 'checking' | 'accepted' | 'connected' | 'finished';
type PeerMessage = Extract<BurrowMessage, { kind: 'probe' | 'probe-ok' | 'close' }>;

/** A triggered check is skipped if the pair was checked this recently (ms). */
const TRIGGER_GAP_MS = 5;
/**
 * A partner whose registration is gone (a refresh answer without it) counts as gone only if nothing authenticated
 * came from it for this long: a partner that still probes us is alive, whatever the server lost.
 */
const PARTNER_SILENCE_MS = 3000;
/**
 * Ordinary checks on a partner's server-reflexive address once it is known to sit behind a symmetric NAT: its NAT
 * maps us to another port than the server's, so they cannot succeed, and a pair of symmetric NATs must not spray.
 */
const HARD_SRFLX_CHECKS = 8;
/** The easy side waits this long after its last probe for a late answer before it ends the attempt. */
const EASY_LINGER_MS = 1500;
/** A gate for agents not given one (tests); the Node driver passes its process-wide gate. */
const SHARED_GATE = new BirthdayGate();

/** The hard side's attempt in progress. */
interface HardAttempt {
  readonly attempt: number;
  readonly tag: string;
  readonly startedAt: number;
  /** Its sockets, once open. */
  ids: Set<TransportId>;
  opened: number;
  endsAt: number;
  winner: TransportId | undefined;
  released: boolean;
}

/** The easy side's attempt in progress (or ended, kept for its figures). */
interface EasyAttempt {
  readonly prober: BirthdayProber;
  readonly tag: string;
  lastSentAt: number;
  hit: boolean;
  released: boolean;
}


function birthdayOf(b: BirthdayResult | undefined): { birthday?: BirthdayResult } {
  return b ? { birthday: b } : {};
}

export class PunchAgent implements ClientMachine<PunchInput, PunchAction> {
  private readonly timing: PunchTiming;
  private readonly controlling: boolean;
  private readonly mode: PunchMode;
  private readonly relayPolicy: RelayPolicy;
  private phase: Phase = 'idle';
  private startedAt = 0;
  private deadline = 0;
  /** The time of the latest input, for scheduling decisions in nextTimeoutAt(). */
  private lastNow = 0;

  private readonly transports = new Map<TransportId, LocalTransport>();
  private readonly rendezvousTransport: TransportId;
  private readonly rendezvous: RendezvousClient;
  private readonly natProbe: NatProbe;

  private intro: Introduction | undefined;
  private probeKeys: ProbeKeys | undefined;
  private checkStartedAt = 0;
  private readonly remotes = new RemoteCandidates();
  private readonly checklist: Checklist;
  private readonly pacer: Pacer;
  private readonly probes = new TransactionTable();
  private readonly seen = new SeenProbes();
  private readonly nominator: ControllingSelector;
  private readonly acceptor = new ControlledSelector();

  /** The pair in use: accepted (controlled) or confirmed (controlling). */
  private selected: Pair | undefined;
  private selectedAt = 0;
  /** Handoff mode, controlled side: finish at this time unless CLOSE comes first. */
  private lingerUntil = 0;
  /** The controlled side repeats its acceptance this often until the controlling side confirms it. */
  private nextAcceptedAt = Infinity;
  private acceptConfirmed = false;
  private readonly stats = { probesSent: 0, probesHeard: 0, answersHeard: 0 };
  /** When the current partner session was introduced, and when an authenticated message of its last arrived. */
  private introducedAt = 0;
  private lastHeardAt = -Infinity;

  /** Birthday probing (birthday.ts): undefined when turned off. */
  private readonly birthdayOptions: BirthdayOptions | undefined;
  private readonly gate: BirthdayGate;
  private hard: HardAttempt | undefined;
  private hardAttempts = 0;
  /** The hard side may start its next attempt at this time (cool-down, or a busy gate). */
  private hardNextAt = 0;
  private easy: EasyAttempt | undefined;
  /** The partner's latest attempt number we acted on, and one deferred by the gate. */
  private easyAttempt = 0;
  private easyDeferred: { attempt: number; at: number; until: number } | undefined;
  /** How long the partner's attempt still waits for probes (kept across re-deferrals). */
  private easyDeferredUntil: { attempt: number; until: number } | undefined;
  /** What birthday probing did (for the failure diagnosis): attempts, and probes sent or sockets opened in all. */
  private readonly birthdayStats: { role: 'easy' | 'hard' | undefined; attempts: number; count: number } = { role: undefined, attempts: 0, count: 0 };
  /** Pairs found by birthday probing, by pair key. */
  private readonly birthdayPairs = new Map<string, BirthdayResult>();

  constructor(private readonly config: PunchConfig) {
    this.timing = { ...DEFAULT_TIMING, ...config.timing };
    this.controlling = config.name < config.peer;
    this.mode = config.mode ?? 'handoff';
    this.relayPolicy = config.relay ?? 'auto';
    const first = config.transports[0];
    if (!first) throw new RangeError('the punch agent needs at least one transport');
    for (const spec of config.transports) this.transports.set(spec.id, new LocalTransport(spec));
    this.rendezvousTransport = config.rendezvousTransport ?? first.id;
    const newTxid = (): Uint8Array => config.randomBytes(TRANSACTION_ID_LENGTH);
    this.rendezvous = new RendezvousClient({
      name: config.name,
      peer: config.peer,
      keys: config.keys,
      server: config.server,
      ...(config.fallbacks ? { fallbacks: config.fallbacks } : {}),
      transport: this.rendezvousTransport,
      wire: 'udp',
      sessionNonce: config.sessionNonce,
      newTxid,
      timing: this.timing,
      mode: config.purpose ?? 'punch',
    });
    this.natProbe = new NatProbe(() => this.rendezvous.server, this.rendezvousTransport, new Backoff(this.timing.natProbeBackoffMs), newTxid, this.transports.get(this.rendezvousTransport)?.local);
    this.checklist = new Checklist(this.controlling, new Backoff(this.timing.probeBackoffMs), this.relayPolicy === 'only' ? (path) => path === 'relay' : undefined);
    this.pacer = new Pacer(this.timing.checksPerSecond, this.timing.checkBurst);
    this.nominator = new ControllingSelector(this.timing);
    const b = config.birthday;
    this.birthdayOptions = b === false ? undefined : { ...DEFAULT_BIRTHDAY, ...b };
    this.gate = (b !== false ? b?.gate : undefined) ?? SHARED_GATE;
  }

  get isFinished(): boolean {
    return this.phase === 'finished';
  }

  /** Our public address as the server sees it, once registered. */
  get publicAddress(): Endpoint | undefined {
    return this.rendezvous.mapped;
  }

  /** The pairs (for diagnostics and tests), highest priority first. */
  get pairs(): readonly Pair[] {
    return this.checklist.all();
  }

  /** When the caller should deliver a `timer` input next, or undefined once finished. */
  nextTimeoutAt(): number | undefined {
    if (this.phase === 'finished' || this.phase === 'idle') return undefined;
    if (this.phase === 'accepted') return Math.min(this.deadline, this.lingerUntil, this.nextAcceptedAt);
    let next = this.phase === 'connected' ? Infinity : this.deadline;
    next = Math.min(next, this.rendezvous.nextTimeoutAt() ?? Infinity, this.natProbe.nextTimeoutAt() ?? Infinity);
    if (this.phase === 'checking' || this.phase === 'connected') {
      let due = Infinity;
      for (const p of this.checklist.all()) if (this.wantsCheck(p)) due = Math.min(due, p.nextCheckAt);
      // Due already but held back by the pacer: wake when the next token is there.
      if (due <= this.lastNow) due = this.pacer.nextTokenAt(this.lastNow);
      next = Math.min(next, due);
      if (this.controlling && this.phase === 'checking') next = Math.min(next, this.nominator.nextWaitEnd(this.lastNow, this.nominationContext()) ?? Infinity);
      next = Math.min(next, this.birthdayTimeoutAt());
    }
    if (this.phase === 'connected') {
      if (!this.controlling && !this.acceptConfirmed) next = Math.min(next, this.nextAcceptedAt);
      for (const p of this.checklist.all()) if (p.state === 'succeeded') next = Math.min(next, p.lastAnswerAt + this.timing.consentTimeoutMs);
    }
    return next === Infinity ? undefined : next;
  }

  handle(input: PunchInput): PunchAction[] {
    const out: PunchAction[] = [];
    if (this.phase === 'finished') return out;
    this.lastNow = input.now;
    switch (input.type) {
      case 'start':
        this.start(input.now, out);
        break;
      case 'timer':
        this.onTimer(input.now, out);
        break;
      case 'datagram':
        this.onDatagram(input.transport, input.from, input.data, input.now, out);
        break;
      case 'transport-closed':
        this.removeTransport(input.transport, input.now, out);
        break;
      case 'add-transport':
        this.addTransport(input.transport, input.now, out);
        break;
      case 'add-candidate':
        this.addLocalCandidate(input.transport, input.candidate, input.now, out);
        break;
      case 'add-remote-candidate':
        // Only for a partner we were introduced to: a new partner session starts the remote candidates afresh.
        if (this.probeKeys) this.addRemote(input.candidate, false, input.now, out);
        break;
      case 'close':
        this.close(input.now, out);
        break;
      case 'birthday-opened':
        this.hardOpened(input.attempt, input.transports, input.error, input.now, out);
        break;
      case 'abort':
        this.abort(input.now, out);
        break;
      default: {
        const never: never = input;
        throw new Error(`unknown input ${String(never)}`);
      }
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Phases and timers.

  private start(now: number, out: PunchAction[]): void {
    if (this.phase !== 'idle') return;
    this.startedAt = now;
    this.deadline = now + this.config.timeoutMs;
    this.phase = 'registering';
    this.rendezvous.start(now, this.advertised(), out);
  }

  private onTimer(now: number, out: PunchAction[]): void {
    if (this.phase === 'idle') return;
    if (this.phase === 'accepted') {
      if (now >= this.lingerUntil || now >= this.deadline) {
        this.finishAccepted(out);
        return;
      }
      // Until CLOSE arrives, repeat the acceptance as a probe of our own: if every answer carrying ACCEPTED was lost,
      // the controlling side would otherwise never finish once we are gone (under heavy loss, a real risk).
      this.repeatAcceptance(now, out);
      return;
    }
    if (this.phase !== 'connected' && now >= this.deadline) {
      this.failAtDeadline(out);
      return;
    }
    for (const note of this.rendezvous.onTimer(now, out)) this.onRendezvous(note, now, out);
    const nat = this.natProbe.onTimer(now);
    out.push(...nat.sends);
    if (nat.filtering) this.natFinding(out);
    if (this.phase === 'connected') {
      this.expireConsent(now, out);
      if (!this.controlling && !this.acceptConfirmed) this.repeatAcceptance(now, out);
    }
    if (this.phase === 'checking' || this.phase === 'connected') {
      if (this.controlling && this.phase === 'checking') this.nominateNow(now, out);
      this.sendDueChecks(now, out);
      this.birthdayTimer(now, out);
    }
  }

  private repeatAcceptance(now: number, out: PunchAction[]): void {
    if (now < this.nextAcceptedAt || !this.selected) return;
    this.sendCheck(this.selected, now, out, ProbeFlag.ACCEPTED);
    this.nextAcceptedAt = now + this.timing.acceptedRepeatMs;
  }

  // -------------------------------------------------------------------------------------------
  // Transports and candidates.

  /** Our candidates as registered with the server: active transports only, best first, within the wire's limit. */
  private advertised(): Candidate[] {
    const all: Candidate[] = [];
    const only = this.relayPolicy === 'only';
    for (const t of this.transports.values()) {
      if (!t.passive) all.push(...t.candidates.filter((c) => c.kind !== 'srflx' && c.kind !== 'prflx' && (!only || c.kind === 'relayed')));
    }
    const sorted = all.sort((a, b) => b.priority - a.priority);
    // The hard side's birthday sockets are open: a `predicted` candidate of our public IP whose port is the attempt's
    // number tells the partner to probe (birthday.ts; docs/protocol.md).
    const mapped = this.rendezvous.mapped;
    if (this.hard && this.hard.opened > 0 && mapped) {
      return [{ kind: 'predicted' as const, priority: candidatePriority('predicted'), endpoint: { address: mapped.address, port: this.hard.attempt } }, ...sorted.slice(0, MAX_CANDIDATES - 1)];
    }
    return sorted.slice(0, MAX_CANDIDATES);
  }

  private addTransport(spec: TransportSpec, now: number, out: PunchAction[]): void {
    if (this.transports.has(spec.id)) return;
    const t = new LocalTransport(spec);
    this.transports.set(t.id, t);
    // Peer-reflexive candidates stay paired with the transport they arrived on only. A passive transport (a birthday
    // socket) is paired on demand, when the partner's probe arrives on it.
    if (!t.passive) for (const r of this.remotes.values()) if (r.kind !== 'prflx') this.checklist.add(t, r, now);
    if (!t.passive) this.readvertise(now, out);
    this.sendDueChecks(now, out);
  }

  private addLocalCandidate(id: TransportId, candidate: Candidate, now: number, out: PunchAction[]): void {
    const t = this.transports.get(id);
    if (!t?.addCandidate(candidate) || t.passive) return;
    this.readvertise(now, out);
  }

  private removeTransport(id: TransportId, now: number, out: PunchAction[]): void {
    const t = this.transports.get(id);
    if (!t) return;
    if (id === this.rendezvousTransport) {
      this.finish(out, { type: 'fail', error: BurrowError.socket('the transport to the rendezvous server closed', 'closed') });
      return;
    }
    const lost = this.selected?.transport.id === id ? this.selected : undefined;
    this.transports.delete(id);
    this.checklist.removeTransport(id);
    this.probes.dropTransport(id);
    if (lost && this.phase === 'accepted') {
      // Handoff mode, waiting for CLOSE on a pair that just vanished: back to checking, for another pair.
      this.selected = undefined;
      this.nextAcceptedAt = Infinity;
      this.phase = 'checking';
    } else if (lost) {
      this.selectionLost(lost, 'transport-closed', now, out);
    }
    if (!t.passive) this.readvertise(now, out);
  }

  private readvertise(now: number, out: PunchAction[]): void {
    if (this.phase === 'idle' || this.phase === 'finished') return;
    this.rendezvous.setCandidates(this.advertised(), now, out);
  }

  /** Adds a remote candidate and pairs it with every transport of its family; returns it if it is new. */
  private addRemote(c: Candidate, introduced: boolean, now: number, out?: PunchAction[]): RemoteCandidate | undefined {
    if (!this.hasFamily(c.endpoint.address)) return undefined;
    const remote = this.remotes.add(c.kind, c.endpoint, c.priority, introduced);
    if (!remote) return undefined;
    for (const t of this.transports.values()) if (!t.passive) this.checklist.add(t, remote, now);
    if (out && this.probeKeys) this.sendDueChecks(now, out);
    return remote;
  }

  private hasFamily(address: string): boolean {
    const family = familyOf(address);
    for (const t of this.transports.values()) if (t.family === family) return true;
    return false;
  }

  /**
   * Whether an address is one of ours: our public address as the server saw it, or an address of one of our
   * candidates (host, relayed, mapped). A probe must have been sent to one of them, and an answer must say our probe
   * came from one of them; a captured message re-sent or relayed by a third host fails this test (it names the third
   * host), so it can never redirect us there. Assumes the NAT keeps one public IP per host ("paired" pooling,
   * RFC 4787 section 4.1).
   */
  private isOurs(address: string): boolean {
    if (this.rendezvous.mapped?.address === address) return true;
    for (const t of this.transports.values()) if (t.candidates.some((c) => c.endpoint.address === address)) return true;
    return false;
  }

  private sameNat(): boolean {
    const mapped = this.rendezvous.mapped;
    return !!this.intro && !!mapped && this.intro.peerMapped.address === mapped.address;
  }

  // -------------------------------------------------------------------------------------------
  // Checks.

  private nominationContext(): NominationContext {
    const pairs = this.checklist.all();
    return { checkStartedAt: this.checkStartedAt, lanPreferred: this.sameNat() && pairs.some((p) => p.path === 'lan'), pairs };
  }

  private nominates(pair: Pair, now: number): boolean {
    if (!this.controlling) return false;
    // Session mode, once a path is in use: only a better kind of path is worth moving to (no flapping between equals).
    const current = this.phase === 'connected' ? this.selected : undefined;
    if (current && pair !== current && PATH_RANK[pair.path] >= PATH_RANK[current.path]) return false;
    return this.nominator.nominates(pair, now, this.nominationContext());
  }

  private wantsCheck(p: Pair): boolean {
    if (p.remote.kind === 'srflx' && p.state !== 'succeeded' && p.checks >= HARD_SRFLX_CHECKS && this.intro?.peerMapping === 'endpoint-dependent') return false;
    return wantsCheck(p, this.phase === 'checking' || this.phase === 'connected' ? this.phase : 'other', this.controlling);
  }

  private sendDueChecks(now: number, out: PunchAction[]): void {
    if (this.phase !== 'checking' && this.phase !== 'connected') return;
    for (const p of this.checklist.all()) {
      if (!this.wantsCheck(p) || now < p.nextCheckAt) continue;
      if (!this.pacer.take(now)) break;
      this.sendCheck(p, now, out);
    }
  }

  /** Controlling side: valid pairs that just became nominatable (a wait ended) are nominated right away. */
  private nominateNow(now: number, out: PunchAction[]): void {
    for (const p of this.checklist.all()) if (p.state === 'succeeded' && !p.nominated && this.nominates(p, now)) this.sendCheck(p, now, out);
  }

  private sendCheck(pair: Pair, now: number, out: PunchAction[], extraFlags = 0): void {
    if (!this.probeKeys) return;
    const txid = this.config.randomBytes(TRANSACTION_ID_LENGTH);
    const flags = (this.nominates(pair, now) ? ProbeFlag.NOMINATE : 0) | extraFlags;
    if ((flags & ProbeFlag.NOMINATE) !== 0) pair.nominated = true;
    const msg: BurrowMessage = { kind: 'probe', txid, timestamp: this.rendezvous.serverTime(now), flags, destination: pair.remote.endpoint };
    this.probes.track(txid, { transport: pair.transport.id, to: pair.remote.endpoint, purpose: 'probe', flags });
    out.push({ type: 'send', transport: pair.transport.id, to: pair.remote.endpoint, data: encodeMessage(msg, { key: this.probeKeys.send }) });
    this.checklist.checked(pair, now, Infinity);
    pair.nextCheckAt = nextCheckAt(pair, now, this.phase === 'connected' ? 'connected' : 'checking', this.timing, this.checklist.probeBackoff);
    this.stats.probesSent++;
  }

  /** Session mode: valid pairs that stopped answering fail; a failed selection is replaced. */
  private expireConsent(now: number, out: PunchAction[]): void {
    for (const p of this.checklist.all()) {
      if (p.state !== 'succeeded' || now < p.lastAnswerAt + this.timing.consentTimeoutMs) continue;
      p.state = 'failed';
      p.nominated = false;
      p.nextCheckAt = now; // keep trying it, at the upgrade rate: it may come back
      if (p === this.selected) this.selectionLost(p, 'consent-lost', now, out);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Incoming datagrams. Nothing here throws on bad input: it is dropped with a reason.

  private drop(transport: TransportId, from: Endpoint, reason: string, out: PunchAction[]): void {
    out.push({ type: 'event', event: { type: 'dropped', from, transport, reason } });
  }

  private onDatagram(transport: TransportId, from: Endpoint, data: Uint8Array, now: number, out: PunchAction[]): void {
    if (this.phase === 'idle') return;
    if (!this.transports.has(transport)) {
      this.drop(transport, from, 'datagram on a transport the agent does not have', out);
      return;
    }
    const decoded = decodeMessage(data, { relayOfferKey: this.config.keys.relayOffer });
    if (!decoded.ok) {
      this.drop(transport, from, `malformed: ${decoded.reason}`, out);
      return;
    }
    const msg = decoded.msg;
    switch (msg.kind) {
      case 'register-ok':
      case 'error':
      case 'introduce':
      case 'notice':
        if (!this.rendezvous.isFromServer(transport, from)) {
          this.drop(transport, from, `${msg.kind} not from the server`, out);
          return;
        }
        for (const note of this.rendezvous.handle(msg, data, decoded.stun, now, out)) this.onRendezvous(note, now, out);
        return;
      case 'binding-ok': {
        const answer = readRfc5780Answer(decoded.stun);
        const finding = this.natProbe.handle(transport, from, msg.txid, msg.mapped, this.rendezvous.mapped, answer.ok ? answer.answer.other : undefined);
        if (finding === 'unmatched') {
          if (this.natProbe.handleFilter(transport, msg.txid) === 'unmatched') this.drop(transport, from, 'binding answer for no outstanding request', out);
          else this.natFinding(out);
        } else if (finding !== undefined) {
          this.natFinding(out);
          const filter = this.natProbe.startFiltering(now);
          if (filter) out.push(filter);
        }
        return;
      }
      case 'probe':
      case 'probe-ok':
      case 'close':
        this.onPeerMessage(msg, transport, from, data, decoded.stun, now, out);
        return;
      case 'binding':
      case 'register':
      case 'report':
        this.drop(transport, from, `unexpected ${msg.kind}`, out);
        return;
      default: {
        const never: never = msg;
        throw new Error(`unknown message ${String(never)}`);
      }
    }
  }

  /** Our NAT's findings so far go to the partner with the next REGISTER, and to the caller as an event. */
  private natFinding(out: PunchAction[]): void {
    const p = this.natProbe;
    this.rendezvous.setMapping(p.mapping, p.allocation, p.filtering, this.lastNow, out);
    out.push({ type: 'event', event: { type: 'nat-mapping', mapping: p.mapping, allocation: p.allocation, ...(p.filtering !== 'unknown' ? { filtering: p.filtering } : {}) } });
    this.maybeBirthday(this.lastNow, out);
  }

  private onRendezvous(note: RendezvousNote, now: number, out: PunchAction[]): void {
    switch (note.type) {
      case 'registered':
        if (note.first) {
          out.push({ type: 'event', event: { type: 'registered', mapped: note.mapped } });
          if (this.phase === 'registering') this.phase = 'waiting';
        }
        if (note.alternate) {
          const request = this.natProbe.start(note.alternate, now);
          if (request) out.push(request);
        }
        // Asked after the introduction and answered without it: the partner's registration is gone (it left, or it
        // expired because it stopped refreshing). Unless we still hear the partner, it has gone for good.
        if (!note.partner && this.intro && note.sentAt >= this.introducedAt && now - this.lastHeardAt > PARTNER_SILENCE_MS) this.partnerGone('gone', out);
        return;
      case 'partner-gone':
        if (!this.intro || !Buffer.from(note.peerNonce).equals(this.intro.peerNonce) || this.phase !== 'checking') return;
        // The partner checked until its own deadline and found no path either, and we checked alongside long enough:
        // that is the network, not a departure, and our own observations explain it (NO_PATH, at once rather than at
        // our deadline). After a short overlap it just left.
        if (note.outcome === 'failed' && now - this.checkStartedAt >= MIN_CHECKING_FOR_DIAGNOSIS_MS) {
          this.finish(out, { type: 'fail', error: punchFailureError({ ...this.failure(), seconds: Math.round((now - this.startedAt) / 100) / 10 }) });
        } else this.partnerGone('withdrew', out);
        return;
      case 'introduced':
        this.adoptIntroduction(note.intro, now, out);
        return;
      case 'failed':
        // Displaced after a path was found: the path is ours still; only the name (and the server) are gone.
        if (note.error.code === 'DISPLACED' && (this.phase === 'connected' || this.phase === 'accepted')) {
          this.drop(this.rendezvousTransport, this.config.server, 'another session took our name; the path in use stays', out);
          return;
        }
        this.finish(out, { type: 'fail', error: note.error });
        return;
      case 'dropped':
        this.drop(this.rendezvousTransport, this.rendezvous.server, note.reason, out);
        return;
      case 'failover':
        out.push({ type: 'event', event: { type: 'failover', from: note.from, to: note.to } });
        return;
      default: {
        const never: never = note;
        throw new Error(`unknown note ${String(never)}`);
      }
    }
  }

  /** The partner left before a path was found: say so (never a diagnosis of the network). After a path: nothing to do. */
  private partnerGone(how: 'withdrew' | 'gone', out: PunchAction[]): void {
    if (this.phase !== 'checking') return;
    this.finish(out, { type: 'fail', error: BurrowError.peerLeft(this.config.peer, endpointKey(this.rendezvous.server), how) });
  }

  private adoptIntroduction(intro: Introduction, now: number, out: PunchAction[]): void {
    if (this.phase === 'accepted' || this.phase === 'finished') return;
    if (intro.peerName !== this.config.peer) return;
    const mode = this.config.purpose ?? 'punch';
    if (intro.peerMode !== undefined && !modesCompatible(mode, intro.peerMode)) {
      // Both sides get the introduction, so both say this, each from its own side.
      this.finish(out, { type: 'fail', error: BurrowError.modeMismatch(intro.peerName, intro.peerMode, mode, partnerModeFor(intro.peerMode), partnerModeFor(mode)) });
      return;
    }
    const isNew = !this.intro || !Buffer.from(this.intro.peerNonce).equals(intro.peerNonce);
    if (isNew) {
      // A new partner session (first contact, or the partner restarted): start the checks afresh.
      const previous = this.selected;
      this.intro = intro;
      this.probeKeys = deriveProbeKeys(
        this.config.keys,
        { name: this.config.name, nonce: this.config.sessionNonce },
        { name: intro.peerName, nonce: intro.peerNonce },
      );
      this.endBirthday(now, out);
      this.remotes.clear();
      this.checklist.clear();
      this.probes.clear();
      this.seen.clear();
      this.acceptor.reset();
      this.selected = undefined;
      this.nextAcceptedAt = Infinity;
      this.phase = 'checking';
      this.checkStartedAt = now;
      this.introducedAt = now;
      this.lastHeardAt = -Infinity;
      // Session mode: a partner that restarted gets a full timeout again.
      if (previous) this.deadline = Math.max(this.deadline, now + this.config.timeoutMs);
      this.rendezvous.checking(now);
      if (previous) out.push({ type: 'event', event: { type: 'path-lost', previous: this.result(previous, this.selectedAt), reason: 'partner-restarted' } });
    } else {
      this.intro = intro; // same session: the partner's NAT finding or candidates may have been updated
    }
    this.addRemote({ kind: 'srflx', priority: candidatePriority('srflx'), endpoint: intro.peerMapped }, true, now);
    // A `predicted` candidate is the partner's signal that its birthday sockets are open, not an address to check.
    for (const c of intro.peerCandidates) if (c.kind !== 'predicted') this.addRemote(c, true, now);
    if (isNew) {
      const candidates = [...this.remotes.values()].map((c) => c.endpoint);
      out.push({ type: 'event', event: { type: 'introduced', peer: intro.peerName, candidates, intro, sameNat: this.sameNat() } });
    }
    this.sendDueChecks(now, out);
    this.maybeBirthday(now, out);
  }

  private onPeerMessage(msg: PeerMessage, transport: TransportId, from: Endpoint, data: Uint8Array, stun: StunMessage, now: number, out: PunchAction[]): void {
    if (!this.probeKeys) {
      this.drop(transport, from, `${msg.kind} before the introduction`, out);
      return;
    }
    if (verifyIntegrity(data, stun, this.probeKeys.receive) !== 'valid') {
      this.drop(transport, from, `${msg.kind} failed authentication (another session, pair or secret)`, out);
      return;
    }
    if (!this.rendezvous.isFresh(msg.timestamp, now)) {
      this.drop(transport, from, `stale ${msg.kind}`, out);
      return;
    }
    this.lastHeardAt = now;
    switch (msg.kind) {
      case 'probe':
        this.onProbe(msg, transport, from, now, out);
        return;
      case 'probe-ok':
        this.onProbeOk(msg, transport, from, now, out);
        return;
      case 'close':
        this.onClose(transport, from, now, out);
        return;
      default: {
        const never: never = msg;
        throw new Error(`unknown message ${String(never)}`);
      }
    }
  }

  private onProbe(msg: Extract<BurrowMessage, { kind: 'probe' }>, transport: TransportId, from: Endpoint, now: number, out: PunchAction[]): void {
    if (!this.isOurs(msg.destination.address)) {
      this.drop(transport, from, `probe addressed to ${msg.destination.address}, not to us (re-sent by a third host?)`, out);
      return;
    }
    if (!this.seen.firstTime(msg.txid)) {
      this.drop(transport, from, 'replayed probe', out);
      return;
    }
    const known = this.remotes.get(from);
    if (this.relayPolicy === 'only' && this.transports.get(transport)?.kind !== 'relay' && known?.kind !== 'relayed') {
      // Not a relayed pair: answering would validate a direct path for the partner (and reveal this address).
      this.drop(transport, from, 'probe on a direct path while relayed paths only were asked for', out);
      return;
    }
    this.stats.probesHeard++;
    const active = this.phase === 'checking' || this.phase === 'connected';
    if (this.hard?.ids.has(transport)) this.hardHit(transport, out);
    let remote = known;
    if (!remote && active && this.hasFamily(from.address)) remote = this.remotes.addPeerReflexive(from);
    // A peer-reflexive candidate is paired only with the transport it arrived on (RFC 8445 section 7.3.1.4); a known
    // candidate arriving on a pair we lack (a frozen birthday socket, a new transport) gets that pair now.
    const local = this.transports.get(transport);
    const pair = remote && local ? (active ? this.checklist.add(local, remote, now) : this.checklist.get(transport, from)) : undefined;
    if (pair && active) this.noteBirthdayPair(pair, now, out);
    const accepted = (msg.flags & ProbeFlag.ACCEPTED) !== 0;
    const nominated = (msg.flags & ProbeFlag.NOMINATE) !== 0;
    // ACCEPTED counts only on a pair we validated ourselves, or from one of the partner's addresses the server told
    // us (its authenticated introduction): a raced copy of this probe from a third host arrives from an address that
    // is neither, so it is treated as an ordinary probe. (An ACCEPTED probe from an introduced address proves both
    // directions: the partner heard our nomination on this pair and we hear it. Waiting for our own validation instead
    // could leave us alone when heavy loss eats every answer that would validate it.)
    const vouched = pair !== undefined && (pair.state === 'succeeded' || pair.remote.introduced);
    if (this.controlling && accepted && vouched) {
      if (this.phase === 'checking') {
        // The controlled side validated a pair we nominated and says so: it heard us and we hear it.
        this.respond(msg, transport, from, 0, out);
        this.checklist.answered(pair, now);
        this.connectControlling(pair, now, out);
        return;
      }
      if (this.phase === 'connected' && pair.nominated && this.nominates(pair, now)) {
        this.respond(msg, transport, from, 0, out);
        this.checklist.answered(pair, now);
        if (pair !== this.selected) this.select(pair, now, out);
        return;
      }
    }
    let flags = 0;
    if (!this.controlling && nominated && pair) flags = this.onNominated(pair, now, out);
    this.respond(msg, transport, from, flags, out);
    // Triggered check (RFC 8445 section 7.3.1.4): probe straight back, unless that pair is already settled.
    if (pair && active && (pair.state !== 'succeeded' || this.controlling) && now - pair.lastCheckAt >= TRIGGER_GAP_MS) {
      this.sendCheck(pair, now, out);
    }
  }

  /** Controlled side: the partner nominated `pair`. Returns the flags for our answer. */
  private onNominated(pair: Pair, now: number, out: PunchAction[]): number {
    if (this.phase === 'accepted') {
      if (pair !== this.selected) return 0;
      this.lingerUntil = now + this.timing.lingerMs;
      return ProbeFlag.ACCEPTED;
    }
    if (this.phase === 'connected' && pair === this.selected) return ProbeFlag.ACCEPTED;
    if (this.phase !== 'checking' && this.phase !== 'connected') return 0;
    // Session mode: a late copy of an older nomination must not move us to a worse path than the one in use.
    if (this.phase === 'connected' && this.selected && PATH_RANK[pair.path] > PATH_RANK[this.selected.path]) return 0;
    if (this.acceptor.onNominated(pair) === 'pending') return 0;
    this.accept(pair, now, out);
    return ProbeFlag.ACCEPTED;
  }

  private respond(msg: Extract<BurrowMessage, { kind: 'probe' }>, transport: TransportId, to: Endpoint, flags: number, out: PunchAction[]): void {
    if (!this.probeKeys) return;
    const reply: BurrowMessage = { kind: 'probe-ok', txid: msg.txid, timestamp: msg.timestamp, flags, mapped: to };
    out.push({ type: 'send', transport, to, data: encodeMessage(reply, { key: this.probeKeys.send }) });
  }

  private onProbeOk(msg: Extract<BurrowMessage, { kind: 'probe-ok' }>, transport: TransportId, from: Endpoint, now: number, out: PunchAction[]): void {
    let pending = this.probes.claim(msg.txid, transport, from, 'probe');
    let birthdayHit = false;
    if (!pending) {
      pending = this.probes.claim(msg.txid, transport, from, 'birthday');
      birthdayHit = pending !== undefined;
    }
    if (!pending) {
      this.drop(transport, from, 'probe answer for no outstanding probe, or from another address', out);
      return;
    }
    if (this.phase !== 'checking' && this.phase !== 'connected') return;
    if (!this.isOurs(msg.mapped.address)) {
      this.drop(transport, from, `answer says our probe came from ${msg.mapped.address}, which is not us (relayed by a third host?)`, out);
      return;
    }
    this.stats.answersHeard++;
    if (birthdayHit) {
      // A guessed port answered: it becomes a candidate of the partner's, paired with the socket that probed only.
      const remote = this.remotes.add('predicted', from, candidatePriority('predicted'), false) ?? this.remotes.get(from);
      const local = this.transports.get(transport);
      const hit = remote && local ? this.checklist.add(local, remote, now) : undefined;
      if (hit) this.noteBirthdayPair(hit, now, out);
    }
    const pair = this.checklist.get(transport, from);
    if (!pair) return;
    if (this.checklist.answered(pair, now)) {
      if (this.easy) this.noteBirthdayPair(pair, now, out);
      out.push({ type: 'event', event: { type: 'path-valid', remote: from, transport, path: pair.path } });
      if (this.phase === 'connected') pair.nextCheckAt = now + this.timing.consentIntervalMs;
    }
    // The controlled side's repeated acceptance was heard: the controlling side has it.
    if ((pending.flags & ProbeFlag.ACCEPTED) !== 0 && pair === this.selected) this.acceptConfirmed = true;
    if (this.controlling) {
      const acceptedNomination = (pending.flags & ProbeFlag.NOMINATE) !== 0 && (msg.flags & ProbeFlag.ACCEPTED) !== 0;
      if (acceptedNomination && this.phase === 'checking') this.connectControlling(pair, now, out);
      else if (acceptedNomination && pair !== this.selected && this.nominates(pair, now)) this.select(pair, now, out);
      else if (pair !== this.selected && this.nominates(pair, now)) this.sendCheck(pair, now, out); // nominate this pair straight away
      return;
    }
    if (this.acceptor.onValidated(pair)) {
      this.accept(pair, now, out);
      // The partner nominated this pair before we could vouch for it; tell it now rather than make it wait for its
      // next nomination.
      this.sendCheck(pair, now, out, ProbeFlag.ACCEPTED);
    }
  }

  private onClose(transport: TransportId, from: Endpoint, now: number, out: PunchAction[]): void {
    const pair = this.checklist.get(transport, from);
    if (!pair) return;
    if (this.phase === 'accepted' && pair === this.selected) {
      this.finishAccepted(out);
      return;
    }
    if (this.phase === 'connected' && pair.state === 'succeeded') {
      out.push({ type: 'event', event: { type: 'partner-left' } });
      const current = this.selected ?? pair;
      this.finish(out, { type: 'done', result: this.result(current, now) });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Selection and completion.

  /** Controlled side: adopt `pair` (handoff: linger for CLOSE; session: select it). */
  private accept(pair: Pair, now: number, out: PunchAction[]): void {
    this.nextAcceptedAt = now + this.timing.acceptedRepeatMs;
    this.acceptConfirmed = false;
    if (this.phase !== 'connected' && !this.staysOn(pair)) {
      this.phase = 'accepted';
      this.selected = pair;
      this.selectedAt = now;
      this.lingerUntil = now + this.timing.lingerMs;
      this.emitConnected(pair, now, out);
      return;
    }
    this.select(pair, now, out);
  }

  private finishAccepted(out: PunchAction[]): void {
    if (!this.selected) return;
    this.finish(out, { type: 'done', result: this.result(this.selected, this.selectedAt) });
  }

  /** Controlling side: the controlled side accepted our nomination of `pair`. */
  private connectControlling(pair: Pair, now: number, out: PunchAction[]): void {
    if (this.staysOn(pair)) {
      this.select(pair, now, out);
      return;
    }
    if (this.probeKeys) {
      // Two copies: the partner finishes at once on either; if both are lost it finishes after lingerMs.
      for (let i = 0; i < 2; i++) {
        const close: BurrowMessage = { kind: 'close', txid: this.config.randomBytes(TRANSACTION_ID_LENGTH), timestamp: this.rendezvous.serverTime(now) };
        out.push({ type: 'send', transport: pair.transport.id, to: pair.remote.endpoint, data: encodeMessage(close, { key: this.probeKeys.send }) });
      }
    }
    this.emitConnected(pair, now, out);
    this.finish(out, { type: 'done', result: this.result(pair, now) });
  }

  /** Whether agreeing on `pair` starts a session (rather than a handoff): session mode, or a relayed pair in auto mode. */
  private staysOn(pair: Pair): boolean {
    return this.mode === 'session' || (this.mode === 'auto' && pair.path === 'relay');
  }

  /** Session mode: `pair` becomes the path (the first one, or a move). */
  private select(pair: Pair, now: number, out: PunchAction[]): void {
    const previous = this.selected;
    const wasConnected = this.phase === 'connected';
    this.selected = pair;
    this.selectedAt = now;
    this.phase = 'connected';
    if (!wasConnected) {
      this.emitConnected(pair, now, out);
      return;
    }
    const reason: PathChangeReason = previous && PATH_RANK[pair.path] < PATH_RANK[previous.path] ? 'upgrade' : 'renominated';
    out.push({ type: 'event', event: { type: 'path-changed', previous: previous && this.result(previous, now), result: this.result(pair, now), reason } });
  }

  /** Session mode: the selected pair failed or went away; fall back to the best valid pair, if any. */
  private selectionLost(lost: Pair, reason: 'consent-lost' | 'transport-closed', now: number, out: PunchAction[]): void {
    const previous = this.result(lost, now);
    const next = this.checklist.bestValid((p) => p !== lost);
    this.selected = next;
    if (!next) {
      this.nextAcceptedAt = Infinity;
      out.push({ type: 'event', event: { type: 'path-lost', previous, reason } });
      return;
    }
    this.selectedAt = now;
    out.push({ type: 'event', event: { type: 'path-changed', previous, result: this.result(next, now), reason } });
    if (this.controlling) this.sendCheck(next, now, out); // nominates it, so the partner follows
  }

  private emitConnected(pair: Pair, now: number, out: PunchAction[]): void {
    const result = this.result(pair, now);
    out.push({ type: 'event', event: { type: 'connected', remote: pair.remote.endpoint, path: pair.path, transport: pair.transport.id, result } });
  }

  private result(pair: Pair, at: number): PunchResult {
    return {
      localAddress: pair.transport.local.address,
      localPort: pair.transport.local.port,
      remoteAddress: pair.remote.endpoint.address,
      remotePort: pair.remote.endpoint.port,
      path: pair.path,
      elapsedMs: at - this.startedAt,
      peer: this.config.peer,
      transport: pair.transport.id,
      ...birthdayOf(this.birthdayPairs.get(pair.key)),
    };
  }

  /** Session mode: end it (CLOSE to the partner, outcome to the server). Before a path exists: aborted. */
  private close(now: number, out: PunchAction[]): void {
    if (this.phase !== 'connected' || !this.selected) {
      this.finish(out, { type: 'fail', error: BurrowError.aborted() });
      return;
    }
    if (this.probeKeys) {
      const close: BurrowMessage = { kind: 'close', txid: this.config.randomBytes(TRANSACTION_ID_LENGTH), timestamp: this.rendezvous.serverTime(now) };
      out.push({ type: 'send', transport: this.selected.transport.id, to: this.selected.remote.endpoint, data: encodeMessage(close, { key: this.probeKeys.send }) });
    }
    this.finish(out, { type: 'done', result: this.result(this.selected, now) });
  }

  /** The caller cancelled: in session mode the partner hears CLOSE; the registration is withdrawn; the run fails ABORTED. */
  private abort(now: number, out: PunchAction[]): void {
    if (this.phase === 'connected' && this.selected && this.probeKeys) {
      const close: BurrowMessage = { kind: 'close', txid: this.config.randomBytes(TRANSACTION_ID_LENGTH), timestamp: this.rendezvous.serverTime(now) };
      out.push({ type: 'send', transport: this.selected.transport.id, to: this.selected.remote.endpoint, data: encodeMessage(close, { key: this.probeKeys.send }) });
    }
    this.finish(out, { type: 'fail', error: BurrowError.aborted() });
  }

  private finish(out: PunchAction[], action: Extract<PunchAction, { type: 'done' | 'fail' }>): void {
    // The withdrawal (an outcome report) goes out before the result, so the driver sends it before it closes the
    // transport. A rejected secret withdraws nothing (the server could not read it).
    if (this.phase !== 'idle' && !(action.type === 'fail' && action.error.code === 'AUTH_FAILED')) {
      const outcome: Outcome = action.type === 'done' || this.phase === 'connected' ? 'connected' : this.intro && action.error.code === 'NO_PATH' ? 'failed' : 'withdrawn';
      this.rendezvous.report(outcome, this.lastNow, out);
    }
    this.releaseBirthdayGate();
    this.phase = 'finished';
    this.rendezvous.stop();
    this.natProbe.cancel();
    this.probes.clear();
    out.push(action);
  }

  private failAtDeadline(out: PunchAction[]): void {
    this.finish(out, { type: 'fail', error: punchFailureError(this.failure()) });
  }

  // -------------------------------------------------------------------------------------------
  // Birthday probing (birthday.ts): the hard side's sockets, the easy side's probes, the process-wide gate.

  /** The pair as the gate knows it: both names (sorted) within the network. */
  private get birthdayPairId(): string {
    return `${this.config.keys.networkIdHex}|${[this.config.name, this.config.peer].sort().join('|')}`;
  }

  /** Whether a birthday attempt may start now: before a path, or while the path in use is relayed (an upgrade). */
  private birthdayPhase(): boolean {
    return this.phase === 'checking' || (this.phase === 'connected' && this.selected?.path === 'relay');
  }

  private randomInt(n: number): number {
    return Buffer.from(this.config.randomBytes(4)).readUInt32BE(0) % n;
  }

  private birthdayEvent(out: PunchAction[], role: 'easy' | 'hard', attempt: number, phase: Extract<PunchEvent, { type: 'birthday' }>['phase'], count: number, detail?: string): void {
    out.push({ type: 'event', event: { type: 'birthday', role, attempt, phase, count, ...(detail !== undefined ? { detail } : {}) } });
  }

  /** Starts an attempt when both NAT findings call for one, and nothing holds it back. */
  private maybeBirthday(now: number, out: PunchAction[]): void {
    const o = this.birthdayOptions;
    if (!o || !this.intro || !this.probeKeys || this.relayPolicy === 'only' || !this.birthdayPhase()) return;
    const ours = { mapping: this.natProbe.mapping, filtering: this.natProbe.filtering };
    const theirs = { mapping: this.intro.peerMapping, filtering: this.intro.peerFiltering ?? 'unknown' };
    if (birthdayRole(ours, theirs) === 'hard') this.maybeHard(o, now, out);
    else if (ours.mapping !== 'endpoint-dependent') this.maybeEasy(o, now, out);
  }

  private maybeHard(o: BirthdayOptions, now: number, out: PunchAction[]): void {
    if (this.hard || now < this.hardNextAt || !this.intro || !this.rendezvous.mapped) return;
    const attempt = this.hardAttempts + 1;
    const tag = `${Buffer.from(this.config.sessionNonce).toString('hex')}#${attempt}`;
    const got = this.gate.acquire(this.birthdayPairId, tag, now);
    if (!got.ok) {
      this.hardNextAt = got.retryAt;
      this.birthdayEvent(out, 'hard', attempt, 'deferred', 0, got.reason === 'busy' ? 'another birthday attempt of this process is under way' : `at most one attempt per ${o.cooldownMs / 1000} s with one peer`);
      return;
    }
    this.hardAttempts = attempt;
    this.hard = { attempt, tag, startedAt: now, ids: new Set(), opened: 0, endsAt: Infinity, winner: undefined, released: false };
    this.hardNextAt = now + o.cooldownMs;
    // One byte: it only has to open a mapping in our NAT, and it dies (low TTL) before the partner's.
    this.birthdayEvent(out, 'hard', attempt, 'opening', o.sockets);
    out.push({ type: 'birthday-open', attempt, sockets: o.sockets, ttl: o.ttl, to: this.intro.peerMapped, data: Uint8Array.of(0), prefix: `bd${attempt}.` });
  }

  /** The driver opened the hard side's sockets: they wait, silent, for a probe; the partner is told to probe. */
  private hardOpened(attempt: number, specs: readonly TransportSpec[], error: string | undefined, now: number, out: PunchAction[]): void {
    const h = this.hard;
    if (!h || h.attempt !== attempt || !this.birthdayOptions) {
      if (specs.length > 0) out.push({ type: 'birthday-close', transports: specs.map((t) => t.id) });
      return;
    }
    if (specs.length === 0) {
      this.endHard(now, out, error ?? 'no socket could be opened');
      return;
    }
    for (const spec of specs) {
      if (this.transports.has(spec.id)) continue;
      this.transports.set(spec.id, new LocalTransport({ ...spec, checks: 'passive' }));
      h.ids.add(spec.id);
    }
    h.opened = h.ids.size;
    this.birthdayStats.role = 'hard';
    this.birthdayStats.attempts++;
    this.birthdayStats.count += h.opened;
    h.endsAt = now + hardWindowMs(this.birthdayOptions);
    this.readvertise(now, out);
    this.birthdayEvent(out, 'hard', attempt, 'open', h.opened, error);
  }

  /** A verified probe arrived on one of the hard side's sockets: it wins, the others close now. */
  private hardHit(transport: TransportId, out: PunchAction[]): void {
    const h = this.hard;
    if (!h || h.winner !== undefined) return;
    h.winner = transport;
    const others = [...h.ids].filter((id) => id !== transport);
    for (const id of others) this.forgetTransport(id);
    h.ids = new Set([transport]);
    if (others.length > 0) out.push({ type: 'birthday-close', transports: others });
    this.releaseHard();
    this.birthdayEvent(out, 'hard', h.attempt, 'won', h.opened, `local port ${this.transports.get(transport)?.local.port ?? '?'}`);
  }

  /** The hard side's attempt ends without a hit: its sockets close, the partner is told to stop. */
  private endHard(now: number, out: PunchAction[], why: string): void {
    const h = this.hard;
    if (!h) return;
    const ids = [...h.ids];
    for (const id of ids) this.forgetTransport(id);
    if (ids.length > 0) out.push({ type: 'birthday-close', transports: ids });
    this.releaseHard();
    this.hard = undefined;
    this.readvertise(now, out);
    this.birthdayEvent(out, 'hard', h.attempt, 'gave-up', h.opened, why);
  }

  private releaseHard(): void {
    if (!this.hard || this.hard.released) return;
    this.hard.released = true;
    this.gate.release(this.hard.tag);
  }

  private releaseEasy(): void {
    if (!this.easy || this.easy.released) return;
    this.easy.released = true;
    this.gate.release(this.easy.tag);
  }

  /** The easy side: the partner's sockets are open (its `predicted` signal); probe its IP on random ports. */
  private maybeEasy(o: BirthdayOptions, now: number, out: PunchAction[]): void {
    const signal = this.intro?.peerCandidates.find((c) => c.kind === 'predicted');
    if (!signal || !this.intro || signal.endpoint.port <= this.easyAttempt) return;
    if (this.easy && !this.easy.released) return;
    const attempt = signal.endpoint.port;
    const target = signal.endpoint.address;
    // Probing must start while the partner's sockets still wait: within its window less the probing time.
    const probingMs = Math.ceil((o.probes / o.ratePerSecond) * 1000);
    const tag = `${Buffer.from(this.intro.peerNonce).toString('hex')}#${attempt}`;
    const got = this.gate.acquire(this.birthdayPairId, tag, now);
    if (!got.ok) {
      const until = this.easyDeferredUntil?.attempt === attempt ? this.easyDeferredUntil.until : now + hardWindowMs(o) - probingMs;
      if (got.retryAt > until) {
        this.easyAttempt = attempt;
        this.easyDeferred = undefined;
        this.birthdayEvent(out, 'easy', attempt, 'gave-up', 0, got.reason === 'busy' ? 'another birthday attempt of this process is under way' : `at most one attempt per ${o.cooldownMs / 1000} s with one peer`);
        return;
      }
      if (this.easyDeferred?.attempt !== attempt) this.birthdayEvent(out, 'easy', attempt, 'deferred', 0, got.reason);
      this.easyDeferred = { attempt, at: got.retryAt, until };
      this.easyDeferredUntil = { attempt, until };
      return;
    }
    this.easyAttempt = attempt;
    this.easyDeferred = undefined;
    const prober = new BirthdayProber(attempt, target, now, o, (n) => this.randomInt(n));
    this.easy = { prober, tag, lastSentAt: now, hit: false, released: false };
    this.birthdayStats.role = 'easy';
    this.birthdayStats.attempts++;
    this.birthdayEvent(out, 'easy', attempt, 'probing', o.probes, target);
    this.sendBirthdayProbes(now, out);
  }

  private sendBirthdayProbes(now: number, out: PunchAction[]): void {
    const e = this.easy;
    if (!e || e.hit || e.released || !this.probeKeys) return;
    const ports = e.prober.due(now);
    for (const port of ports) {
      const to: Endpoint = { address: e.prober.target, port };
      const txid = this.config.randomBytes(TRANSACTION_ID_LENGTH);
      const msg: BurrowMessage = { kind: 'probe', txid, timestamp: this.rendezvous.serverTime(now), flags: 0, destination: to };
      this.probes.track(txid, { transport: this.rendezvousTransport, to, purpose: 'birthday', flags: 0 });
      out.push({ type: 'send', transport: this.rendezvousTransport, to, data: encodeMessage(msg, { key: this.probeKeys.send }) });
    }
    if (ports.length > 0) e.lastSentAt = now;
    this.birthdayStats.count += ports.length;
  }

  /** A pair that birthday probing found is marked so (its result says so); on the easy side the first one ends probing. */
  private noteBirthdayPair(pair: Pair, now: number, out: PunchAction[]): void {
    if (this.birthdayPairs.has(pair.key)) return;
    const h = this.hard;
    if (h?.winner === pair.transport.id) {
      this.birthdayPairs.set(pair.key, { role: 'hard', probes: h.opened });
      return;
    }
    const e = this.easy;
    const r = pair.remote;
    if (!e || pair.transport.id !== this.rendezvousTransport || r.endpoint.address !== e.prober.target) return;
    // A guessed port that answered (or whose socket probed us first); or the partner's server-reflexive address, when
    // one of its birthday sockets happens to have been given that very port toward us (the NAT may reuse a port for
    // another destination): its main socket's mapping toward the server cannot reach us through its filter.
    const guessed = (r.kind === 'predicted' || r.kind === 'prflx') && e.prober.probed.has(r.endpoint.port);
    if (!guessed && !(r.kind === 'srflx' && !e.released && pair.state === 'succeeded')) return;
    this.birthdayPairs.set(pair.key, { role: 'easy', probes: e.prober.sent });
    if (e.hit) return;
    e.hit = true;
    e.prober.stop(now);
    this.releaseEasy();
    this.birthdayEvent(out, 'easy', e.prober.attempt, 'won', e.prober.sent, endpointKey(r.endpoint));
  }

  private birthdayTimer(now: number, out: PunchAction[]): void {
    if (this.hard && this.hard.winner === undefined && now >= this.hard.endsAt) this.endHard(now, out, 'no probe arrived');
    const e = this.easy;
    if (e && !e.released) {
      this.sendBirthdayProbes(now, out);
      if (e.prober.done && !e.hit && now >= e.lastSentAt + EASY_LINGER_MS) {
        this.releaseEasy();
        this.birthdayEvent(out, 'easy', e.prober.attempt, 'gave-up', e.prober.sent, 'no probe was answered');
      }
    }
    if (this.easyDeferred && now >= this.easyDeferred.at) {
      // Ask the gate again (maybeEasy defers once more, starts, or gives up; if the signal is gone, nothing).
      this.easyDeferred = undefined;
      this.maybeBirthday(now, out);
    }
    if (!this.hard && this.hardNextAt > 0 && now >= this.hardNextAt) this.maybeBirthday(now, out);
  }

  private birthdayTimeoutAt(): number {
    const now = this.lastNow;
    let next = Infinity;
    if (this.hard && this.hard.winner === undefined) next = Math.min(next, this.hard.endsAt);
    const e = this.easy;
    if (e && !e.released) next = Math.min(next, e.prober.done ? e.lastSentAt + EASY_LINGER_MS : e.prober.nextTimeoutAt(now) ?? Infinity);
    if (this.easyDeferred) next = Math.min(next, this.easyDeferred.at);
    if (!this.hard && this.hardNextAt > now && this.birthdayOptions) next = Math.min(next, this.hardNextAt);
    return next;
  }

  /** A new partner session (or the end): every attempt ends; the partner's attempt numbers start afresh. */
  private endBirthday(now: number, out: PunchAction[]): void {
    if (this.hard) this.endHard(now, out, 'the partner restarted');
    this.releaseEasy();
    this.easy = undefined;
    this.easyAttempt = 0;
    this.easyDeferred = undefined;
    this.birthdayPairs.clear();
  }

  private releaseBirthdayGate(): void {
    this.releaseHard();
    this.releaseEasy();
  }

  /** Forgets a local transport the agent itself retires (a birthday socket that lost). */
  private forgetTransport(id: TransportId): void {
    this.transports.delete(id);
    this.checklist.removeTransport(id);
    this.probes.dropTransport(id);
  }

  /** What the attempt reached, as data (failure.ts). */
  failure(): PunchFailure {
    const stage = !this.rendezvous.registered ? 'no-server' : !this.intro ? 'no-partner' : 'no-path';
    return {
      kind: 'punch-failure',
      stage,
      transport: 'udp',
      server: this.rendezvous.serverList.map(endpointKey).join(', '),
      peer: this.config.peer,
      seconds: Math.round(this.config.timeoutMs / 100) / 10,
      registerAttempts: this.rendezvous.attempts,
      nat: {
        ours: this.natProbe.mapping,
        theirs: this.intro?.peerMapping ?? 'unknown',
        oursAllocation: this.natProbe.allocation,
        theirsAllocation: this.intro?.peerAllocation ?? 'unknown',
        ...(this.natProbe.filtering !== 'unknown' ? { oursFiltering: this.natProbe.filtering } : {}),
        ...(this.intro?.peerFiltering !== undefined ? { theirsFiltering: this.intro.peerFiltering } : {}),
      },
      probes: { sent: this.stats.probesSent, heard: this.stats.probesHeard, answersHeard: this.stats.answersHeard, candidates: this.remotes.size },
      ...(this.birthdayStats.attempts > 0 && this.birthdayStats.role ? { birthday: { role: this.birthdayStats.role, attempts: this.birthdayStats.attempts, count: this.birthdayStats.count } } : {}),
      pairs: this.checklist.all().map((p) => ({
        transport: p.transport.id,
        remote: endpointKey(p.remote.endpoint),
        remoteKind: p.remote.kind,
        path: p.path,
        state: p.state,
        checks: p.checks,
      })),
    };
  }
}

