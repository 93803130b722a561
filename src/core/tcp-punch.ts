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
 * 5. The stream relay (relay 'auto', the default): when no connection has won `relayAfterMs` (3 s) after the
 *    introduction, and the introducing server offered its built-in relay, a `relay-connect` asks the driver to open the
 *    server's stream relay (src/node/stream-relay-client.ts) and run the same stream handshake over the spliced
 *    connection; direct attempts go on meanwhile. Both sides must take the same connection: a relayed stream that is
 *    secured while a direct connection is still being secured (TCP connected, handshake under way) is held until that
 *    one settles. The direct one wins if it completes; the relay wins once nothing direct is in flight, and no new
 *    direct attempt starts after that. A side only drops a connection its partner may still complete when it has
 *    none in flight, so both pick the same one. With relay 'only' the relay is opened at the introduction and no
 *    direct attempt is made; with 'never' it is never opened. What became of the relay goes into a NO_PATH failure.
 */
import { endpointKey, type Endpoint } from '../codec/address.js';
import { decodeMessage, modesCompatible, partnerModeFor, type Introduction, type PeerMode } from '../codec/messages.js';
import { TRANSACTION_ID_LENGTH } from '../codec/stun.js';
import type { NetworkKeys } from '../crypto/keys.js';
import { BurrowError } from '../errors.js';
import { Backoff } from './backoff.js';
import type { ClientMachine, DoneAction, DriverInput, EventAction, FailAction, SendAction, TransportId } from './machine.js';
import { asHostCandidates } from './punch/candidates.js';
import { MIN_CHECKING_FOR_DIAGNOSIS_MS, punchFailureError, type PunchFailure, type RelayReport } from './punch/failure.js';
import { RendezvousClient, type RendezvousNote } from './punch/rendezvous-client.js';
import { DEFAULT_TIMING, type PunchEvent, type PunchResult } from './punch/types.js';

export interface TcpPunchTiming {
  /** One connect attempt's budget before it is abandoned. */
  readonly attemptMs: number;
  /** The pause before an attempt that failed is made again. */
  readonly retryMs: number;
  /** REGISTER refresh over the stream (the connection itself keeps the registration; this keeps the clock and NAT). */
  readonly refreshMs: number;
  /** Relay 'auto': with no connection secured this long after the introduction, the stream relay is opened. */
  readonly relayAfterMs: number;
}

export const DEFAULT_TCP_TIMING: TcpPunchTiming = { attemptMs: 400, retryMs: 25, refreshMs: 10_000, relayAfterMs: 3000 };

/** Whether to relay the stream: 'auto' (after `relayAfterMs` without a direct path), 'never', or 'only' (no direct attempts). */
export type StreamRelayMode = 'auto' | 'never' | 'only';

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
  /** Default 'auto'. */
  readonly relay?: StreamRelayMode;
}

/** Which connection won: one of our connect attempts, a connection the LAN listener accepted, or the stream relay. */
export type TcpWinner = { readonly attempt: number } | { readonly conn: number } | { readonly relay: true };

export interface TcpPunchOutcome {
  readonly result: PunchResult;
  readonly winner: TcpWinner;
  /** For a relayed stream: the server whose stream relay carries it (the one that introduced the pair). */
  readonly relay?: { readonly server: Endpoint };
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
  | { readonly type: 'secured'; readonly winner: TcpWinner; readonly localPort: number; readonly now: number }
  /** The stream relay spliced us to the partner; the stream handshake runs over it. */
  | { readonly type: 'relay-spliced'; readonly now: number }
  /**
   * The stream relay failed: the server refused (`code`, its STUN error code), the connection failed or closed
   * (`code` undefined), or the handshake over it failed (`handshake`).
   */
  | { readonly type: 'relay-failed'; readonly code: number | undefined; readonly detail: string; readonly handshake?: boolean; readonly now: number };

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
  | { readonly type: 'reject-incoming'; readonly conn: number }
  /** Open the stream relay of `server` for this pair, then run the stream handshake with `context` over it. */
  | { readonly type: 'relay-connect'; readonly server: Endpoint; readonly context: Uint8Array };

/** The actions the driver performs itself (connections and handshakes), as opposed to the generic ones. */
export type TcpIoAction = Extract<TcpPunchAction, { readonly type: 'connect' | 'abandon' | 'secure-incoming' | 'reject-incoming' | 'relay-connect' }>;

/**
 * Where the stream relay stands: not tried (yet), opened at `relayAt`, waiting at the server for the partner
 * ('connecting'), spliced with the handshake under way, secured but held while a direct connection is being secured,
 * or failed (the report says why).
 */
type RelayState = 'idle' | 'connecting' | 'spliced' | 'held' | 'failed';

/** Words for a stream relay refusal (the server's STUN error code; src/server/relay/stream.ts lists them). */
export function streamRelayRefusal(code: number | undefined, server: string, peer: string, detail: string): string {
  switch (code) {
    case 401:
    case 438:
      return `the stream relay at ${server} refused our credentials (401): the server does not hold this network's secret, or this machine's clock is far off`;
    case 403:
      return `the server at ${server} has its relay turned off (403)`;
    case 486:
      return `the stream relay at ${server} refused: this peer name or address holds its quota of relay sessions already (486); end other sessions or raise --relay-sessions-per-peer / --relay-sessions-per-source`;
    case 508:
      return `the stream relay at ${server} is full (508: --relay-sessions reached)`;
    case 408:
      return `${peer} did not come to the stream relay at ${server} within its wait (408): it may use --relay never, or be registered with another server`;
    case undefined:
      return `the stream relay at ${server} failed: ${detail}`;
    default:
      return `the stream relay at ${server} refused: ${detail}`;
  }
}

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
  private readonly relayMode: StreamRelayMode;
  private relayState: RelayState = 'idle';
  /** When the stream relay is to be opened (relay 'auto', once introduced by a server that offers it). */
  private relayAt: number | undefined;
  /** The server whose stream relay we use: the one that introduced us. */
  private relayServer: Endpoint | undefined;
  /** Why there is no relay (yet): turned off, none offered, or failed. */
  private relayReport: RelayReport | undefined;
  /** The local port of a secured relayed stream held while a direct connection is being secured. */
  private heldRelayPort = 0;

  constructor(private readonly config: TcpPunchConfig) {
    this.timing = { ...DEFAULT_TCP_TIMING, ...config.timing };
    this.relayMode = config.relay ?? 'auto';
    if (this.relayMode === 'never') this.relayReport = { state: 'disabled', reason: 'relaying was turned off' };
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
    if (this.relayAt !== undefined && this.relayState === 'idle') next = Math.min(next, this.relayAt);
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
        this.releaseHeld(input.now, out);
        this.settleIfGone(out);
        break;
      case 'incoming':
        if (this.plan?.acceptLan && this.relayMode !== 'only' && this.relayState !== 'held') {
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
        this.releaseHeld(input.now, out);
        this.settleIfGone(out);
        break;
      case 'secured':
        if ('relay' in input.winner) this.relaySecured(input.localPort, input.now, out);
        else this.secured(input.winner, input.localPort, input.now, out);
        break;
      case 'relay-spliced':
        if (this.relayState === 'connecting') this.relayState = 'spliced';
        break;
      case 'relay-failed':
        this.relayFailed(input.code, input.detail, input.handshake === true, out);
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
    if (now >= this.deadline && this.relayState === 'held') {
      this.finishRelay(now, out);
      return;
    }
    if (now >= this.deadline) {
      const gone = this.partnerGone;
      this.finish(out, { type: 'fail', error: gone !== undefined ? BurrowError.peerLeft(this.config.peer, endpointKey(this.rendezvous.server), gone) : punchFailureError(this.failure()) });
      return;
    }
    for (const note of this.rendezvous.onTimer(now, out)) this.onRendezvous(note, now, out);
    if (this.phase === 'finished') return;
    if (this.relayAt !== undefined && this.relayState === 'idle' && now >= this.relayAt) this.openRelay(out);
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
    // With the relay-offer key: a TURN offer in the introduction (serve --turn) must open, or the whole message is dropped.
    const decoded = decodeMessage(data, { relayOfferKey: this.config.keys.relayOffer });
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
    this.planRelay(intro, now, out);
    if (this.isFinished) return; // relay 'only' with no relay to use: failed already
    if (lanTargets.length === 0) this.connect(peerPublic, this.config.localPort, false, now, out);
    else if (weAreLow) for (const target of lanTargets) this.connect(target, 0, target.address !== peerPublic.address, now, out);
  }

  /**
   * What the introduction's RELAY offer allows: the built-in relay of the server that introduced us (its stream relay
   * on the same TCP port), opened now (relay 'only') or after `relayAfterMs` (relay 'auto'). A TURN server carries
   * datagrams only, so with a TURN offer (or none) there is no stream relay.
   */
  private planRelay(intro: Introduction, now: number, out: TcpPunchAction[]): void {
    if (this.relayMode === 'never') return;
    const server = endpointKey(this.rendezvous.server);
    const offer = intro.relay;
    if (offer?.kind !== 'builtin') {
      const reason = offer === undefined ? `the server at ${server} offers no relay (it predates relays)`
        : offer.kind === 'none' ? `the server at ${server} offers no relay (it runs with relaying turned off)`
          : `the server at ${server} relays through the TURN server ${offer.url}, which carries datagrams only: a stream needs the server's built-in relay (burrow serve without --turn)`;
      this.relayReport = { state: 'none-offered', server, reason };
      if (this.relayMode === 'only') this.finish(out, { type: 'fail', error: punchFailureError(this.failure()) });
      return;
    }
    this.relayServer = this.rendezvous.server;
    this.relayAt = this.relayMode === 'only' ? now : now + this.timing.relayAfterMs;
    if (this.relayMode === 'only') this.openRelay(out);
  }

  private openRelay(out: TcpPunchAction[]): void {
    if (!this.plan || !this.relayServer || this.relayState !== 'idle') return;
    this.relayState = 'connecting';
    out.push({ type: 'relay-connect', server: this.relayServer, context: this.plan.context });
  }

  private relayFailed(code: number | undefined, detail: string, handshake: boolean, out: TcpPunchAction[]): void {
    if (this.relayState !== 'connecting' && this.relayState !== 'spliced') return;
    this.relayState = 'failed';
    const server = endpointKey(this.relayServer ?? this.rendezvous.server);
    this.relayReport = {
      state: 'failed',
      server,
      code: code ?? 0,
      reason: handshake ? `the stream handshake through the relay at ${server} failed: ${detail}` : streamRelayRefusal(code, server, this.config.peer, detail),
    };
    // Relayed streams only, and the relay is gone: nothing can connect; say so now rather than at the deadline.
    if (this.relayMode === 'only') this.finish(out, { type: 'fail', error: punchFailureError(this.failure()) });
    else this.settleIfGone(out);
  }

  /** Direct connections up and being secured (TCP connected, stream handshake under way). */
  private directSecuring(): boolean {
    return this.incoming.size > 0 || [...this.attempts.values()].some((a) => a.budgetEndsAt === undefined);
  }

  /** The relayed stream is secured: it wins, unless a direct connection the partner may complete is in flight. */
  private relaySecured(localPort: number, now: number, out: TcpPunchAction[]): void {
    if (this.relayState !== 'connecting' && this.relayState !== 'spliced') return;
    if (!this.directSecuring()) {
      this.finishRelay(now, out, localPort);
      return;
    }
    this.relayState = 'held';
    this.heldRelayPort = localPort;
    // No new direct attempt from now on: those in flight settle it.
    this.retries.length = 0;
    for (const [id, a] of [...this.attempts]) {
      if (a.budgetEndsAt === undefined) continue;
      this.attempts.delete(id);
      out.push({ type: 'abandon', attempt: id });
    }
  }

  /** A held relayed stream wins once no direct connection is in flight any more. */
  private releaseHeld(now: number, out: TcpPunchAction[]): void {
    if (this.relayState === 'held' && this.phase === 'connecting' && !this.directSecuring()) this.finishRelay(now, out);
  }

  private finishRelay(now: number, out: TcpPunchAction[], localPort = this.heldRelayPort): void {
    const server = this.relayServer ?? this.rendezvous.server;
    const result: PunchResult = {
      localAddress: this.config.localAddress,
      localPort,
      remoteAddress: server.address,
      remotePort: server.port,
      path: 'relay',
      elapsedMs: now - this.startedAt,
      peer: this.config.peer,
      transport: 'tcp',
    };
    out.push({ type: 'event', event: { type: 'connected', remote: server, path: 'relay', transport: 'tcp', result } });
    this.finish(out, { type: 'done', result: { result, winner: { relay: true }, relay: { server } } });
  }

  /** The partner has gone: unless a connection is up and being secured, the attempt ends (PEER_LEFT). */
  private settleIfGone(out: TcpPunchAction[]): void {
    if (this.partnerGone === undefined || this.phase !== 'connecting') return;
    const securing = this.directSecuring() || this.relayState === 'spliced' || this.relayState === 'held';
    if (!securing) this.finish(out, { type: 'fail', error: BurrowError.peerLeft(this.config.peer, endpointKey(this.rendezvous.server), this.partnerGone) });
  }

  private connect(target: Endpoint, fromPort: number, lan: boolean, now: number, out: TcpPunchAction[]): void {
    if (!this.plan || now >= this.deadline || this.relayMode === 'only' || this.relayState === 'held') return;
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
    if (this.relayState !== 'held') this.retries.push({ at: this.retry.nextAt(now, 1), target: a.target, fromPort: a.fromPort, lan: a.lan });
  }

  private secured(winner: Exclude<TcpWinner, { relay: true }>, localPort: number, now: number, out: TcpPunchAction[]): void {
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
      ...this.relayFailure(),
    };
  }

  /** What became of the stream relay, for a failure. */
  private relayFailure(): { relay?: RelayReport } {
    const server = endpointKey(this.relayServer ?? this.rendezvous.server);
    const only = this.relayMode === 'only' ? { only: true } : {};
    switch (this.relayState) {
      case 'connecting':
        // 408 as the server would answer at the end of its own wait: the partner did not come.
        return { relay: { state: 'failed', server, code: 408, reason: `${this.config.peer} had not come to the stream relay at ${server} by the deadline (it may run with --relay never, or be registered with another server)`, ...only } };
      case 'spliced':
        return { relay: { state: 'failed', server, code: 0, reason: `the stream handshake through the relay at ${server} had not completed by the deadline`, ...only } };
      case 'idle':
        if (this.relayAt !== undefined && !this.relayReport) return { relay: { state: 'failed', server, code: 0, reason: `the deadline came before the stream relay at ${server} was due (${this.timing.relayAfterMs / 1000} s after the introduction)`, ...only } };
        break;
      case 'held':
      case 'failed':
        break;
    }
    return this.relayReport ? { relay: { ...this.relayReport, ...only } } : {};
  }
}
