/**
 * The punch state machine: sans-IO. Inputs in (`start`, `datagram`, `timer`), actions out
 * (`send`, `event`, `done`, `fail`); the caller owns the socket and the timer and passes the time in.
 *
 * Theory of operation
 * -------------------
 * 1. Register. The peer sends REGISTER (name, partner's name, a fresh 16-byte session nonce, a timestamp,
 *    its host candidates) to the rendezvous server, authenticated with the client-to-server key. It
 *    retransmits with back-off until answered, then refreshes every `waitingRefreshMs` while it waits:
 *    that keeps its NAT mapping to the server fresh and recovers a lost introduction.
 * 2. Learn the NAT. The answer names the server's alternate port; one padded Binding request there tells
 *    whether our public port depends on the destination (a symmetric NAT). The finding goes to the server
 *    with the next refresh, which passes it to the partner, so both sides can explain a failure.
 * 3. Introduction. As soon as both partners are registered the server pushes INTRODUCE to each (and puts
 *    the introduction in REGISTER answers). It carries the partner's nonce, its server-reflexive address
 *    and its host candidates. From the two nonces and two names both sides derive direction-specific probe
 *    keys (src/crypto/keys.ts), so no message of another session, pair or direction verifies.
 * 4. Checks (ICE-like, RFC 8445). Each side probes every partner candidate at once and keeps doing so on
 *    a short back-off. A probe from an unknown address is answered and that address becomes a
 *    peer-reflexive candidate (this is what lets a cone NAT reach a symmetric one). A candidate is *valid*
 *    once a response to our own probe comes back from the very address we sent it to.
 * 5. Nomination. The side whose name sorts first is controlling and sets NOMINATE on its probes
 *    (aggressive nomination). The controlled side accepts the first nominated path that is valid for it
 *    and says so in its response (ACCEPTED), and again in a probe of its own every 50 ms until CLOSE. At that
 *    point each side knows the other has heard it: the controlled side got a response from the partner on that
 *    path, and the controlling side got the acceptance (in an answer, or in a probe from a path it validated or
 *    from one of the partner's server-introduced addresses). The controlling side finishes and sends CLOSE; the
 *    controlled side finishes on CLOSE or after `lingerMs` without another nomination (the CLOSE was lost and
 *    the partner is gone).
 * 6. Failure. At the deadline the machine fails with a reason that says where it got stuck: no server,
 *    no partner, or no path, with the NAT behaviour both sides observed.
 * 7. Outcome report. A side that was introduced tells the server how it ended (connected, or no path at
 *    the deadline) in one authenticated CLOSE, for the server's metrics; the server drops its registration.
 *
 * Replay protection: every message carries a timestamp checked against a window (on the server's clock,
 * learned from its answers); probe requests are remembered by transaction id and answered once; a
 * response is accepted only for an outstanding transaction and only from the address the request went to.
 */
import { endpointKey, familyOf, sameEndpoint, type Endpoint } from '../codec/address.js';
import {
  decodeMessage,
  encodeMessage,
  ProbeFlag,
  type BurrowMessage,
  type Introduction,
  type NatMapping,
  type Outcome,
  type Transport,
} from '../codec/messages.js';
import { verifyIntegrity, TRANSACTION_ID_LENGTH } from '../codec/stun.js';
import { bindingRequest } from './stun-client.js';
import { deriveProbeKeys, type NetworkKeys, type ProbeKeys } from '../crypto/keys.js';
import { BurrowError } from '../errors.js';

export interface PunchTiming {
  /** Retransmission back-off for REGISTER before the first answer (ms, last value repeats). */
  readonly registerBackoffMs: readonly number[];
  /** Refresh period while waiting for the partner. */
  readonly waitingRefreshMs: number;
  /** Refresh period while checking paths (keeps the server's view fresh, recovers from a restart). */
  readonly checkingRefreshMs: number;
  /** Probe back-off per candidate (ms, last value repeats). */
  readonly probeBackoffMs: readonly number[];
  /** How long the controlling side holds back nominating non-LAN paths when both sides share a NAT. */
  readonly lanGraceMs: number;
  /** The controlled side's wait for CLOSE after accepting, renewed by each nomination it sees. */
  readonly lingerMs: number;
  /** Accepted clock difference for timestamps, after correcting for the server's clock. */
  readonly timestampWindowMs: number;
  /** Delay before acknowledging a pushed introduction (the server re-sends unacknowledged ones after 100 ms). */
  readonly pushAckDelayMs: number;
}

/** How often the controlled side repeats ACCEPTED while it waits for CLOSE. */
const ACCEPTED_REPEAT_MS = 50;

export const DEFAULT_TIMING: PunchTiming = {
  registerBackoffMs: [100, 200, 250],
  waitingRefreshMs: 1000,
  checkingRefreshMs: 2000,
  probeBackoffMs: [10, 20, 40, 50],
  lanGraceMs: 25,
  lingerMs: 500,
  timestampWindowMs: 30_000,
  pushAckDelayMs: 60,
};

export interface PunchConfig {
  readonly name: string;
  readonly peer: string;
  readonly keys: NetworkKeys;
  /** The rendezvous server (resolved to an IP literal). */
  readonly server: Endpoint;
  /** The address our socket is bound to, as reported in results. */
  readonly localAddress: string;
  readonly localPort: number;
  /** Our host (LAN) candidates, with our socket's port. */
  readonly hosts: readonly Endpoint[];
  readonly timeoutMs: number;
  readonly sessionNonce: Uint8Array;
  /** Injected randomness (transaction ids). */
  readonly randomBytes: (n: number) => Uint8Array;
  readonly timing?: Partial<PunchTiming>;
  /**
   * 'udp' (default): the whole punch. 'tcp': registration and introduction only, over the driver's TCP
   * connection to the server; the driver performs the simultaneous open and reports it with a
   * `connected` input (src/node/tcp-punch.ts).
   */
  readonly transport?: Transport;
  /** For 'tcp': explains a failed simultaneous open at the deadline. */
  readonly describeFailure?: () => string;
}

export type PunchPath = 'lan' | 'direct';

export interface PunchResult {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly path: PunchPath;
  readonly elapsedMs: number;
  readonly peer: string;
}

export type PunchEvent =
  | { readonly type: 'registered'; readonly mapped: Endpoint }
  | { readonly type: 'nat-mapping'; readonly mapping: NatMapping }
  | { readonly type: 'introduced'; readonly peer: string; readonly candidates: readonly Endpoint[]; readonly intro: Introduction; readonly sameNat: boolean }
  | { readonly type: 'path-valid'; readonly remote: Endpoint }
  | { readonly type: 'connected'; readonly remote: Endpoint; readonly path: PunchPath }
  | { readonly type: 'dropped'; readonly from: Endpoint; readonly reason: string };

export type PunchInput =
  | { readonly type: 'start'; readonly now: number }
  | { readonly type: 'datagram'; readonly from: Endpoint; readonly data: Uint8Array; readonly now: number }
  | { readonly type: 'timer'; readonly now: number }
  /** TCP mode: the driver's simultaneous open succeeded. */
  | { readonly type: 'connected'; readonly remote: Endpoint; readonly now: number };

export type PunchAction =
  | { readonly type: 'send'; readonly to: Endpoint; readonly data: Uint8Array }
  | { readonly type: 'event'; readonly event: PunchEvent }
  | { readonly type: 'done'; readonly result: PunchResult }
  | { readonly type: 'fail'; readonly error: BurrowError };

type CandidateKind = 'host' | 'srflx' | 'prflx';

interface Candidate {
  readonly endpoint: Endpoint;
  readonly kind: CandidateKind;
  nextAt: number;
  sent: number;
  valid: boolean;
  lastSentAt: number;
}

interface Outstanding {
  readonly to: Endpoint;
  readonly purpose: 'register' | 'nat-binding' | 'probe';
  readonly flags: number;
}

type Phase = 'idle' | 'registering' | 'waiting' | 'checking' | 'accepted' | 'finished';

/** Upper bound on peer-reflexive candidates, so a stream of replayed probes cannot make us spray packets. */
const MAX_PEER_REFLEXIVE = 8;
/** Upper bound on remembered probe transaction ids. */
const MAX_SEEN_PROBES = 4096;

export class PunchMachine {
  private readonly timing: PunchTiming;
  private readonly controlling: boolean;
  private phase: Phase = 'idle';
  private startedAt = 0;
  private deadline = 0;
  private clockOffset = 0;
  private readonly outstanding = new Map<string, Outstanding>();
  private nextRegisterAt = 0;
  private registerAttempts = 0;
  private registered = false;
  private mappedMain: Endpoint | undefined;
  private natBindingSent = false;
  private mapping: NatMapping = 'unknown';
  private intro: Introduction | undefined;
  private probeKeys: ProbeKeys | undefined;
  private checkStartedAt = 0;
  private readonly candidates = new Map<string, Candidate>();
  private readonly seenProbes = new Set<string>();
  private accepted: Candidate | undefined;
  private acceptedAt = 0;
  private lingerUntil = 0;
  /** While lingering, the controlled side repeats its acceptance this often (see onTimer). */
  private nextAcceptedAt = 0;
  private pendingNomination: string | undefined;
  private readonly stats = { probesSent: 0, probesHeard: 0, responsesHeard: 0, peerSources: new Set<string>() };

  constructor(private readonly config: PunchConfig) {
    this.timing = { ...DEFAULT_TIMING, ...config.timing };
    this.controlling = config.name < config.peer;
  }

  get isFinished(): boolean {
    return this.phase === 'finished';
  }

  /** When the caller should deliver a `timer` input next, or undefined once finished. */
  nextTimeoutAt(): number | undefined {
    if (this.phase === 'finished' || this.phase === 'idle') return undefined;
    let next = this.deadline;
    if (this.phase === 'accepted') return Math.min(next, this.lingerUntil, this.nextAcceptedAt);
    next = Math.min(next, this.nextRegisterAt);
    if (this.phase === 'checking' && this.config.transport !== 'tcp') {
      for (const c of this.candidates.values()) if (this.wantsProbe(c)) next = Math.min(next, c.nextAt);
      const graceEnds = this.checkStartedAt + this.timing.lanGraceMs;
      if (this.controlling && this.sameNat() && this.lastNow < graceEnds) next = Math.min(next, graceEnds);
    }
    return next;
  }

  /** The time of the latest input, for scheduling decisions in nextTimeoutAt(). */
  private lastNow = 0;

  handle(input: PunchInput): PunchAction[] {
    const out: PunchAction[] = [];
    if (this.phase === 'finished') return out;
    this.lastNow = input.now;
    switch (input.type) {
      case 'start':
        this.start(input.now, out);
        break;
      case 'datagram':
        this.onDatagram(input.from, input.data, input.now, out);
        break;
      case 'timer':
        this.onTimer(input.now, out);
        break;
      case 'connected': {
        const cand: Candidate = { endpoint: input.remote, kind: 'host', nextAt: 0, sent: 0, valid: true, lastSentAt: 0 };
        this.finish(out, { type: 'done', result: this.result(cand, input.now) });
        break;
      }
      default: {
        const never: never = input;
        throw new Error(`unknown input ${String(never)}`);
      }
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Timers and retransmission.

  private start(now: number, out: PunchAction[]): void {
    if (this.phase !== 'idle') return;
    this.startedAt = now;
    this.deadline = now + this.config.timeoutMs;
    this.phase = 'registering';
    this.sendRegister(now, out);
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
      if (now >= this.nextAcceptedAt && this.accepted) {
        this.sendProbe(this.accepted, now, out, ProbeFlag.ACCEPTED);
        this.nextAcceptedAt = now + ACCEPTED_REPEAT_MS;
      }
      return;
    }
    if (now >= this.deadline) {
      this.failAtDeadline(out);
      return;
    }
    if (now >= this.nextRegisterAt) this.sendRegister(now, out);
    if (this.phase === 'checking' && this.config.transport !== 'tcp') this.sendDueProbes(now, out);
  }

  private sendRegister(now: number, out: PunchAction[]): void {
    const txid = this.newTxid();
    const msg: BurrowMessage = {
      kind: 'register',
      txid,
      networkId: this.config.keys.networkId,
      name: this.config.name,
      target: this.config.peer,
      sessionNonce: this.config.sessionNonce,
      timestamp: now + this.clockOffset,
      hosts: this.config.hosts,
      mapping: this.mapping,
      ...(this.config.transport === 'tcp' ? { transport: 'tcp' as const } : {}),
    };
    this.track(txid, { to: this.config.server, purpose: 'register', flags: 0 });
    out.push({ type: 'send', to: this.config.server, data: encodeMessage(msg, { key: this.config.keys.clientToServer }) });
    this.registerAttempts++;
    let delay: number;
    if (!this.registered) {
      const b = this.timing.registerBackoffMs;
      delay = b[Math.min(this.registerAttempts - 1, b.length - 1)] ?? 1000;
    } else {
      delay = this.phase === 'waiting' ? this.timing.waitingRefreshMs : this.timing.checkingRefreshMs;
    }
    this.nextRegisterAt = now + delay;
  }

  private wantsProbe(c: Candidate): boolean {
    // The controlled side stops probing a path once it is valid; the controlling side keeps nominating.
    return this.controlling || !c.valid;
  }

  private sendDueProbes(now: number, out: PunchAction[]): void {
    for (const c of this.candidates.values()) {
      if (this.wantsProbe(c) && now >= c.nextAt) this.sendProbe(c, now, out);
    }
  }

  private nominates(c: Candidate, now: number): boolean {
    if (!this.controlling) return false;
    // Behind one NAT the LAN path is preferred: give host pairs a head start before nominating others.
    if (c.kind === 'host' || !this.sameNat() || now >= this.checkStartedAt + this.timing.lanGraceMs) return true;
    for (const other of this.candidates.values()) if (other.kind === 'host') return false;
    return true;
  }

  private sendProbe(c: Candidate, now: number, out: PunchAction[], extraFlags = 0): void {
    if (!this.probeKeys) return;
    const txid = this.newTxid();
    const flags = (this.nominates(c, now) ? ProbeFlag.NOMINATE : 0) | extraFlags;
    const msg: BurrowMessage = { kind: 'probe', txid, timestamp: now + this.clockOffset, flags, destination: c.endpoint };
    this.track(txid, { to: c.endpoint, purpose: 'probe', flags });
    out.push({ type: 'send', to: c.endpoint, data: encodeMessage(msg, { key: this.probeKeys.send }) });
    const b = this.timing.probeBackoffMs;
    c.nextAt = now + (b[Math.min(c.sent, b.length - 1)] ?? 50);
    c.sent++;
    c.lastSentAt = now;
    this.stats.probesSent++;
  }

  // -------------------------------------------------------------------------------------------
  // Incoming datagrams. Nothing here throws on bad input: it is dropped with a reason.

  private drop(from: Endpoint, reason: string, out: PunchAction[]): void {
    out.push({ type: 'event', event: { type: 'dropped', from, reason } });
  }

  private onDatagram(from: Endpoint, data: Uint8Array, now: number, out: PunchAction[]): void {
    if (this.phase === 'idle') return;
    const decoded = decodeMessage(data);
    if (!decoded.ok) {
      this.drop(from, `malformed: ${decoded.reason}`, out);
      return;
    }
    const msg = decoded.msg;
    const fromServer = sameEndpoint(from, this.config.server);
    switch (msg.kind) {
      case 'register-ok':
      case 'error':
      case 'introduce': {
        if (!fromServer) {
          this.drop(from, `${msg.kind} not from the server`, out);
          return;
        }
        if (msg.kind === 'introduce') {
          if (verifyIntegrity(data, decoded.stun, this.config.keys.serverToClient) !== 'valid') {
            this.drop(from, 'introduction failed authentication', out);
            return;
          }
          this.onIntroduce(msg, from, now, out);
          return;
        }
        const pending = this.claim(msg.txid, from, 'register');
        if (!pending) {
          this.drop(from, `${msg.kind} for no outstanding request`, out);
          return;
        }
        if (msg.kind === 'error') {
          this.onRegisterError(msg, data, decoded.stun, now, out);
          return;
        }
        if (verifyIntegrity(data, decoded.stun, this.config.keys.serverToClient) !== 'valid') {
          this.drop(from, 'register answer failed authentication', out);
          return;
        }
        this.onRegistered(msg, now, out);
        return;
      }
      case 'binding-ok': {
        const pending = this.claim(msg.txid, from, 'nat-binding');
        if (!pending) {
          this.drop(from, 'binding answer for no outstanding request', out);
          return;
        }
        this.onNatBinding(msg.mapped, out);
        return;
      }
      case 'probe':
      case 'probe-ok':
      case 'close':
        this.onPeerMessage(msg, from, data, decoded.stun, now, out);
        return;
      case 'binding':
      case 'register':
      case 'report':
        this.drop(from, `unexpected ${msg.kind}`, out);
        return;
      default: {
        const never: never = msg;
        throw new Error(`unknown message ${String(never)}`);
      }
    }
  }

  private onRegisterError(
    msg: Extract<BurrowMessage, { kind: 'error' }>,
    data: Uint8Array,
    stun: Parameters<typeof verifyIntegrity>[1],
    now: number,
    out: PunchAction[],
  ): void {
    if (msg.code === 401) {
      // Unauthenticated by nature (the server could not verify us), but it echoes our random transaction
      // id, so an off-path attacker cannot forge it.
      this.finish(out, { type: 'fail', error: BurrowError.authFailed(endpointKey(this.config.server)) });
      return;
    }
    if (msg.code === 438 && msg.timestamp !== undefined) {
      // Our clock is off: adopt the server's, but only if it proves it holds the secret.
      if (verifyIntegrity(data, stun, this.config.keys.serverToClient) !== 'valid') {
        this.drop(this.config.server, 'stale-timestamp answer failed authentication', out);
        return;
      }
      this.clockOffset = msg.timestamp - now;
      this.sendRegister(now, out);
      return;
    }
    // 429 and anything else: keep retransmitting on the normal schedule.
    this.drop(this.config.server, `server answered ${msg.code} ${msg.reason}`, out);
  }

  private onRegistered(msg: Extract<BurrowMessage, { kind: 'register-ok' }>, now: number, out: PunchAction[]): void {
    this.clockOffset = msg.timestamp - now;
    const first = !this.registered;
    this.registered = true;
    this.mappedMain = msg.mapped;
    if (first) {
      out.push({ type: 'event', event: { type: 'registered', mapped: msg.mapped } });
      if (this.phase === 'registering') {
        this.phase = 'waiting';
        this.nextRegisterAt = now + this.timing.waitingRefreshMs;
      }
    }
    if (msg.alternate && !this.natBindingSent && msg.alternate.port !== this.config.server.port && this.config.transport !== 'tcp') {
      // Ask the server's second port what our public address is; only the port is taken from
      // OTHER-ADDRESS, the server's IP is the one we already reach it by.
      this.natBindingSent = true;
      const to = { address: this.config.server.address, port: msg.alternate.port };
      const txid = this.newTxid();
      this.track(txid, { to, purpose: 'nat-binding', flags: 0 });
      out.push({ type: 'send', to, data: encodeMessage(bindingRequest(txid)) });
    }
    if (msg.intro) this.adoptIntroduction(msg.intro, now, out);
  }

  private onNatBinding(mapped: Endpoint, out: PunchAction[]): void {
    if (!this.mappedMain || this.mapping !== 'unknown') return;
    this.mapping = sameEndpoint(mapped, this.mappedMain) ? 'endpoint-independent' : 'endpoint-dependent';
    out.push({ type: 'event', event: { type: 'nat-mapping', mapping: this.mapping } });
    // The finding travels with the next scheduled refresh (≤ checkingRefreshMs): the partner needs it only
    // to explain a failure, and an extra round trip now would compete with the checks.
  }

  private onIntroduce(msg: Extract<BurrowMessage, { kind: 'introduce' }>, from: Endpoint, now: number, out: PunchAction[]): void {
    if (!Buffer.from(msg.networkId).equals(this.config.keys.networkId)) {
      this.drop(from, 'introduction for another network', out);
      return;
    }
    if (!Buffer.from(msg.recipientNonce).equals(this.config.sessionNonce)) {
      this.drop(from, 'introduction for another session', out);
      return;
    }
    if (!this.fresh(msg.timestamp, now)) {
      this.drop(from, 'stale introduction', out);
      return;
    }
    this.adoptIntroduction(msg.intro, now, out, true);
  }

  private adoptIntroduction(intro: Introduction, now: number, out: PunchAction[], pushed = false): void {
    if (this.phase === 'accepted' || this.phase === 'finished') return;
    if (intro.peerName !== this.config.peer) return;
    const isNew = !this.intro || !Buffer.from(this.intro.peerNonce).equals(intro.peerNonce);
    if (isNew) {
      // A new partner session (first contact, or the partner restarted): start the checks afresh.
      this.intro = intro;
      this.probeKeys = deriveProbeKeys(
        this.config.keys,
        { name: this.config.name, nonce: this.config.sessionNonce },
        { name: intro.peerName, nonce: intro.peerNonce },
      );
      this.candidates.clear();
      for (const [k, v] of this.outstanding) if (v.purpose === 'probe') this.outstanding.delete(k);
      this.seenProbes.clear();
      this.pendingNomination = undefined;
      this.phase = 'checking';
      this.checkStartedAt = now;
      if (this.nextRegisterAt > now + this.timing.checkingRefreshMs) this.nextRegisterAt = now + this.timing.checkingRefreshMs;
    } else {
      this.intro = intro; // same session: the partner's NAT finding or candidates may have been updated
    }
    const family = familyOf(this.config.server.address);
    const fresh: Endpoint[] = [];
    const add = (endpoint: Endpoint, kind: CandidateKind): void => {
      if (familyOf(endpoint.address) !== family || endpoint.port === 0) return;
      const key = endpointKey(endpoint);
      if (this.candidates.has(key)) return;
      this.candidates.set(key, { endpoint, kind, nextAt: now, sent: 0, valid: false, lastSentAt: -Infinity });
      fresh.push(endpoint);
    };
    add(intro.peerMapped, 'srflx');
    for (const h of intro.peerHosts) add(h, 'host');
    if (isNew) {
      const candidates = [...this.candidates.values()].map((c) => c.endpoint);
      out.push({ type: 'event', event: { type: 'introduced', peer: intro.peerName, candidates, intro, sameNat: this.sameNat() } });
    }
    if (fresh.length > 0 && this.config.transport !== 'tcp') this.sendDueProbes(now, out);
    // Acknowledge a pushed introduction (any REGISTER does) before the server's first re-send, but after
    // the first probes have gone out.
    if (isNew && pushed) this.nextRegisterAt = Math.min(this.nextRegisterAt, now + this.timing.pushAckDelayMs);
  }

  private onPeerMessage(
    msg: Extract<BurrowMessage, { kind: 'probe' | 'probe-ok' | 'close' }>,
    from: Endpoint,
    data: Uint8Array,
    stun: Parameters<typeof verifyIntegrity>[1],
    now: number,
    out: PunchAction[],
  ): void {
    if (!this.probeKeys) {
      this.drop(from, `${msg.kind} before the introduction`, out);
      return;
    }
    if (verifyIntegrity(data, stun, this.probeKeys.receive) !== 'valid') {
      this.drop(from, `${msg.kind} failed authentication (another session, pair or secret)`, out);
      return;
    }
    if (!this.fresh(msg.timestamp, now)) {
      this.drop(from, `stale ${msg.kind}`, out);
      return;
    }
    switch (msg.kind) {
      case 'probe':
        this.onProbe(msg, from, now, out);
        return;
      case 'probe-ok':
        this.onProbeOk(msg, from, now, out);
        return;
      case 'close':
        if (this.phase === 'accepted' && this.accepted && sameEndpoint(from, this.accepted.endpoint)) this.finishAccepted(out);
        return;
      default: {
        const never: never = msg;
        throw new Error(`unknown message ${String(never)}`);
      }
    }
  }

  /**
   * Whether an address is one of ours: our public address as the server saw it, or a host address.
   * A probe must have been sent to one of them, and an answer must say our probe came from one of
   * them; a captured message re-sent or relayed by a third host fails this test (it names the third
   * host), so it can never redirect us there. Assumes the NAT keeps one public IP per host
   * ("paired" pooling, RFC 4787 section 4.1).
   */
  private isOurs(address: string): boolean {
    return this.mappedMain?.address === address || this.config.hosts.some((h) => h.address === address);
  }

  private onProbe(msg: Extract<BurrowMessage, { kind: 'probe' }>, from: Endpoint, now: number, out: PunchAction[]): void {
    if (!this.isOurs(msg.destination.address)) {
      this.drop(from, `probe addressed to ${msg.destination.address}, not to us (re-sent by a third host?)`, out);
      return;
    }
    const id = Buffer.from(msg.txid).toString('hex');
    if (this.seenProbes.has(id)) {
      this.drop(from, 'replayed probe', out);
      return;
    }
    this.remember(id);
    this.stats.probesHeard++;
    this.stats.peerSources.add(endpointKey(from));
    const key = endpointKey(from);
    let cand = this.candidates.get(key);
    if (!cand && this.phase === 'checking') {
      const prflx = [...this.candidates.values()].filter((c) => c.kind === 'prflx').length;
      if (prflx < MAX_PEER_REFLEXIVE && familyOf(from.address) === familyOf(this.config.server.address)) {
        cand = { endpoint: from, kind: 'prflx', nextAt: now, sent: 0, valid: false, lastSentAt: -Infinity };
        this.candidates.set(key, cand);
      }
    }
    let flags = 0;
    const nominated = (msg.flags & ProbeFlag.NOMINATE) !== 0;
    // Only on a path we validated ourselves, or from one of the partner's addresses the server told us (its
    // authenticated introduction): a raced copy of this probe from a third host arrives from an address that is
    // neither, so it is treated as an ordinary probe. (An ACCEPTED probe from an introduced address proves both
    // directions: the partner heard our nomination on this path and we hear it. Waiting for our own validation instead
    // could leave us alone when heavy loss eats every answer that would validate it.)
    const vouched = cand !== undefined && (cand.valid || cand.kind !== 'prflx');
    if (this.controlling && (msg.flags & ProbeFlag.ACCEPTED) !== 0 && vouched && cand && this.phase === 'checking') {
      // The controlled side validated a path we nominated and says so: it heard us and we hear it.
      this.respond(msg, from, 0, out);
      cand.valid = true;
      this.connectControlling(cand, now, out);
      return;
    }
    if (!this.controlling && nominated) {
      if (this.phase === 'accepted') {
        if (this.accepted && sameEndpoint(this.accepted.endpoint, from)) {
          flags = ProbeFlag.ACCEPTED;
          this.lingerUntil = now + this.timing.lingerMs;
        }
      } else if (cand?.valid) {
        flags = ProbeFlag.ACCEPTED;
        this.accept(cand, now, out);
      } else {
        this.pendingNomination = key;
      }
    }
    this.respond(msg, from, flags, out);
    // Triggered check (RFC 8445 section 7.3.1.4): probe straight back, unless that path is already settled.
    if (this.phase === 'checking' && cand && (!cand.valid || this.controlling) && now - cand.lastSentAt >= 5) {
      this.sendProbe(cand, now, out);
    }
  }

  private respond(msg: Extract<BurrowMessage, { kind: 'probe' }>, to: Endpoint, flags: number, out: PunchAction[]): void {
    if (!this.probeKeys) return;
    const reply: BurrowMessage = { kind: 'probe-ok', txid: msg.txid, timestamp: msg.timestamp, flags, mapped: to };
    out.push({ type: 'send', to, data: encodeMessage(reply, { key: this.probeKeys.send }) });
  }

  private onProbeOk(msg: Extract<BurrowMessage, { kind: 'probe-ok' }>, from: Endpoint, now: number, out: PunchAction[]): void {
    const pending = this.claim(msg.txid, from, 'probe');
    if (!pending) {
      this.drop(from, 'probe answer for no outstanding probe, or from another address', out);
      return;
    }
    if (this.phase !== 'checking') return;
    if (!this.isOurs(msg.mapped.address)) {
      this.drop(from, `answer says our probe came from ${msg.mapped.address}, which is not us (relayed by a third host?)`, out);
      return;
    }
    this.stats.responsesHeard++;
    const key = endpointKey(from);
    const cand = this.candidates.get(key);
    if (!cand) return;
    if (!cand.valid) {
      cand.valid = true;
      out.push({ type: 'event', event: { type: 'path-valid', remote: from } });
    }
    if (this.controlling) {
      if ((pending.flags & ProbeFlag.NOMINATE) !== 0 && (msg.flags & ProbeFlag.ACCEPTED) !== 0) {
        this.connectControlling(cand, now, out);
      } else if (this.nominates(cand, now)) {
        this.sendProbe(cand, now, out); // nominate this path straight away
      }
      return;
    }
    if (this.pendingNomination === key) {
      this.accept(cand, now, out);
      // The partner nominated this path before we could vouch for it; tell it now rather than make it
      // wait for its next nomination.
      this.sendProbe(cand, now, out, ProbeFlag.ACCEPTED);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Completion.

  private accept(cand: Candidate, now: number, out: PunchAction[]): void {
    this.phase = 'accepted';
    this.accepted = cand;
    this.acceptedAt = now;
    this.lingerUntil = now + this.timing.lingerMs;
    this.nextAcceptedAt = now + ACCEPTED_REPEAT_MS;
    out.push({ type: 'event', event: { type: 'connected', remote: cand.endpoint, path: this.pathOf(cand) } });
  }

  private finishAccepted(out: PunchAction[]): void {
    if (!this.accepted) return;
    this.finish(out, { type: 'done', result: this.result(this.accepted, this.acceptedAt) });
  }

  private connectControlling(cand: Candidate, now: number, out: PunchAction[]): void {
    if (this.probeKeys) {
      // Two copies: the partner finishes at once on either; if both are lost it finishes after lingerMs.
      for (let i = 0; i < 2; i++) {
        const close: BurrowMessage = { kind: 'close', txid: this.newTxid(), timestamp: now + this.clockOffset };
        out.push({ type: 'send', to: cand.endpoint, data: encodeMessage(close, { key: this.probeKeys.send }) });
      }
    }
    out.push({ type: 'event', event: { type: 'connected', remote: cand.endpoint, path: this.pathOf(cand) } });
    this.finish(out, { type: 'done', result: this.result(cand, now) });
  }

  private pathOf(cand: Candidate): PunchPath {
    // LAN: a host candidate that is not also the partner's public address (a host without NAT).
    const isHost = this.intro?.peerHosts.some((h) => sameEndpoint(h, cand.endpoint)) ?? false;
    const isPublic = this.intro ? sameEndpoint(this.intro.peerMapped, cand.endpoint) : false;
    return isHost && !isPublic ? 'lan' : 'direct';
  }

  private result(cand: Candidate, at: number): PunchResult {
    return {
      localAddress: this.config.localAddress,
      localPort: this.config.localPort,
      remoteAddress: cand.endpoint.address,
      remotePort: cand.endpoint.port,
      path: this.pathOf(cand),
      elapsedMs: at - this.startedAt,
      peer: this.config.peer,
    };
  }

  private finish(out: PunchAction[], action: Extract<PunchAction, { type: 'done' | 'fail' }>): void {
    if (action.type === 'done') this.reportOutcome('connected', out);
    else if (action.error.code === 'NO_PATH') this.reportOutcome('failed', out);
    this.phase = 'finished';
    this.outstanding.clear();
    out.push(action);
  }

  /**
   * Tells the server how an introduced punch ended (docs/protocol.md, "Outcome reports"), for its
   * metrics; the server also drops our registration, which is of no further use. One datagram, best
   * effort, queued before the result so the driver sends it before it closes the socket. UDP only: a TCP
   * registration ends with its connection.
   */
  private reportOutcome(outcome: Outcome, out: PunchAction[]): void {
    if (!this.intro || !this.registered || this.config.transport === 'tcp') return;
    const report: BurrowMessage = {
      kind: 'report',
      txid: this.newTxid(),
      networkId: this.config.keys.networkId,
      name: this.config.name,
      sessionNonce: this.config.sessionNonce,
      timestamp: this.lastNow + this.clockOffset,
      outcome,
    };
    out.push({ type: 'send', to: this.config.server, data: encodeMessage(report, { key: this.config.keys.clientToServer }) });
  }

  private failAtDeadline(out: PunchAction[]): void {
    const seconds = Math.round(this.config.timeoutMs / 100) / 10;
    const server = endpointKey(this.config.server);
    let error: BurrowError;
    if (!this.registered) error = BurrowError.serverUnreachable(server, this.registerAttempts, seconds);
    else if (!this.intro) error = BurrowError.peerNotFound(this.config.peer, server, seconds);
    else error = BurrowError.noPath(this.config.peer, seconds, this.config.describeFailure?.() ?? this.diagnose());
    this.finish(out, { type: 'fail', error });
  }

  /** Explains a failed check phase from what both sides observed about their NATs and what got through. */
  diagnose(): string {
    const mine = this.mapping;
    const theirs = this.intro?.peerMapping ?? 'unknown';
    const traffic =
      `(sent ${this.stats.probesSent} probes to ${this.candidates.size} candidate addresses; ` +
      `heard ${this.stats.probesHeard} probes and ${this.stats.responsesHeard} answers from the peer)`;
    const relay = 'a relay or port prediction is needed for this pair.';
    if (mine === 'endpoint-dependent' && theirs === 'endpoint-dependent') {
      return `both sides' NATs allocate a new public port for every destination (symmetric NAT), so neither side can learn ` +
        `the port the other will use; ${relay} ${traffic}`;
    }
    if (mine === 'endpoint-dependent' || theirs === 'endpoint-dependent') {
      const who = mine === 'endpoint-dependent' ? 'your' : "the peer's";
      const other = mine === 'endpoint-dependent' ? "the peer's" : 'your';
      return `${who} NAT allocates a new public port for every destination (symmetric NAT) and ${other} NAT or firewall ` +
        `only admits packets from the exact address and port it has sent to (port-restricted or stricter), so the ` +
        `probes never match an open mapping; ${relay} ${traffic}`;
    }
    if (this.stats.probesHeard > 0 || this.stats.responsesHeard > 0) {
      return `packets got through in one direction only: a firewall or NAT on one side drops the other side's probes ` +
        `(check UDP filtering on both sides). ${traffic}`;
    }
    return `no probe got through in either direction although neither NAT was seen to be symmetric` +
      `${mine === 'unknown' || theirs === 'unknown' ? " (one side's NAT behaviour is unknown: the server's second port may be blocked)" : ''}; ` +
      `a firewall likely drops UDP between the peers. ${traffic}`;
  }

  // -------------------------------------------------------------------------------------------
  // Helpers.

  /** Our public address as the server sees it, once registered. */
  get publicAddress(): Endpoint | undefined {
    return this.mappedMain;
  }

  private sameNat(): boolean {
    return !!this.intro && !!this.mappedMain && this.intro.peerMapped.address === this.mappedMain.address;
  }

  private fresh(timestamp: number, now: number): boolean {
    return Math.abs(timestamp - (now + this.clockOffset)) <= this.timing.timestampWindowMs;
  }

  private newTxid(): Uint8Array {
    return this.config.randomBytes(TRANSACTION_ID_LENGTH);
  }

  private track(txid: Uint8Array, o: Outstanding): void {
    this.outstanding.set(Buffer.from(txid).toString('hex'), o);
    // Bounded: at most one entry per retransmission over the timeout; trim the oldest if it grows.
    if (this.outstanding.size > 4096) {
      const first = this.outstanding.keys().next();
      if (!first.done) this.outstanding.delete(first.value);
    }
  }

  /** Takes an outstanding transaction if the answer comes from where the request went. */
  private claim(txid: Uint8Array, from: Endpoint, purpose: Outstanding['purpose']): Outstanding | undefined {
    const id = Buffer.from(txid).toString('hex');
    const o = this.outstanding.get(id);
    if (!o || o.purpose !== purpose || !sameEndpoint(o.to, from)) return undefined;
    this.outstanding.delete(id);
    return o;
  }

  private remember(id: string): void {
    this.seenProbes.add(id);
    if (this.seenProbes.size > MAX_SEEN_PROBES) {
      const first = this.seenProbes.values().next();
      if (!first.done) this.seenProbes.delete(first.value);
    }
  }
}
