/**
 * The rendezvous client: REGISTER and its retransmission and refresh, the server's answers (401, 438 with clock
 * correction), authenticated introductions (answered and pushed), the push acknowledgement, and the outcome report.
 * It runs over one transport of its owner's (a UDP socket, or a TCP stream to the server framed as datagrams) and
 * is used by the punch agent (UDP) and the TCP punch (src/core/tcp-punch.ts) alike.
 *
 * Sub-machine: its owner forwards the server's messages and timer ticks, and applies the notes it returns.
 */
import { endpointKey, type Endpoint } from '../../codec/address.js';
import { encodeMessage, RegisterFlag, type BurrowMessage, type Candidate, type Introduction, type NatFiltering, type NatMapping, type Outcome, type PeerMode, type PortAllocation, type Transport } from '../../codec/messages.js';
import { verifyIntegrity, type StunMessage } from '../../codec/stun.js';
import type { NetworkKeys } from '../../crypto/keys.js';
import { BurrowError } from '../../errors.js';
import { Backoff } from '../backoff.js';
import { ServerList } from '../server-list.js';
import type { Outbox, SendAction, TransportId } from '../machine.js';
import { TransactionTable } from './transactions.js';
import type { PunchTiming } from './types.js';

export { DEFAULT_FAILOVER_MS } from '../server-list.js';

/**
 * How long the server may answer 503 ("cannot reach its registration store") before we give up with STORE_UNAVAILABLE
 * (exit 14): long enough to ride out a server reconnecting to a Redis that just came back (it retries every second at
 * most), short enough to say so within 3 s.
 */
export const STORE_DOWN_GRACE_MS = 2000;

export interface RendezvousConfig {
  readonly name: string;
  readonly peer: string;
  readonly keys: NetworkKeys;
  /** The server registered with first. */
  readonly server: Endpoint;
  /**
   * Other servers of the same deployment (sharing one store), tried in order when the current one stops answering:
   * no answer to any REGISTER for `timing.failoverMs`. Either peer may use any of them.
   */
  readonly fallbacks?: readonly Endpoint[];
  /** The owner's transport that reaches the server. */
  readonly transport: TransportId;
  /** What the registration is for (the wire's TRANSPORT attribute): UDP and TCP registrations never pair. */
  readonly wire: Transport;
  readonly sessionNonce: Uint8Array;
  readonly newTxid: () => Uint8Array;
  readonly timing: Pick<PunchTiming, 'registerBackoffMs' | 'waitingRefreshMs' | 'checkingRefreshMs' | 'timestampWindowMs' | 'pushAckDelayMs'> & { readonly failoverMs?: number };
  /** What the owner runs (the MODE attribute), told to the partner in its introduction. */
  readonly mode?: PeerMode | undefined;
}

/** What a server message meant, for the owner to act on. */
export type RendezvousNote =
  /**
   * An answer to a REGISTER sent at `sentAt`. `partner`: whether the answer carried an introduction, i.e. whether
   * the partner held a live registration for us then (none after an introduction: it has gone since).
   */
  | { readonly type: 'registered'; readonly mapped: Endpoint; readonly alternate: Endpoint | undefined; readonly first: boolean; readonly partner: boolean; readonly sentAt: number }
  | { readonly type: 'introduced'; readonly intro: Introduction; readonly pushed: boolean }
  /**
   * The server says the partner's session `peerNonce` has gone: it withdrew (with `outcome`), or its TCP connection
   * closed (no outcome).
   */
  | { readonly type: 'partner-gone'; readonly peerNonce: Uint8Array; readonly outcome: Outcome | undefined }
  | { readonly type: 'failed'; readonly error: BurrowError }
  /** The server stopped answering: registering with the next one of the list now. */
  | { readonly type: 'failover'; readonly from: Endpoint; readonly to: Endpoint }
  | { readonly type: 'dropped'; readonly reason: string };

type ServerMessage = Extract<BurrowMessage, { kind: 'register-ok' | 'error' | 'introduce' | 'notice' }>;

export class RendezvousClient {
  private readonly backoff: Backoff;
  private readonly outstanding = new TransactionTable();
  private clockOffset = 0;
  private isRegistered = false;
  private ourMapped: Endpoint | undefined;
  private sent = 0;
  private nextRegisterAt = Infinity;
  /** 'waiting' for the partner or 'checking' paths: the refresh cadence. */
  private cadence: 'waiting' | 'checking' = 'waiting';
  private stopped = true;
  private candidates: readonly Candidate[] = [];
  private mapping: NatMapping = 'unknown';
  private allocation: PortAllocation = 'unknown';
  private filtering: NatFiltering = 'unknown';
  /** Another session took our name: nothing more goes to the server (no refresh, no withdrawal of a name not ours). */
  private displaced = false;
  /** The servers, in order (the first is `config.server`), which one we register with, and when to move on. */
  private readonly servers: ServerList;
  /** REGISTERs sent to the current server (its first registration's retransmissions follow the backoff). */
  private sentHere = 0;
  /** Since when the server has answered only 503 (its store unreachable). */
  private storeDownSince: number | undefined;

  constructor(private readonly config: RendezvousConfig) {
    this.backoff = new Backoff(config.timing.registerBackoffMs);
    this.servers = new ServerList([config.server, ...(config.fallbacks ?? [])], config.timing.failoverMs);
  }

  get registered(): boolean {
    return this.isRegistered;
  }

  /** Our public address as the server sees it, once registered. */
  get mapped(): Endpoint | undefined {
    return this.ourMapped;
  }

  /** REGISTER requests sent so far. */
  get attempts(): number {
    return this.sent;
  }

  /** The server we register with now. */
  get server(): Endpoint {
    return this.servers.current;
  }

  /** Every server we may register with, in order. */
  get serverList(): readonly Endpoint[] {
    return this.servers.all;
  }

  /** The server's clock, as far as we know it: every timestamp we send uses it. */
  serverTime(now: number): number {
    return now + this.clockOffset;
  }

  /** Whether a timestamp (on the server's clock) is within the window. */
  isFresh(timestamp: number, now: number): boolean {
    return Math.abs(timestamp - this.serverTime(now)) <= this.config.timing.timestampWindowMs;
  }

  /** Whether a datagram came from the server, on the transport that reaches it. */
  isFromServer(transport: TransportId, from: Endpoint): boolean {
    return transport === this.config.transport && this.servers.isCurrent(from);
  }

  start(now: number, candidates: readonly Candidate[], out: Outbox<SendAction>): void {
    this.candidates = candidates;
    this.stopped = false;
    this.sendRegister(now, out);
  }

  nextTimeoutAt(): number | undefined {
    return this.stopped ? undefined : Math.min(this.nextRegisterAt, this.servers.dueAt() ?? Infinity);
  }

  onTimer(now: number, out: Outbox<SendAction>): RendezvousNote[] {
    if (this.stopped) return [];
    const move = this.servers.advance(now);
    if (move) {
      // The server stopped answering (or its connection is gone): register with the next one, as a new registration
      // there (our registration on the silent one expires by itself; a partner on any server of the deployment
      // finds us on the new one).
      this.isRegistered = false;
      this.sentHere = 0;
      this.storeDownSince = undefined;
      this.sendRegister(now, out);
      return [{ type: 'failover', from: move.from, to: move.to }];
    }
    if (now >= this.nextRegisterAt) this.sendRegister(now, out);
    return [];
  }

  /** Whether there are other servers to move to. */
  get hasFallbacks(): boolean {
    return this.servers.several;
  }

  /**
   * The connection to the current server is gone (closed or refused; TCP only): with other servers, move to the next
   * at the next timer (at once, or a second after the previous move); with one, the owner decides.
   */
  serverLost(now: number): void {
    if (!this.stopped) this.servers.lost(now);
  }

  /** Checking has begun: refresh at the checking cadence from now on. */
  checking(now: number): void {
    this.cadence = 'checking';
    if (this.nextRegisterAt > now + this.config.timing.checkingRefreshMs) this.nextRegisterAt = now + this.config.timing.checkingRefreshMs;
  }

  /** No more REGISTERs (the attempt ended, or the owner no longer needs the server). */
  stop(): void {
    this.stopped = true;
  }

  /**
   * The NAT finding goes to the server at once when it changed (with `out`), so the partner learns it within a round
   * trip: both sides need both findings to choose birthday probing (birthday.ts). Without `out` it travels with the
   * next scheduled refresh.
   */
  setMapping(mapping: NatMapping, allocation: PortAllocation = 'unknown', filtering: NatFiltering = 'unknown', now?: number, out?: Outbox<SendAction>): void {
    const changed = mapping !== this.mapping || allocation !== this.allocation || filtering !== this.filtering;
    this.mapping = mapping;
    this.allocation = allocation;
    this.filtering = filtering;
    if (changed && out && now !== undefined && !this.stopped && this.isRegistered) this.sendRegister(now, out);
  }

  /** New local candidates (trickled): registered at once, so the server re-introduces us to the partner. */
  setCandidates(candidates: readonly Candidate[], now: number, out: Outbox<SendAction>): void {
    this.candidates = candidates;
    if (!this.stopped && this.isRegistered) this.sendRegister(now, out);
  }

  /** Handles a message from the server (the owner checked `isFromServer`). */
  handle(msg: ServerMessage, data: Uint8Array, stun: StunMessage, now: number, out: Outbox<SendAction>): RendezvousNote[] {
    const { keys } = this.config;
    if (msg.kind === 'notice') {
      // Authenticated by the server, for this session only (SESSION-NONCE), within the timestamp window: neither a
      // forgery nor a replay into another session can end an attempt. A replay into this same session can only repeat
      // what already ended it.
      if (verifyIntegrity(data, stun, keys.serverToClient) !== 'valid') return [{ type: 'dropped', reason: 'notice failed authentication' }];
      if (!Buffer.from(msg.networkId).equals(keys.networkId)) return [{ type: 'dropped', reason: 'notice for another network' }];
      if (!Buffer.from(msg.recipientNonce).equals(this.config.sessionNonce)) return [{ type: 'dropped', reason: 'notice for another session' }];
      if (!this.isFresh(msg.timestamp, now)) return [{ type: 'dropped', reason: 'stale notice' }];
      if (msg.notice === 'displaced') {
        if (msg.peerName !== this.config.name) return [{ type: 'dropped', reason: 'displaced notice for another name' }];
        return this.displacedNow();
      }
      if (msg.peerName !== this.config.peer) return [{ type: 'dropped', reason: `notice about ${msg.peerName}, not our partner` }];
      return [{ type: 'partner-gone', peerNonce: msg.peerNonce, outcome: msg.outcome }];
    }
    if (msg.kind === 'introduce') {
      if (verifyIntegrity(data, stun, keys.serverToClient) !== 'valid') return [{ type: 'dropped', reason: 'introduction failed authentication' }];
      if (!Buffer.from(msg.networkId).equals(keys.networkId)) return [{ type: 'dropped', reason: 'introduction for another network' }];
      if (!Buffer.from(msg.recipientNonce).equals(this.config.sessionNonce)) return [{ type: 'dropped', reason: 'introduction for another session' }];
      if (!this.isFresh(msg.timestamp, now)) return [{ type: 'dropped', reason: 'stale introduction' }];
      // Acknowledge the push (any REGISTER does) before the server's first re-send, but after whatever the owner
      // sends in reaction to it (its first probes).
      if (!this.stopped) this.nextRegisterAt = Math.min(this.nextRegisterAt, now + this.config.timing.pushAckDelayMs);
      return [{ type: 'introduced', intro: msg.intro, pushed: true }];
    }
    const request = this.outstanding.claim(msg.txid, this.config.transport, this.server, 'register');
    if (!request) {
      return [{ type: 'dropped', reason: `${msg.kind} for no outstanding request` }];
    }
    // The server answers (whatever it says): it is alive.
    this.servers.answered();
    if (msg.kind !== 'error' || msg.code !== 503) this.storeDownSince = undefined;
    if (msg.kind === 'error') return this.onError(msg, data, stun, now, out);
    if (verifyIntegrity(data, stun, keys.serverToClient) !== 'valid') return [{ type: 'dropped', reason: 'register answer failed authentication' }];
    this.clockOffset = msg.timestamp - now;
    const first = !this.isRegistered;
    this.isRegistered = true;
    this.ourMapped = msg.mapped;
    if (first && this.cadence === 'waiting') this.nextRegisterAt = now + this.config.timing.waitingRefreshMs;
    const notes: RendezvousNote[] = [{ type: 'registered', mapped: msg.mapped, alternate: msg.alternate, first, partner: msg.intro !== undefined, sentAt: request.sentAt ?? now }];
    if (msg.intro) notes.push({ type: 'introduced', intro: msg.intro, pushed: false });
    return notes;
  }

  /**
   * Withdraws our registration and tells the server how the attempt ended (docs/protocol.md, §3 "Lifecycle"):
   * `connected` and `failed` (introduced, no path) count in its metrics, `withdrawn` is any other end. The server
   * drops the registration and tells a partner that waits for us that we left. One datagram, best effort, queued
   * before the result so the driver sends it before it closes the transport; sent whenever a REGISTER went out (its
   * answer may have been lost), never after another session took our name.
   */
  report(outcome: Outcome, now: number, out: Outbox<SendAction>): void {
    if (this.sent === 0 || this.displaced) return;
    const report: BurrowMessage = {
      kind: 'report',
      txid: this.config.newTxid(),
      networkId: this.config.keys.networkId,
      name: this.config.name,
      sessionNonce: this.config.sessionNonce,
      timestamp: this.serverTime(now),
      outcome,
    };
    out.push(this.send(encodeMessage(report, { key: this.config.keys.clientToServer })));
  }

  private displacedNow(): RendezvousNote[] {
    this.displaced = true;
    this.stopped = true;
    return [{ type: 'failed', error: BurrowError.displaced(this.config.name, endpointKey(this.server)) }];
  }

  private onError(msg: Extract<BurrowMessage, { kind: 'error' }>, data: Uint8Array, stun: StunMessage, now: number, out: Outbox<SendAction>): RendezvousNote[] {
    if (msg.code === 409) {
      // Our refresh met a newer session under our name: the server answers 409, authenticated (only a holder of the
      // secret can stop us this way), and tied to our REGISTER by its random transaction id.
      if (verifyIntegrity(data, stun, this.config.keys.serverToClient) !== 'valid') return [{ type: 'dropped', reason: '409 answer failed authentication' }];
      return this.displacedNow();
    }
    if (msg.code === 401) {
      // Unauthenticated by nature (the server could not verify us), but it echoes our random transaction id, so an
      // off-path attacker cannot forge it.
      return [{ type: 'failed', error: BurrowError.authFailed(endpointKey(this.server)) }];
    }
    if (msg.code === 438 && msg.timestamp !== undefined) {
      // Our clock is off: adopt the server's, but only if it proves it holds the secret.
      if (verifyIntegrity(data, stun, this.config.keys.serverToClient) !== 'valid') return [{ type: 'dropped', reason: 'stale-timestamp answer failed authentication' }];
      this.clockOffset = msg.timestamp - now;
      this.sendRegister(now, out);
      return [];
    }
    if (msg.code === 503) {
      // The server is up but cannot reach its registration store (a shared one, e.g. Redis): not "peer absent". Only
      // a holder of the secret can say so (authenticated), tied to our REGISTER by its random transaction id. A blip
      // (the server reconnecting) is ridden out: we keep sending, and give up once it has lasted STORE_DOWN_GRACE_MS.
      if (verifyIntegrity(data, stun, this.config.keys.serverToClient) !== 'valid') return [{ type: 'dropped', reason: '503 answer failed authentication' }];
      this.storeDownSince ??= now;
      if (now - this.storeDownSince < STORE_DOWN_GRACE_MS) return [{ type: 'dropped', reason: 'the server cannot reach its store (503); trying again' }];
      return [{ type: 'failed', error: BurrowError.storeUnavailable(endpointKey(this.server)) }];
    }
    // 429 and anything else: keep retransmitting on the normal schedule.
    return [{ type: 'dropped', reason: `server answered ${msg.code} ${msg.reason}` }];
  }

  private sendRegister(now: number, out: Outbox<SendAction>): void {
    const txid = this.config.newTxid();
    const msg: BurrowMessage = {
      kind: 'register',
      txid,
      networkId: this.config.keys.networkId,
      name: this.config.name,
      target: this.config.peer,
      sessionNonce: this.config.sessionNonce,
      timestamp: this.serverTime(now),
      candidates: this.candidates,
      mapping: this.mapping,
      ...(this.allocation !== 'unknown' ? { allocation: this.allocation } : {}),
      ...(this.filtering !== 'unknown' ? { filtering: this.filtering } : {}),
      ...(this.config.wire === 'tcp' ? { transport: 'tcp' as const } : {}),
      ...(this.config.mode !== undefined ? { mode: this.config.mode } : {}),
      // The longest gap between our refreshes: the server expires the registration after a few of them without one.
      refreshMs: Math.max(this.config.timing.waitingRefreshMs, this.config.timing.checkingRefreshMs),
      ...(this.isRegistered ? { flags: RegisterFlag.REFRESH } : {}),
    };
    this.outstanding.track(txid, { transport: this.config.transport, to: this.server, purpose: 'register', flags: 0, sentAt: now });
    out.push(this.send(encodeMessage(msg, { key: this.config.keys.clientToServer })));
    this.sent++;
    this.sentHere++;
    this.servers.sent(now);
    const { timing } = this.config;
    const delay = !this.isRegistered ? this.backoff.delayAfter(this.sentHere) : this.cadence === 'waiting' ? timing.waitingRefreshMs : timing.checkingRefreshMs;
    this.nextRegisterAt = now + delay;
  }

  private send(data: Uint8Array): SendAction {
    return { type: 'send', transport: this.config.transport, to: this.server, data };
  }
}
