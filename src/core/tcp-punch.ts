/**
 * The TCP punch, sans-IO: rendezvous over a stream to the server, then a TCP path by simultaneous open (RFC 793
 * figure 8), retried until the deadline. The driver (src/node/tcp-punch.ts) performs the connects, the LAN listener
 * and the stream handshakes, and reports their outcomes as inputs; every decision is here.
 *
 * 1. Register over the stream transport to the server (the rendezvous client of the punch agent, with
 *    TRANSPORT=tcp). The server sees our public TCP mapping of the connection's local port P and pushes the
 *    introduction down the same connection, which stays open (it also keeps the mapping alive).
 * 2. Through NATs: from the same port P connect to the partner's public mapping. Both sides do this at once; each
 *    SYN opens the sender's NAT for the other's. An attempt that is refused or reset, fails its handshake, or is not
 *    answered within `attemptMs` is retried `retryMs` later, until the deadline (unlike punchhole's single connect()).
 * 3. Behind one NAT (both public IPs equal; NATs rarely hairpin) the LAN is used instead. There is no NAT to open
 *    there, and a simultaneous open would mostly meet resets, so each side listens on a second port L, advertised as
 *    its host candidate, and the side whose name sorts first connects to the partner's.
 * 4. The first connection whose authenticated handshake completes wins (`secured`); the driver closes the rest.
 */
import { endpointKey, type Endpoint } from '../codec/address.js';
import { decodeMessage, modesCompatible, partnerModeFor, type Introduction, type PeerMode } from '../codec/messages.js';
import { TRANSACTION_ID_LENGTH } from '../codec/stun.js';
import type { NetworkKeys } from '../crypto/keys.js';
import { BurrowError } from '../errors.js';
import { Backoff } from './backoff.js';
import type { ClientMachine, DoneAction, DriverInput, EventAction, FailAction, SendAction, TransportId } from './machine.js';
import { asHostCandidates } from './punch/candidates.js';
import { MIN_CHECKING_FOR_DIAGNOSIS_MS, punchFailureError, type PunchFailure } from './punch/failure.js';
import { RendezvousClient, type RendezvousNote } from './punch/rendezvous-client.js';
import { DEFAULT_TIMING, type PunchEvent, type PunchResult } from './punch/types.js';

export interface TcpPunchTiming {
  /** One connect attempt's budget before it is abandoned. */
  readonly attemptMs: number;
  /** The pause before an attempt that failed is made again. */
  readonly retryMs: number;
  /** REGISTER refresh over the stream (the connection itself keeps the registration; this keeps the clock and NAT). */
  readonly refreshMs: number;
}

export const DEFAULT_TCP_TIMING: TcpPunchTiming = { attemptMs: 400, retryMs: 25, refreshMs: 10_000 };

export interface TcpPunchConfig {
  readonly name: string;
  readonly peer: string;
  readonly keys: NetworkKeys;
  readonly server: Endpoint;
  /**
   * Other servers of the same deployment, moved to when the current one stops answering or its connection closes
   * before the introduction (src/core/server-list.ts). The stream transport follows: a REGISTER addressed to another
   * server makes it connect there, from the same local port.
   */
  readonly fallbacks?: readonly Endpoint[];
  /** The stream transport to the server: REGISTER goes down it, answers and pushes come up it. */
  readonly serverTransport: TransportId;
  /** Our local address, and the local port of the connection to the server: every simultaneous open leaves from it. */
  readonly localAddress: string;
  readonly localPort: number;
  /** Our LAN listener's addresses, with its port (advertised as host candidates). */
  readonly lanHosts: readonly Endpoint[];
  readonly timeoutMs: number;
  readonly sessionNonce: Uint8Array;
  readonly randomBytes: (n: number) => Uint8Array;
  readonly timing?: Partial<TcpPunchTiming>;
  /** What this side runs (`pipe` by default): REGISTER's MODE, checked against the partner's on introduction. */
  readonly purpose?: PeerMode;
}

/** Which connection won: one of our connect attempts, or a connection the LAN listener accepted. */
export type TcpWinner = { readonly attempt: number } | { readonly conn: number };

export interface TcpPunchOutcome {
  readonly result: PunchResult;
  readonly winner: TcpWinner;
}

export type TcpPunchInput =
  | DriverInput
  /** The TCP handshake of attempt `attempt` completed; the stream handshake runs. */
  | { readonly type: 'attempt-connected'; readonly attempt: number; readonly now: number }
  /** Attempt `attempt` was refused or reset, or its stream handshake failed (someone else, not our partner). */
  | { readonly type: 'attempt-failed'; readonly attempt: number; readonly why: 'refused' | 'handshake'; readonly detail: string; readonly now: number }
  /** The LAN listener accepted connection `conn`. */
  | { readonly type: 'incoming'; readonly conn: number; readonly from: Endpoint; readonly now: number }
  | { readonly type: 'incoming-failed'; readonly conn: number; readonly detail: string; readonly now: number }
  /** A stream handshake completed on `winner`, from local port `localPort`. */
  | { readonly type: 'secured'; readonly winner: TcpWinner; readonly localPort: number; readonly now: number };

export type TcpPunchAction =
  | SendAction
  | EventAction<PunchEvent>
  | DoneAction<TcpPunchOutcome>
  | FailAction
  /** Connect from `fromPort` (0: any) to `target`, then run the stream handshake with `context`. */
  | { readonly type: 'connect'; readonly attempt: number; readonly target: Endpoint; readonly fromPort: number; readonly context: Uint8Array }
  /** Attempt `attempt` used up its budget unanswered: destroy it. */
  | { readonly type: 'abandon'; readonly attempt: number }
  /** Run the stream handshake on accepted connection `conn`. */
  | { readonly type: 'secure-incoming'; readonly conn: number; readonly context: Uint8Array }
  /** Close accepted connection `conn`: nobody is expected (yet). */
  | { readonly type: 'reject-incoming'; readonly conn: number };

/** The actions the driver performs itself (connections and handshakes), as opposed to the generic ones. */
export type TcpIoAction = Extract<TcpPunchAction, { readonly type: 'connect' | 'abandon' | 'secure-incoming' | 'reject-incoming' }>;

interface Attempt {
  readonly target: Endpoint;
  readonly fromPort: number;
  readonly lan: boolean;
  /** Unanswered after this, it is abandoned; undefined once the TCP handshake completed. */
  budgetEndsAt: number | undefined;
}

interface Plan {
  readonly context: Uint8Array;
  readonly peerPublic: Endpoint;
  /** This side accepts the partner's LAN connection instead of connecting. */
  readonly acceptLan: boolean;
}

export class TcpPunchMachine implements ClientMachine<TcpPunchInput, TcpPunchAction> {
  private readonly timing: TcpPunchTiming;
  private readonly rendezvous: RendezvousClient;
  private readonly retry: Backoff;
  private phase: 'idle' | 'registering' | 'connecting' | 'finished' = 'idle';
  private startedAt = 0;
  private deadline = 0;
  private intro: Introduction | undefined;
  private plan: Plan | undefined;
  private nextAttempt = 1;
  private readonly attempts = new Map<number, Attempt>();
  private readonly retries: { at: number; target: Endpoint; fromPort: number; lan: boolean }[] = [];
  private readonly incoming = new Map<number, { from: Endpoint; lan: boolean }>();
  private readonly stats = { attempts: 0, refused: 0, timedOut: 0, handshakesFailed: 0, lastError: '' };
  /** The time of the latest input (the withdrawal's timestamp), and of the introduction. */
  private lastNow = 0;
  private introducedAt = 0;
  /** The server said the partner left (withdrew, or its connection closed) while we were connecting. */
  private partnerGone: 'withdrew' | undefined;

  constructor(private readonly config: TcpPunchConfig) {
    this.timing = { ...DEFAULT_TCP_TIMING, ...config.timing };
    this.retry = Backoff.constant(this.timing.retryMs);
    this.rendezvous = new RendezvousClient({
      name: config.name,
      peer: config.peer,
      keys: config.keys,
      server: config.server,
      ...(config.fallbacks ? { fallbacks: config.fallbacks } : {}),
      transport: config.serverTransport,
      wire: 'tcp',
      sessionNonce: config.sessionNonce,
      newTxid: () => config.randomBytes(TRANSACTION_ID_LENGTH),
      timing: { ...DEFAULT_TIMING, waitingRefreshMs: this.timing.refreshMs, checkingRefreshMs: this.timing.refreshMs },
      mode: config.purpose ?? 'pipe',
    });
  }

  get isFinished(): boolean {
    return this.phase === 'finished';
  }

  nextTimeoutAt(): number | undefined {
    if (this.phase === 'idle' || this.phase === 'finished') return undefined;
    let next = Math.min(this.deadline, this.rendezvous.nextTimeoutAt() ?? Infinity);
    for (const a of this.attempts.values()) if (a.budgetEndsAt !== undefined) next = Math.min(next, a.budgetEndsAt);
    for (const r of this.retries) next = Math.min(next, r.at);
    return next;
  }

  handle(input: TcpPunchInput): TcpPunchAction[] {
    const out: TcpPunchAction[] = [];
    if (this.phase === 'finished') return out;
    this.lastNow = input.now;
    switch (input.type) {
      case 'start':
        if (this.phase !== 'idle') break;
        this.phase = 'registering';
        this.startedAt = input.now;
        this.deadline = input.now + this.config.timeoutMs;
        this.rendezvous.start(input.now, asHostCandidates(this.config.lanHosts), out);
        break;
      case 'timer':
        this.onTimer(input.now, out);
        break;
      case 'datagram':
        this.onDatagram(input.transport, input.from, input.data, input.now, out);
        break;
      case 'transport-closed':
        // Before the introduction the server is all we have (with others to move to, the next timer moves on);
        // afterwards its connection only kept the registration.
        if (input.transport === this.config.serverTransport && !this.plan) {
          if (this.rendezvous.hasFallbacks) {
            this.rendezvous.serverLost(input.now);
            break;
          }
          const seconds = Math.round((input.now - this.startedAt) / 100) / 10;
          this.finish(out, { type: 'fail', error: BurrowError.serverUnreachable(endpointKey(this.rendezvous.server), 1, seconds) });
        }
        break;
      case 'attempt-connected': {
        const a = this.attempts.get(input.attempt);
        if (a) a.budgetEndsAt = undefined;
        break;
      }
      case 'attempt-failed':
        this.attemptFailed(input.attempt, input.why === 'refused' ? 'refused' : 'handshake', input.detail, input.now);
        this.settleIfGone(out);
        break;
      case 'incoming':
        if (this.plan?.acceptLan) {
          this.incoming.set(input.conn, { from: input.from, lan: input.from.address !== this.plan.peerPublic.address });
          out.push({ type: 'secure-incoming', conn: input.conn, context: this.plan.context });
        } else {
          out.push({ type: 'reject-incoming', conn: input.conn }); // not expecting anyone (yet): never hold a connection we will not use
        }
        break;
      case 'incoming-failed':
        this.incoming.delete(input.conn);
        this.stats.handshakesFailed++;
        this.stats.lastError = input.detail;
        this.settleIfGone(out);
        break;
      case 'secured':
        this.secured(input.winner, input.localPort, input.now, out);
        break;
      case 'abort':
        this.finish(out, { type: 'fail', error: BurrowError.aborted() });
        break;
      default: {
        const never: never = input;
        throw new Error(`unknown input ${String(never)}`);
      }
    }
    return out;
  }

  private onTimer(now: number, out: TcpPunchAction[]): void {
    if (now >= this.deadline) {
      const gone = this.partnerGone;
      this.finish(out, { type: 'fail', error: gone !== undefined ? BurrowError.peerLeft(this.config.peer, endpointKey(this.rendezvous.server), gone) : punchFailureError(this.failure()) });
      return;
    }
    for (const note of this.rendezvous.onTimer(now, out)) this.onRendezvous(note, now, out);
    if (this.phase === 'finished') return;
    for (const [id, a] of this.attempts) {
      if (a.budgetEndsAt === undefined || now < a.budgetEndsAt) continue;
      out.push({ type: 'abandon', attempt: id });
      this.attemptFailed(id, 'timeout', 'no answer', now);
    }
    for (const r of [...this.retries]) {
      if (now < r.at) continue;
      this.retries.splice(this.retries.indexOf(r), 1);
      this.connect(r.target, r.fromPort, r.lan, now, out);
    }
    this.settleIfGone(out);
  }

  private onDatagram(transport: TransportId, from: Endpoint, data: Uint8Array, now: number, out: TcpPunchAction[]): void {
    const decoded = decodeMessage(data);
    if (!decoded.ok || !this.rendezvous.isFromServer(transport, from)) {
      out.push({ type: 'event', event: { type: 'dropped', from, transport, reason: decoded.ok ? `${decoded.msg.kind} not from the server` : `malformed: ${decoded.reason}` } });
      return;
    }
    const msg = decoded.msg;
    if (msg.kind !== 'register-ok' && msg.kind !== 'error' && msg.kind !== 'introduce' && msg.kind !== 'notice') {
      out.push({ type: 'event', event: { type: 'dropped', from, transport, reason: `unexpected ${msg.kind}` } });
      return;
    }
    for (const note of this.rendezvous.handle(msg, data, decoded.stun, now, out)) this.onRendezvous(note, now, out);
  }

  private onRendezvous(note: RendezvousNote, now: number, out: TcpPunchAction[]): void {
    switch (note.type) {
      case 'registered':
        if (note.first) out.push({ type: 'event', event: { type: 'registered', mapped: note.mapped } });
        return;
      case 'partner-gone':
        // The partner's connection to the server closed (it ended, or was killed: its kernel closed the connection), or
        // it withdrew. Before a connection won, that ends the attempt: it left.
        // A connection that is up and being secured may still win (the partner closes its server connection the moment
        // its side of the handshake completes), so with one in flight the verdict waits for it (`settleIfGone`).
        if (this.intro && this.phase === 'connecting' && Buffer.from(note.peerNonce).equals(this.intro.peerNonce)) {
          if (note.outcome === 'failed' && now - this.introducedAt >= MIN_CHECKING_FOR_DIAGNOSIS_MS) {
            this.finish(out, { type: 'fail', error: punchFailureError(this.failure()) });
            return;
          }
          this.partnerGone = 'withdrew';
          this.settleIfGone(out);
        }
        return;
      case 'introduced':
        this.introduced(note.intro, now, out);
        return;
      case 'failed':
        this.finish(out, { type: 'fail', error: note.error });
        return;
      case 'dropped':
        out.push({ type: 'event', event: { type: 'dropped', from: this.rendezvous.server, transport: this.config.serverTransport, reason: note.reason } });
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

  private introduced(intro: Introduction, now: number, out: TcpPunchAction[]): void {
    if (intro.peerName !== this.config.peer || this.plan) return;
    const mode = this.config.purpose ?? 'pipe';
    if (intro.peerMode !== undefined && !modesCompatible(mode, intro.peerMode)) {
      this.finish(out, { type: 'fail', error: BurrowError.modeMismatch(intro.peerName, intro.peerMode, mode, partnerModeFor(intro.peerMode), partnerModeFor(mode)) });
      return;
    }
    const mapped = this.rendezvous.mapped;
    if (!mapped) return; // the answer with our own mapping comes first; the server re-sends its push until acknowledged
    this.intro = intro;
    this.introducedAt = now;
    this.phase = 'connecting';
    this.rendezvous.checking(now);
    const sameNat = intro.peerMapped.address === mapped.address;
    const weAreLow = this.config.name < this.config.peer;
    const [low, high] = weAreLow ? [this.config.sessionNonce, intro.peerNonce] : [intro.peerNonce, this.config.sessionNonce];
    const context = Buffer.concat([Buffer.from('burrow/v1 tcp'), low, high]);
    const peerPublic = intro.peerMapped;
    // Host candidates carry the LAN listener's port; "lan" unless the address is the public one too (no NAT, e.g. both
    // on one machine).
    const lanTargets = sameNat ? intro.peerCandidates.filter((c) => c.kind === 'host').map((c) => c.endpoint) : [];
    this.plan = { context, peerPublic, acceptLan: lanTargets.length > 0 && !weAreLow };
    const candidates = [peerPublic, ...intro.peerCandidates.map((c) => c.endpoint)];
    out.push({ type: 'event', event: { type: 'introduced', peer: intro.peerName, candidates, intro, sameNat } });
    if (lanTargets.length === 0) this.connect(peerPublic, this.config.localPort, false, now, out);
    else if (weAreLow) for (const target of lanTargets) this.connect(target, 0, target.address !== peerPublic.address, now, out);
  }

  /** The partner has gone: unless a connection is up and being secured, the attempt ends (PEER_LEFT). */
  private settleIfGone(out: TcpPunchAction[]): void {
    if (this.partnerGone === undefined || this.phase !== 'connecting') return;
    const securing = this.incoming.size > 0 || [...this.attempts.values()].some((a) => a.budgetEndsAt === undefined);
    if (!securing) this.finish(out, { type: 'fail', error: BurrowError.peerLeft(this.config.peer, endpointKey(this.rendezvous.server), this.partnerGone) });
  }

  private connect(target: Endpoint, fromPort: number, lan: boolean, now: number, out: TcpPunchAction[]): void {
    if (!this.plan || now >= this.deadline) return;
    const attempt = this.nextAttempt++;
    this.stats.attempts++;
    this.attempts.set(attempt, { target, fromPort, lan, budgetEndsAt: now + this.timing.attemptMs });
    out.push({ type: 'connect', attempt, target, fromPort, context: this.plan.context });
  }

  private attemptFailed(id: number, why: 'refused' | 'timeout' | 'handshake', detail: string, now: number): void {
    const a = this.attempts.get(id);
    if (!a) return;
    this.attempts.delete(id);
    if (why === 'refused') this.stats.refused++;
    else if (why === 'timeout') this.stats.timedOut++;
    else this.stats.handshakesFailed++;
    this.stats.lastError = detail;
    this.retries.push({ at: this.retry.nextAt(now, 1), target: a.target, fromPort: a.fromPort, lan: a.lan });
  }

  private secured(winner: TcpWinner, localPort: number, now: number, out: TcpPunchAction[]): void {
    const via = 'attempt' in winner ? this.attempts.get(winner.attempt) : undefined;
    const inc = 'conn' in winner ? this.incoming.get(winner.conn) : undefined;
    const remote = via?.target ?? inc?.from;
    if (!remote) return;
    const lan = via?.lan ?? inc?.lan ?? false;
    const result: PunchResult = {
      localAddress: this.config.localAddress,
      localPort,
      remoteAddress: remote.address,
      remotePort: remote.port,
      path: lan ? 'lan' : 'direct',
      elapsedMs: now - this.startedAt,
      peer: this.config.peer,
      transport: 'tcp',
    };
    out.push({ type: 'event', event: { type: 'connected', remote, path: result.path, transport: 'tcp', result } });
    this.finish(out, { type: 'done', result: { result, winner } });
  }

  private finish(out: TcpPunchAction[], action: DoneAction<TcpPunchOutcome> | FailAction): void {
    // Withdraw over the server connection before the driver closes it, saying how the attempt ended (the partner then
    // learns whether we found no path either, or left); the connection closing would withdraw us anyway.
    if (this.phase !== 'idle' && !(action.type === 'fail' && action.error.code === 'AUTH_FAILED')) {
      const outcome = action.type === 'done' ? 'connected' : this.intro && action.error.code === 'NO_PATH' ? 'failed' : 'withdrawn';
      this.rendezvous.report(outcome, this.lastNow, out);
    }
    this.phase = 'finished';
    this.rendezvous.stop();
    this.attempts.clear();
    this.retries.length = 0;
    out.push(action);
  }

  /** What the attempt reached, as data (src/core/punch/failure.ts). */
  failure(): PunchFailure {
    const stage = !this.rendezvous.registered ? 'no-server' : !this.intro ? 'no-partner' : 'no-path';
    return {
      kind: 'punch-failure',
      stage,
      transport: 'tcp',
      server: endpointKey(this.rendezvous.server),
      peer: this.config.peer,
      seconds: Math.round(this.config.timeoutMs / 100) / 10,
      registerAttempts: this.rendezvous.attempts,
      nat: { ours: 'unknown', theirs: this.intro?.peerMapping ?? 'unknown' },
      probes: { sent: 0, heard: 0, answersHeard: 0, candidates: 0 },
      pairs: [],
      tcp: { ...this.stats },
    };
  }
}
