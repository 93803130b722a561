/**
 * The rendezvous server's protocol core: sans-IO. `handleDatagram` takes one datagram and the time and
 * returns what to send; `handleTimer` expires registrations. Sockets, timers and logging live in
 * src/node/server.ts.
 *
 * Order of checks for every datagram, cheapest first, so that junk costs almost nothing and creates no
 * state: per-source rate limit (fixed table) → STUN framing → method → network id → MAC → timestamp →
 * replay cache → registration. A reply to anything that is not authenticated is never longer than the
 * datagram it answers (see `replyUnauthenticated`), except standard STUN Binding answers, whose excess
 * over the request is paid from a small global byte budget (docs/protocol.md, "Amplification").
 */
import { timingSafeEqual } from 'node:crypto';
import { endpointKey, sameEndpoint, type Endpoint } from '../codec/address.js';
import { decodeMessage, encodeMessage, Method, type BurrowMessage, type Introduction, type Outcome, type OutcomeReport, type RegisterRequest } from '../codec/messages.js';
import { Attr, findAttribute, verifyIntegrity, type StunMessage } from '../codec/stun.js';
import type { NetworkKeys } from '../crypto/keys.js';
import { ReplayCache, SourceRateLimiter, TokenBucket } from './limits.js';
import { MemoryStore, type Registration, type RegistrationStore } from './store.js';
import { decodeWgSync, encodeWgSyncOk, wgProof, WG_SYNC, type WgSyncRequest } from '../codec/wg-messages.js';
import { dh, generateKeyPair, looksLikeWireGuard } from '../crypto/wireguard.js';
import { WgRegistry, type WgLimits } from './wg.js';

export type ServerSocketId = 'main' | 'alternate';

/** An unacknowledged INTRODUCE is sent at most this many times, the n-th 100·2^(n-2) ms after the previous one. */
const PUSH_RETRIES = 5;
const PUSH_BACKOFF_MS = 100;

export interface ServerLimits {
  /** Registration lifetime; clients refresh well within it. */
  readonly lifetimeSeconds: number;
  readonly maxRegistrations: number;
  /** Accepted clock difference for REGISTER timestamps. */
  readonly timestampWindowMs: number;
  /** Per source IP: datagrams per second and burst. */
  readonly perSourceRate: number;
  readonly perSourceBurst: number;
  /** Slots in the per-source table (power of two, 16 bytes each). */
  readonly rateTableSlots: number;
  /** Global budget for STUN Binding answers that are longer than their request (bytes/s, burst). */
  readonly stunExcessBytesPerSecond: number;
  readonly stunExcessBurst: number;
  /** Authenticated messages remembered per timestamp window. */
  readonly replayCapacity: number;
}

export const DEFAULT_LIMITS: ServerLimits = {
  lifetimeSeconds: 60,
  maxRegistrations: 100_000,
  timestampWindowMs: 30_000,
  perSourceRate: 200,
  perSourceBurst: 400,
  rateTableSlots: 1 << 16,
  stunExcessBytesPerSecond: 2048,
  stunExcessBurst: 8192,
  replayCapacity: 1 << 19,
};

export interface ServerConfig {
  /** The networks this server serves: one per accepted secret. */
  readonly networks: readonly NetworkKeys[];
  /** Advertised in REGISTER answers (OTHER-ADDRESS) when the server listens on a second port. */
  readonly alternate?: Endpoint;
  readonly limits?: Partial<ServerLimits>;
  readonly store?: RegistrationStore;
  readonly wgLimits?: Partial<WgLimits>;
  /** Seeds the per-source hash; pass a random value. */
  readonly seed: number;
  /** Transaction ids for pushed introductions. */
  readonly randomBytes: (n: number) => Uint8Array;
  /**
   * A stateless worker of a multi-process server (src/node/cluster.ts): it answers STUN Binding itself
   * and returns every REGISTER, rate-limited and well-formed but otherwise unexamined, as a `forward`
   * action for the one core that owns the registrations (`handleForwarded`), so that pairs meet, and
   * the replay cache sees every message, in one place.
   */
  readonly forwardRegistrations?: boolean;
}

/**
 * Counters, read by the metrics endpoint (src/node/metrics.ts, docs/metrics.md) at scrape time and by
 * the tests. Plain integer increments: the packet path pays nothing else for metrics.
 */
export interface ServerStats {
  /** Messages and bytes in and out, UDP and TCP together (the stream* fields are the TCP share). */
  datagramsIn: number;
  bytesIn: number;
  datagramsOut: number;
  bytesOut: number;
  streamMessagesIn: number;
  streamBytesIn: number;
  streamMessagesOut: number;
  streamBytesOut: number;
  /** Bytes received from and sent to sources whose traffic did not authenticate (incl. STUN Binding). */
  unauthBytesIn: number;
  unauthBytesOut: number;
  stunBindings: number;
  stunBindingsUnanswered: number;
  /** Authenticated REGISTER requests accepted, refreshes included. */
  registrationsTotal: number;
  /** Of those, the ones that started a registration: a new name, or a new session (nonce) of a name. */
  registrationsNew: number;
  introductions: number;
  /** Outcome reports from introduced peers (one per peer and attempt), and reports that matched no registration. */
  outcomesConnected: number;
  outcomesFailed: number;
  outcomesUnmatched: number;
  authFailures: number;
  staleTimestamps: number;
  replaysRejected: number;
  malformed: number;
  rateLimited: number;
  evictions: number;
  expirations: number;
  /** Authenticated WG-SYNC exchanges answered. */
  wgSyncs: number;
}

/** Sizes of the server's state (see docs/protocol.md section 6 for the bounds). */
export interface ServerState {
  readonly registrations: number;
  readonly pendingPushes: number;
  /** TCP connections that registered something. */
  readonly tcpConnections: number;
  readonly replayEntries: number;
  readonly replayBytes: number;
  /** WireGuard interface records and handshake sessions (src/server/wg.ts). */
  readonly wgInterfaces: number;
  readonly wgSessions: number;
}

export type ServerEvent =
  | { readonly type: 'registered'; readonly network: string; readonly name: string; readonly from: Endpoint; readonly isNew: boolean }
  | { readonly type: 'introduced'; readonly network: string; readonly a: string; readonly b: string }
  | { readonly type: 'wg-endpoint'; readonly network: string; readonly key: string; readonly endpoint: Endpoint }
  | { readonly type: 'outcome'; readonly network: string; readonly name: string; readonly outcome: Outcome }
  | { readonly type: 'rejected'; readonly from: Endpoint; readonly reason: string }
  /** A worker process of a multi-process server exited unasked; the server stops (src/node/cluster.ts). */
  | { readonly type: 'worker-exited'; readonly pid: number; readonly code: number | null; readonly signal: string | null };

/** Where a registration came from and where its answers and pushes go. */
export type Channel = { readonly kind: 'udp' } | { readonly kind: 'tcp'; readonly conn: number };
const UDP: Channel = { kind: 'udp' };

export type ServerAction =
  | { readonly type: 'send'; readonly socket: ServerSocketId; readonly to: Endpoint; readonly data: Uint8Array }
  | { readonly type: 'send-stream'; readonly conn: number; readonly data: Uint8Array }
  | { readonly type: 'close-stream'; readonly conn: number }
  | { readonly type: 'forward'; readonly socket: ServerSocketId; readonly from: Endpoint; readonly data: Uint8Array }
  | { readonly type: 'event'; readonly event: ServerEvent };

export class ServerCore {
  readonly stats: ServerStats = {
    datagramsIn: 0, bytesIn: 0, datagramsOut: 0, bytesOut: 0,
    streamMessagesIn: 0, streamBytesIn: 0, streamMessagesOut: 0, streamBytesOut: 0, unauthBytesIn: 0, unauthBytesOut: 0,
    stunBindings: 0, stunBindingsUnanswered: 0, registrationsTotal: 0, registrationsNew: 0, introductions: 0,
    outcomesConnected: 0, outcomesFailed: 0, outcomesUnmatched: 0, authFailures: 0,
    staleTimestamps: 0, replaysRejected: 0, malformed: 0, rateLimited: 0, evictions: 0, expirations: 0, wgSyncs: 0,
  };
  readonly limits: ServerLimits;
  readonly store: RegistrationStore;
  private networks = new Map<string, NetworkKeys>();
  /**
   * Introductions pushed but not yet acknowledged, by recipient registration. A push is acknowledged by
   * the recipient's next REGISTER (whose answer carries the introduction anyway); until then it is
   * re-sent with back-off, so one lost datagram does not cost a waiting peer a whole refresh period.
   * At most one entry per registration.
   */
  private readonly pendingPushes = new Map<string, { to: Endpoint; channel: Channel; data: Uint8Array; nextAt: number; tries: number }>();
  /** Registrations made over each TCP connection, removed when it closes. */
  private readonly connRegistrations = new Map<number, Set<string>>();
  private nextSweepAt = 0;
  private readonly limiter: SourceRateLimiter;
  private readonly excess: TokenBucket;
  private readonly replays: ReplayCache;
  /** WireGuard endpoint discovery (src/server/wg.ts). */
  readonly wg: WgRegistry;
  /** The key WG-PROOF is computed against: random per server process, never derived from a secret. */
  private readonly proofKeys = generateKeyPair();

  constructor(private readonly config: ServerConfig) {
    this.limits = { ...DEFAULT_LIMITS, ...config.limits };
    this.store = config.store ?? new MemoryStore(this.limits.maxRegistrations);
    this.wg = new WgRegistry([], config.randomBytes, { maxPeers: this.limits.maxRegistrations, ...config.wgLimits });
    this.setNetworks(config.networks);
    this.limiter = new SourceRateLimiter(this.limits.rateTableSlots, this.limits.perSourceRate, this.limits.perSourceBurst, config.seed);
    this.excess = new TokenBucket(this.limits.stunExcessBytesPerSecond, this.limits.stunExcessBurst);
    // A message is accepted while |timestamp - now| ≤ window: up to 2 × window after it is first seen.
    // Tables rotating every 2 × window remember each fingerprint at least that long.
    this.replays = new ReplayCache(this.limits.replayCapacity, 2 * this.limits.timestampWindowMs);
  }

  /** Replaces the accepted secrets (SIGHUP reload). Registrations of dropped networks expire on their own. */
  setNetworks(networks: readonly NetworkKeys[]): void {
    this.networks = new Map(networks.map((n) => [n.networkIdHex, n]));
    this.wg.setNetworks(networks.map((n) => ({ networkIdHex: n.networkIdHex, identity: n.wireguard })));
  }

  /** How many networks (accepted secrets) are served. */
  get networkCount(): number {
    return this.networks.size;
  }

  /** How much the server holds, for tests and metrics: every table that traffic could grow. */
  get state(): ServerState {
    return {
      registrations: this.store.size,
      pendingPushes: this.pendingPushes.size,
      tcpConnections: this.connRegistrations.size,
      replayEntries: this.replays.entries,
      replayBytes: this.replays.bytes,
      wgInterfaces: this.wg.peerCount,
      wgSessions: this.wg.sessionCount,
    };
  }

  /** How often the driver should call `handleTimer`. */
  readonly timerIntervalMs = 50;

  /** Re-sends unacknowledged introductions and, once a second, expires registrations. */
  handleTimer(now: number): ServerAction[] {
    const out: ServerAction[] = [];
    if (now >= this.nextSweepAt) {
      this.stats.expirations += this.store.sweep(now);
      this.wg.sweep(now);
      this.nextSweepAt = now + 1000;
    }
    for (const [key, p] of this.pendingPushes) {
      if (now < p.nextAt) continue;
      if (p.tries >= PUSH_RETRIES) {
        this.pendingPushes.delete(key);
        continue;
      }
      p.tries++;
      p.nextAt = now + PUSH_BACKOFF_MS * 2 ** (p.tries - 1);
      this.reply(p.channel, p.to, p.data, out);
    }
    return out;
  }

  handleDatagram(socket: ServerSocketId, from: Endpoint, data: Uint8Array, now: number): ServerAction[] {
    const out: ServerAction[] = [];
    this.stats.datagramsIn++;
    this.stats.bytesIn += data.length;
    if (!this.limiter.allow(from.address, now)) {
      this.stats.rateLimited++;
      this.stats.unauthBytesIn += data.length;
      return out;
    }
    this.dispatchDatagram(socket, from, data, now, out);
    return out;
  }

  /**
   * A datagram a stateless worker received, counted and rate-limited there, and passed on in a
   * `forward` action. Everything from the framing on is checked again here.
   */
  handleForwarded(socket: ServerSocketId, from: Endpoint, data: Uint8Array, now: number): ServerAction[] {
    const out: ServerAction[] = [];
    this.dispatchDatagram(socket, from, data, now, out);
    return out;
  }

  private dispatchDatagram(socket: ServerSocketId, from: Endpoint, data: Uint8Array, now: number, out: ServerAction[]): void {
    const wireguard = looksLikeWireGuard(data);
    if (wireguard || stunMethodOf(data) === WG_SYNC) {
      // Stateful (WireGuard sessions, interface records): a stateless worker passes it to the state owner.
      if (this.config.forwardRegistrations === true) out.push({ type: 'forward', socket, from, data });
      else if (wireguard) this.handleWireGuard(socket, from, data, now, out);
      else if (socket === 'main') this.handleWgSync(from, data, now, out);
      else this.stats.malformed++;
      return;
    }
    const decoded = decodeMessage(data);
    if (!decoded.ok) {
      this.stats.malformed++;
      this.stats.unauthBytesIn += data.length;
      return;
    }
    const msg = decoded.msg;
    if (msg.kind === 'binding') {
      this.answerBinding(socket, msg, from, data.length, now, out);
      return;
    }
    if (socket === 'main' && msg.kind === 'report') {
      if (this.config.forwardRegistrations === true) out.push({ type: 'forward', socket, from, data });
      else this.handleReport(msg, decoded.stun, data, from, now, out);
      return;
    }
    if (socket !== 'main' || msg.kind !== 'register') {
      // Other Burrow messages are for peers, not for us: drop without a word.
      this.stats.malformed++;
      this.stats.unauthBytesIn += data.length;
      return;
    }
    if (msg.transport === 'tcp') {
      this.stats.malformed++; // a TCP registration must come over TCP
      this.stats.unauthBytesIn += data.length;
      return;
    }
    if (this.config.forwardRegistrations === true) {
      out.push({ type: 'forward', socket, from, data });
      return;
    }
    this.handleRegister(msg, decoded.stun, data, from, now, UDP, out);
  }

  /**
   * One STUN message from TCP connection `conn` (framed by the driver with splitStunStream). TCP peers
   * register over it and keep it open; their introductions are pushed down it. Returns 'close' as the
   * last action when the connection should be dropped.
   */
  handleStreamMessage(conn: number, from: Endpoint, data: Uint8Array, now: number): ServerAction[] {
    const out: ServerAction[] = [];
    this.stats.datagramsIn++;
    this.stats.bytesIn += data.length;
    this.stats.streamMessagesIn++;
    this.stats.streamBytesIn += data.length;
    if (!this.limiter.allow(from.address, now)) {
      this.stats.rateLimited++;
      return out;
    }
    const decoded = decodeMessage(data);
    if (!decoded.ok || (decoded.msg.kind !== 'register' && decoded.msg.kind !== 'binding')) {
      this.stats.malformed++;
      out.push({ type: 'close-stream', conn });
      return out;
    }
    const msg = decoded.msg;
    const channel: Channel = { kind: 'tcp', conn };
    if (msg.kind === 'binding') {
      this.stats.stunBindings++;
      this.reply(channel, from, encodeMessage({ kind: 'binding-ok', txid: msg.txid, mapped: from }, { fingerprint: msg.fingerprint }), out);
      return out;
    }
    if (msg.transport !== 'tcp') {
      this.stats.malformed++;
      out.push({ type: 'close-stream', conn });
      return out;
    }
    this.handleRegister(msg, decoded.stun, data, from, now, channel, out);
    return out;
  }

  /** A TCP connection closed: its registrations go with it (nothing could be pushed to them). */
  handleStreamClosed(conn: number): void {
    const keys = this.connRegistrations.get(conn);
    if (!keys) return;
    this.connRegistrations.delete(conn);
    for (const key of keys) {
      const [network, ...name] = key.split('\u0000');
      const reg = this.store.get(network ?? '', name.join('\u0000'), -Infinity);
      if (reg?.conn === conn) this.store.delete(reg.network, reg.name);
      this.pendingPushes.delete(key);
    }
  }

  // -------------------------------------------------------------------------------------------

  /** A WireGuard packet: a client's interface handshaking with us, or its keepalive. */
  private handleWireGuard(socket: ServerSocketId, from: Endpoint, data: Uint8Array, now: number, out: ServerAction[]): void {
    const outcome = this.wg.handlePacket(from, data, now);
    switch (outcome.type) {
      case 'answered':
        // The initiation authenticated an interface key but not yet the network secret: unauthenticated, and the
        // 92-byte answer is shorter than the 148-byte initiation.
        this.stats.unauthBytesIn += data.length;
        this.stats.unauthBytesOut += outcome.reply.length;
        this.send(socket, from, outcome.reply, out);
        return;
      case 'confirmed':
        if (outcome.moved) {
          out.push({ type: 'event', event: { type: 'wg-endpoint', network: outcome.network, key: outcome.key.toString('base64'), endpoint: outcome.endpoint } });
        }
        return;
      case 'refreshed':
        return;
      case 'rejected':
        this.stats.unauthBytesIn += data.length;
        if (outcome.reason === 'replayed-initiation' || outcome.reason === 'replayed-transport') this.stats.replaysRejected++;
        else this.stats.authFailures++;
        out.push({ type: 'event', event: { type: 'rejected', from, reason: `WireGuard: ${outcome.reason}` } });
        return;
    }
  }

  /** WG-SYNC: an interface announces itself (bound to its key by WG-PROOF) and asks for its peers' endpoints. */
  private handleWgSync(from: Endpoint, data: Uint8Array, now: number, out: ServerAction[]): void {
    const decoded = decodeWgSync(data);
    if (!decoded.ok || decoded.msg.kind !== 'wg-sync') {
      this.stats.malformed++;
      this.stats.unauthBytesIn += data.length;
      return;
    }
    const msg: WgSyncRequest = decoded.msg;
    const network = this.networks.get(Buffer.from(msg.networkId).toString('hex'));
    if (!network || verifyIntegrity(data, decoded.stun, network.clientToServer) !== 'valid') {
      this.stats.authFailures++;
      this.stats.unauthBytesIn += data.length;
      out.push({ type: 'event', event: { type: 'rejected', from, reason: network ? 'bad MAC (WG-SYNC)' : 'unknown network (secret differs)' } });
      this.replyUnauthenticated(from, data.length, { kind: 'error', method: WG_SYNC, txid: msg.txid, code: 401, reason: 'Unauthenticated', timestamp: undefined }, undefined, UDP, out);
      return;
    }
    if (Math.abs(msg.timestamp - now) > this.limits.timestampWindowMs) {
      this.stats.staleTimestamps++;
      this.replyUnauthenticated(from, data.length, { kind: 'error', method: WG_SYNC, txid: msg.txid, code: 438, reason: 'Stale', timestamp: now }, network.serverToClient, UDP, out);
      return;
    }
    if (!this.firstSeen(decoded.stun, data, from, now, out)) return;
    // The proof binds the announcement to the interface key: X25519 with the server's own random proof key, which
    // no holder of the secret knows, so only the holder of the interface's private key can compute it. Without a
    // valid proof (the first request, before the sender knows the proof key) nothing is announced, but the lookups
    // are answered: they need only the network secret.
    const net = network.networkIdHex;
    const shared = msg.proof ? dh(this.proofKeys.privateKey, msg.key) : undefined;
    const proof = shared ? wgProof(shared, msg) : undefined;
    if (proof && msg.proof && timingSafeEqualBytes(proof, msg.proof)) {
      this.wg.announce(net, msg.key, { listenPort: msg.listenPort, hosts: msg.hosts, mapping: msg.mapping }, now);
    } else if (msg.proof) {
      this.stats.authFailures++;
      out.push({ type: 'event', event: { type: 'rejected', from, reason: 'WG-PROOF does not match the interface key (or an old proof key)' } });
    }
    this.stats.wgSyncs++;
    const answer = encodeWgSyncOk({
      kind: 'wg-sync-ok',
      txid: msg.txid,
      timestamp: now,
      self: this.wg.lookup(net, msg.key, now),
      peers: msg.query.map((k) => this.wg.lookup(net, k, now)),
      alternate: this.config.alternate,
      proofKey: this.proofKeys.publicKey,
    }, network.serverToClient);
    this.reply(UDP, from, answer, out);
  }

  /** The replay check shared by every authenticated request: false (counted, reported) for a message seen before. */
  private firstSeen(stun: StunMessage, data: Uint8Array, from: Endpoint, now: number, out: ServerAction[]): boolean {
    const mac = findAttribute(stun, Attr.MESSAGE_INTEGRITY_SHA256)?.value ?? new Uint8Array(8);
    const seen = this.replays.check(mac, now);
    if (seen === 'fresh') return true;
    this.stats.replaysRejected++;
    this.stats.unauthBytesIn += data.length;
    out.push({ type: 'event', event: { type: 'rejected', from, reason: seen === 'replay' ? 'replayed message' : 'replay cache full' } });
    return false;
  }

  private answerBinding(socket: ServerSocketId, msg: Extract<BurrowMessage, { kind: 'binding' }>, from: Endpoint, requestLength: number, now: number, out: ServerAction[]): void {
    this.stats.stunBindings++;
    this.stats.unauthBytesIn += requestLength;
    const reply = encodeMessage({ kind: 'binding-ok', txid: msg.txid, mapped: from }, { fingerprint: msg.fingerprint });
    const excess = reply.length - requestLength;
    // Standard STUN clients send bare 20-byte requests whose answer is 32 bytes or more; pay the
    // difference from a small global budget so the server can never be a meaningful amplifier.
    if (excess > 0 && !this.excess.take(excess, now)) {
      this.stats.stunBindingsUnanswered++;
      return;
    }
    this.stats.unauthBytesOut += reply.length;
    this.send(socket, from, reply, out);
  }

  private handleRegister(msg: RegisterRequest, stun: StunMessage, data: Uint8Array, from: Endpoint, now: number, channel: Channel, out: ServerAction[]): void {
    const network = this.networks.get(Buffer.from(msg.networkId).toString('hex'));
    if (!network || verifyIntegrity(data, stun, network.clientToServer) !== 'valid') {
      this.stats.authFailures++;
      this.stats.unauthBytesIn += data.length;
      out.push({ type: 'event', event: { type: 'rejected', from, reason: network ? 'bad MAC' : 'unknown network (secret differs)' } });
      // Short and unauthenticated: it lets the client say that its secret differs from ours.
      this.replyUnauthenticated(from, data.length, { kind: 'error', method: Method.REGISTER, txid: msg.txid, code: 401, reason: 'Unauthenticated', timestamp: undefined }, undefined, channel, out);
      return;
    }
    if (Math.abs(msg.timestamp - now) > this.limits.timestampWindowMs) {
      this.stats.staleTimestamps++;
      // Authenticated with the server key so only a holder of the secret can use it to set its clock;
      // still never longer than the request, because a stale request may be a replay from anyone.
      this.replyUnauthenticated(from, data.length, { kind: 'error', method: Method.REGISTER, txid: msg.txid, code: 438, reason: 'Stale', timestamp: now }, network.serverToClient, channel, out);
      return;
    }
    if (!this.firstSeen(stun, data, from, now, out)) return;
    this.register(network, msg, from, now, channel, out);
  }

  /**
   * An outcome report (docs/protocol.md, "Outcome reports"): authenticated and replay-checked like a
   * REGISTER, counted once per registration session, which it ends. Never answered, so it can neither
   * amplify nor be used to probe the server.
   */
  private handleReport(msg: OutcomeReport, stun: StunMessage, data: Uint8Array, from: Endpoint, now: number, out: ServerAction[]): void {
    const network = this.networks.get(Buffer.from(msg.networkId).toString('hex'));
    if (!network || verifyIntegrity(data, stun, network.clientToServer) !== 'valid') {
      this.stats.authFailures++;
      this.stats.unauthBytesIn += data.length;
      out.push({ type: 'event', event: { type: 'rejected', from, reason: `outcome report: ${network ? 'bad MAC' : 'unknown network (secret differs)'}` } });
      return;
    }
    if (Math.abs(msg.timestamp - now) > this.limits.timestampWindowMs) {
      this.stats.staleTimestamps++;
      return;
    }
    if (!this.firstSeen(stun, data, from, now, out)) return;
    // Only the session that was introduced counts, once: the report ends its registration, so a second
    // copy, or a report for an expired or evicted registration, matches nothing.
    const reg = this.store.get(network.networkIdHex, msg.name, now);
    if (!reg || reg.nonce !== Buffer.from(msg.sessionNonce).toString('hex')) {
      this.stats.outcomesUnmatched++;
      return;
    }
    this.store.delete(reg.network, reg.name);
    this.pendingPushes.delete(`${reg.network}\u0000${reg.name}`);
    if (msg.outcome === 'connected') this.stats.outcomesConnected++;
    else this.stats.outcomesFailed++;
    out.push({ type: 'event', event: { type: 'outcome', network: reg.network, name: reg.name, outcome: msg.outcome } });
  }

  private register(network: NetworkKeys, msg: RegisterRequest, from: Endpoint, now: number, channel: Channel, out: ServerAction[]): void {
    // UDP and TCP registrations live in separate name spaces and only pair within their own.
    const net = channel.kind === 'tcp' ? `${network.networkIdHex}+tcp` : network.networkIdHex;
    const nonce = Buffer.from(msg.sessionNonce).toString('hex');
    const previous = this.store.get(net, msg.name, now);
    const reg: Registration = {
      network: net,
      name: msg.name,
      target: msg.target,
      nonce,
      mapped: from,
      candidates: msg.candidates,
      mapping: msg.mapping,
      expiresAt: now + this.limits.lifetimeSeconds * 1000,
      ...(channel.kind === 'tcp' ? { conn: channel.conn } : {}),
    };
    const changed =
      !previous ||
      previous.nonce !== nonce ||
      previous.target !== msg.target ||
      previous.mapping !== msg.mapping ||
      !sameEndpoint(previous.mapped, from) ||
      previous.candidates.map((c) => endpointKey(c.endpoint)).join() !== msg.candidates.map((c) => endpointKey(c.endpoint)).join();
    this.stats.evictions += this.store.put(reg).evicted;
    this.pendingPushes.delete(`${net}\u0000${msg.name}`); // any REGISTER acknowledges a push to its sender
    if (channel.kind === 'tcp') {
      let keys = this.connRegistrations.get(channel.conn);
      if (!keys) this.connRegistrations.set(channel.conn, (keys = new Set()));
      keys.add(`${net}\u0000${msg.name}`);
    }
    this.stats.registrationsTotal++;
    const isNew = !previous || previous.nonce !== nonce;
    if (isNew) this.stats.registrationsNew++;
    out.push({ type: 'event', event: { type: 'registered', network: net, name: msg.name, from, isNew } });

    const partner = this.store.get(net, msg.target, now);
    const paired = partner && partner.target === msg.name && partner.name !== msg.name ? partner : undefined;
    if (paired && changed) {
      // Push to the partner at once (it may have waited for minutes); our own copy rides in the answer.
      this.stats.introductions++;
      out.push({ type: 'event', event: { type: 'introduced', network: net, a: paired.name, b: msg.name } });
      const txid = this.config.randomBytes(12);
      const push: BurrowMessage = {
        kind: 'introduce',
        txid,
        networkId: network.networkId,
        recipientNonce: Buffer.from(paired.nonce, 'hex'),
        timestamp: now,
        intro: introductionOf(reg),
      };
      const data = encodeMessage(push, { key: network.serverToClient });
      const pairedChannel: Channel = paired.conn !== undefined ? { kind: 'tcp', conn: paired.conn } : UDP;
      this.reply(pairedChannel, paired.mapped, data, out);
      this.pendingPushes.set(`${net}\u0000${paired.name}`, { to: paired.mapped, channel: pairedChannel, data, nextAt: now + PUSH_BACKOFF_MS, tries: 1 });
      if (this.pendingPushes.size > this.limits.maxRegistrations) {
        const oldest = this.pendingPushes.keys().next();
        if (!oldest.done) this.pendingPushes.delete(oldest.value);
      }
    }
    const answer: BurrowMessage = {
      kind: 'register-ok',
      txid: msg.txid,
      mapped: from,
      lifetimeSeconds: this.limits.lifetimeSeconds,
      timestamp: now,
      alternate: this.config.alternate,
      intro: paired ? introductionOf(paired) : undefined,
    };
    this.reply(channel, from, encodeMessage(answer, { key: network.serverToClient }), out);
  }

  private reply(channel: Channel, to: Endpoint, data: Uint8Array, out: ServerAction[]): void {
    if (channel.kind === 'udp') {
      this.send('main', to, data, out);
      return;
    }
    this.stats.datagramsOut++;
    this.stats.bytesOut += data.length;
    this.stats.streamMessagesOut++;
    this.stats.streamBytesOut += data.length;
    out.push({ type: 'send-stream', conn: channel.conn, data });
  }

  /** Sends a reply to traffic we could not authenticate, but only if it is no longer than the request. */
  private replyUnauthenticated(to: Endpoint, requestLength: number, msg: BurrowMessage, key: Uint8Array | undefined, channel: Channel, out: ServerAction[]): void {
    const data = encodeMessage(msg, key ? { key } : {});
    if (data.length > requestLength) return;
    this.stats.unauthBytesOut += data.length;
    this.reply(channel, to, data, out);
  }

  private send(socket: ServerSocketId, to: Endpoint, data: Uint8Array, out: ServerAction[]): void {
    this.stats.datagramsOut++;
    this.stats.bytesOut += data.length;
    out.push({ type: 'send', socket, to, data });
  }
}

/** The STUN method of a datagram that has STUN's header shape, or -1. */
function stunMethodOf(data: Uint8Array): number {
  if (data.length < 20 || ((data[0] ?? 0xff) & 0xc0) !== 0 || data[4] !== 0x21 || data[5] !== 0x12 || data[6] !== 0xa4 || data[7] !== 0x42) return -1;
  const t = ((data[0] ?? 0) << 8) | (data[1] ?? 0);
  return ((t & 0x3e00) >> 2) | ((t & 0x00e0) >> 1) | (t & 0x000f);
}

function timingSafeEqualBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function introductionOf(reg: Registration): Introduction {
  return {
    peerName: reg.name,
    peerNonce: Buffer.from(reg.nonce, 'hex'),
    peerMapped: reg.mapped,
    peerCandidates: reg.candidates,
    peerMapping: reg.mapping,
  };
}
