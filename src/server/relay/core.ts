/**
 * The built-in relay: a TURN server (RFC 8656, UDP) that relays only between the two peers of an introduced pair.
 * Sans-IO: inputs are method calls carrying their time; outputs go to a `RelaySink` (send to a client through the
 * main port, send to a peer through an allocation's relayed socket, bind or release a relayed socket, look a
 * registration up, report an event). The Node driver (src/node/relay.ts) owns the sockets and the timer.
 *
 * Who may allocate. Long-term credentials derived from the network secret (src/codec/turn.ts): the username
 * `EXPIRY:NETID:NAME:PEER` names the network, the allocating peer and its partner; the password is
 * base64(HMAC-SHA256(relayKey, username)) with relayKey = HKDF(secret, "", "burrow relay v1"). Only holders of a
 * secret the server accepts can make a valid MESSAGE-INTEGRITY. Nonces are stateless (nonce.ts).
 *
 * Never an open relay. An allocation for NAME→PEER may install permissions (CreatePermission, ChannelBind) only for
 *  - the IP address PEER registered from (its server-reflexive address) or advertised as srflx/mapped candidate,
 *    when that registration targets NAME (the pair was introduced), checked against the registration store;
 *  - the exact relayed address of PEER's own allocation for PEER→NAME (relay to relay), or a relayed candidate PEER
 *    advertised.
 * Everything else gets 403. Datagrams are forwarded only under a live permission, and never to another allocation
 * of this server than the partner's, whatever IP permission the client holds.
 *
 * Bounds: allocations per peer name, per source address and in total; bytes per second per allocation and in total
 * (excess datagrams are dropped); an idle timeout; a lifetime with Refresh; a per-source rate for requests; a bound
 * on requests waiting for a lookup or a socket. All in config.ts.
 *
 * Relay to relay inside one server is short-circuited: a datagram from allocation A to the relayed address of its
 * partner B is handed to B as if it had arrived on B's socket from A's relayed address, without a system call.
 */
import { endpointKey, familyOf, type Endpoint, type Family } from '../../codec/address.js';
import { Attr } from '../../codec/stun.js';
import {
  BUILTIN_REALM,
  decodeChannelData,
  decodeTurn,
  encodeChannelData,
  encodeTurn,
  looksLikeChannelData,
  MAX_CHANNEL,
  MIN_CHANNEL,
  TRANSPORT_UDP,
  TurnError,
  TurnMethod,
  type BuiltinIdentity,
  type TurnFields,
  type TurnMessage,
} from '../../codec/turn.js';
import type { NetworkKeys } from '../../crypto/keys.js';
import { SourceRateLimiter, TokenBucket } from '../limits.js';
import type { Registration } from '../store.js';
import { resolveRelayLimits, type RelayLimits } from './config.js';
import { checkBuiltin } from './credentials.js';
import { NonceIssuer } from './nonce.js';

/** Why an Allocate was refused (the `reason` label of the refused-allocations metric). */
export type RefuseReason =
  | 'disabled'
  | 'unauthenticated'
  | 'bad-credentials'
  | 'expired-credentials'
  | 'bad-request'
  | 'unsupported-transport'
  | 'address-family'
  | 'quota-peer'
  | 'quota-source'
  | 'capacity'
  | 'bind-failed'
  | 'mismatch';

export const REFUSE_REASONS: readonly RefuseReason[] = ['disabled', 'unauthenticated', 'bad-credentials', 'expired-credentials', 'bad-request', 'unsupported-transport', 'address-family', 'quota-peer', 'quota-source', 'capacity', 'bind-failed', 'mismatch'];

export interface RelayStats {
  /** Allocations made since start. */
  allocationsTotal: number;
  /** Allocate requests refused, by reason. 401 challenges to requests without credentials count as `unauthenticated`. */
  readonly refused: Record<RefuseReason, number>;
  /** Permissions refused because the address is not the partner's (403). */
  permissionsForbidden: number;
  /** Application bytes and datagrams relayed (each direction counts). */
  bytesRelayed: number;
  datagramsRelayed: number;
  /** Datagrams dropped: over a rate limit, without a permission, too large. */
  droppedRate: number;
  droppedNoPermission: number;
  droppedTooLarge: number;
  /** TURN requests dropped by the per-source request rate. */
  requestsRateLimited: number;
  /** Undecodable TURN messages, and ChannelData from an address without an allocation. */
  malformed: number;
  /** Bytes of requests answered without authentication (challenges, errors) or dropped, and of those answers. */
  unauthBytesIn: number;
  unauthBytesOut: number;
  /** Unauthenticated requests left unanswered because the answer would be longer than they were. */
  unauthDropped: number;
}

function emptyRelayStats(): RelayStats {
  return {
    allocationsTotal: 0,
    refused: Object.fromEntries(REFUSE_REASONS.map((r) => [r, 0])) as Record<RefuseReason, number>,
    permissionsForbidden: 0,
    bytesRelayed: 0,
    datagramsRelayed: 0,
    droppedRate: 0,
    droppedNoPermission: 0,
    droppedTooLarge: 0,
    requestsRateLimited: 0,
    malformed: 0,
    unauthBytesIn: 0,
    unauthBytesOut: 0,
    unauthDropped: 0,
  };
}

export type RelayEvent =
  | { readonly type: 'relay-allocated'; readonly network: string; readonly name: string; readonly peer: string; readonly client: Endpoint; readonly relayed: Endpoint }
  | { readonly type: 'relay-released'; readonly network: string; readonly name: string; readonly peer: string; readonly reason: 'refresh-zero' | 'expired' | 'idle' | 'closed'; readonly bytes: number }
  | { readonly type: 'relay-refused'; readonly from: Endpoint; readonly reason: RefuseReason; readonly detail: string }
  | { readonly type: 'relay-forbidden'; readonly network: string; readonly name: string; readonly peer: string; readonly address: Endpoint };

/** Where the relay's outputs go; the driver implements it (tests collect into arrays). */
export interface RelaySink {
  /** Sends `data` to a client from the server's main UDP port. */
  toClient(to: Endpoint, data: Uint8Array): void;
  /** Sends `data` to a peer from allocation `alloc`'s relayed socket. */
  toPeer(alloc: number, to: Endpoint, data: Uint8Array): void;
  /** Binds a relayed socket for allocation `alloc` (family of the client); answer with `RelayCore.bound`. */
  bind(alloc: number, client: Endpoint, family: Family): void;
  /** Closes allocation `alloc`'s relayed socket. */
  release(alloc: number): void;
  /** Looks up the registration of `name` in `network`; answer with `RelayCore.lookupDone`. */
  lookup(ticket: number, network: string, name: string): void;
  event(event: RelayEvent): void;
}

export interface RelayConfig {
  /** False: Allocate gets 403 (`--no-relay`, or `--turn` naming another relay). */
  readonly enabled: boolean;
  readonly limits?: Partial<RelayLimits>;
  /** Keys the stateless nonces; pass 32 random bytes. */
  readonly nonceKey: Uint8Array;
  /**
   * Answer the 401/438 challenge to an unauthenticated request even when it is shorter than the answer (standard TURN
   * clients such as turnutils_uclient or browsers send a bare Allocate), within the per-source request rate. Off by
   * default: burrow's own client pads its first Allocate, and unauthenticated traffic never gets more bytes back.
   */
  readonly openChallenge?: boolean;
  /** Seeds the per-source table. */
  readonly seed: number;
}

interface Allocation {
  readonly id: number;
  readonly client: Endpoint;
  readonly clientKey: string;
  readonly network: string;
  readonly name: string;
  readonly peer: string;
  readonly username: string;
  readonly key: Uint8Array;
  readonly allocateTxid: string;
  relayed: Endpoint | undefined;
  relayedKey: string | undefined;
  lifetimeSeconds: number;
  expiresAt: number;
  lastActive: number;
  /** Permissions by IP address (the partner's registration) and by exact endpoint (the partner's relayed address). */
  readonly ipPermissions: Map<string, number>;
  readonly exactPermissions: Map<string, number>;
  readonly channels: Map<number, { peer: Endpoint; peerKey: string; expiresAt: number }>;
  readonly channelOf: Map<string, number>;
  readonly bucket: TokenBucket;
  bytes: number;
  /** The Allocate success, for a retransmitted Allocate. */
  success: Uint8Array | undefined;
  readonly fingerprint: boolean;
}

const SWEEP_MS = 1000;
/** Permissions and channels an allocation may hold (it may only reach its partner anyway). */
const MAX_PERMISSIONS = 16;
const MAX_CHANNELS = 16;

const UNAUTHORIZED = { code: TurnError.UNAUTHORIZED, reason: 'Unauthorized' };

export class RelayCore {
  readonly stats: RelayStats = emptyRelayStats();
  readonly limits: RelayLimits;
  private enabled: boolean;
  private networks: ReadonlyMap<string, NetworkKeys> = new Map();
  private readonly nonces: NonceIssuer;
  private readonly openChallenge: boolean;
  private readonly limiter: SourceRateLimiter;
  private readonly total: TokenBucket;
  private readonly byId = new Map<number, Allocation>();
  private readonly byClient = new Map<string, Allocation>();
  private readonly byRelayed = new Map<string, Allocation>();
  private readonly perSource = new Map<string, number>();
  private readonly perPeer = new Map<string, number>();
  private readonly pending = new Map<number, (reg: Registration | undefined, now: number) => void>();
  private nextId = 1;
  private nextTicket = 1;
  private nextSweepAt = 0;

  constructor(
    config: RelayConfig,
    private readonly sink: RelaySink,
  ) {
    this.limits = resolveRelayLimits(config.limits);
    this.enabled = config.enabled;
    this.nonces = new NonceIssuer(config.nonceKey, this.limits.nonceSeconds);
    this.openChallenge = config.openChallenge === true;
    this.limiter = new SourceRateLimiter(1 << 12, this.limits.controlRate, this.limits.controlBurst, config.seed);
    this.total = new TokenBucket(this.limits.totalRateBytesPerSecond, Math.max(this.limits.totalRateBytesPerSecond / 4, 1 << 20));
  }

  /** The accepted networks (secrets), by network id hex; replaced on reload. */
  setNetworks(networks: readonly NetworkKeys[]): void {
    this.networks = new Map(networks.map((n) => [n.networkIdHex, n]));
  }

  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
  }

  /** Allocations now (the sessions gauge). */
  get sessions(): number {
    return this.byId.size;
  }

  /** Whether a datagram on the main port is the relay's: ChannelData, or a STUN message of a TURN method. */
  static claims(data: Uint8Array): boolean {
    if (looksLikeChannelData(data)) return true;
    const m = stunMethod(data);
    return m >= TurnMethod.ALLOCATE && m <= TurnMethod.CHANNEL_BIND && m !== 0x005;
  }

  nextTimeoutAt(): number | undefined {
    return this.byId.size > 0 ? this.nextSweepAt : undefined;
  }

  /** A datagram from a client on the main port (one `claims` accepted). */
  fromClient(from: Endpoint, data: Uint8Array, now: number): void {
    if (looksLikeChannelData(data)) {
      const a = this.byClient.get(clientKeyOf(from));
      if (!a) {
        // Junk that starts like ChannelData ("hello", "GET /"), or data after an allocation ended.
        this.stats.malformed++;
        this.stats.unauthBytesIn += data.length;
        return;
      }
      const d = decodeChannelData(data);
      if (!d.ok) {
        this.stats.malformed++;
        return;
      }
      const ch = a.channels.get(d.channel);
      if (!ch || ch.expiresAt <= now) {
        this.stats.droppedNoPermission++;
        return;
      }
      this.forward(a, ch.peer, d.data, now);
      return;
    }
    // Send indications are data: bounded by the allocation's byte rate, not the request rate.
    const isSend = data[0] === 0x00 && data[1] === 0x16;
    if (!isSend && !this.limiter.allow(from.address, now)) {
      this.stats.requestsRateLimited++;
      this.stats.unauthBytesIn += data.length;
      return;
    }
    const d = decodeTurn(data);
    if (!d.ok) {
      this.stats.malformed++;
      this.stats.unauthBytesIn += data.length;
      return;
    }
    const m = d.msg;
    if (m.cls === 'indication') {
      if (m.method === TurnMethod.SEND) this.send(from, m, now);
      return;
    }
    if (m.cls !== 'request') return;
    switch (m.method) {
      case TurnMethod.ALLOCATE:
        this.allocate(from, m, data, now);
        return;
      case TurnMethod.REFRESH:
        this.withAllocation(from, m, data, now, (a) => { this.refresh(a, m, now); });
        return;
      case TurnMethod.CREATE_PERMISSION:
        this.withAllocation(from, m, data, now, (a) => { this.createPermission(a, m, now); });
        return;
      case TurnMethod.CHANNEL_BIND:
        this.withAllocation(from, m, data, now, (a) => { this.channelBind(a, m, now); });
        return;
    }
  }

  /** A datagram that arrived on allocation `alloc`'s relayed socket. */
  fromPeer(alloc: number, from: Endpoint, data: Uint8Array, now: number): void {
    const a = this.byId.get(alloc);
    if (!a) return;
    this.toClientFromPeer(a, from, data, now);
  }

  /** The driver bound (or failed to bind) allocation `alloc`'s relayed socket. */
  bound(alloc: number, relayed: Endpoint | undefined, now: number): void {
    const a = this.byId.get(alloc);
    if (!a) {
      if (relayed) this.sink.release(alloc);
      return;
    }
    if (!relayed) {
      this.remove(a, undefined);
      this.refuse(a.client, 'bind-failed', 'no relayed port could be bound');
      this.sink.toClient(a.client, encodeTurn(TurnMethod.ALLOCATE, 'error', Buffer.from(a.allocateTxid, 'hex'), { error: { code: TurnError.INSUFFICIENT_CAPACITY, reason: 'Insufficient Capacity' } }, { key: a.key, fingerprint: a.fingerprint }));
      return;
    }
    a.relayed = relayed;
    a.relayedKey = endpointKey(relayed);
    this.byRelayed.set(a.relayedKey, a);
    a.lastActive = now;
    a.success = encodeTurn(TurnMethod.ALLOCATE, 'success', Buffer.from(a.allocateTxid, 'hex'), {
      relayed,
      lifetime: a.lifetimeSeconds,
      mapped: a.client,
    }, { key: a.key, fingerprint: a.fingerprint });
    this.stats.allocationsTotal++;
    this.sink.event({ type: 'relay-allocated', network: a.network, name: a.name, peer: a.peer, client: a.client, relayed });
    this.sink.toClient(a.client, a.success);
  }

  /** The answer to a `lookup`. */
  lookupDone(ticket: number, reg: Registration | undefined, now: number): void {
    const k = this.pending.get(ticket);
    if (!k) return;
    this.pending.delete(ticket);
    k(reg, now);
  }

  timer(now: number): void {
    if (now < this.nextSweepAt) return;
    this.nextSweepAt = now + SWEEP_MS;
    for (const a of [...this.byId.values()]) {
      if (a.relayed === undefined) continue;
      if (now >= a.expiresAt) this.remove(a, 'expired');
      else if (now - a.lastActive >= this.limits.idleSeconds * 1000) this.remove(a, 'idle');
      else {
        for (const [k, t] of a.ipPermissions) if (t <= now) a.ipPermissions.delete(k);
        for (const [k, t] of a.exactPermissions) if (t <= now) a.exactPermissions.delete(k);
        for (const [n, c] of a.channels) {
          if (c.expiresAt <= now) {
            a.channels.delete(n);
            a.channelOf.delete(c.peerKey);
          }
        }
      }
    }
  }

  /** Releases every allocation (the server is stopping). */
  close(): void {
    for (const a of [...this.byId.values()]) this.remove(a, 'closed');
    this.pending.clear();
  }

  // ------------------------------------------------------------------------------------------
  // Requests.

  private allocate(from: Endpoint, m: TurnMessage, data: Uint8Array, now: number): void {
    const existing = this.byClient.get(clientKeyOf(from));
    if (existing) {
      // A retransmission gets the same answer; another Allocate on a 5-tuple with an allocation is a mismatch.
      if (Buffer.from(m.transactionId).toString('hex') === existing.allocateTxid) {
        if (existing.success) this.sink.toClient(from, existing.success);
        return;
      }
      this.refuse(from, 'mismatch', 'an allocation exists for this address');
      this.error(from, m, { code: TurnError.ALLOCATION_MISMATCH, reason: 'Allocation Mismatch' }, existing.key);
      return;
    }
    if (!this.enabled) {
      this.refuse(from, 'disabled', 'the built-in relay is off');
      this.error(from, m, { code: TurnError.FORBIDDEN, reason: 'Relay disabled on this server' });
      return;
    }
    const auth = this.authenticate(from, m, data, now, 'allocate');
    if (!auth) return;
    const { id, key } = auth;
    if (m.unknownRequired.length > 0) {
      this.refuse(from, 'bad-request', 'unknown comprehension-required attributes');
      this.error(from, m, { code: TurnError.UNKNOWN_ATTRIBUTE, reason: 'Unknown Attribute' }, key, { unknownAttributes: m.unknownRequired });
      return;
    }
    if (m.requestedTransport === undefined) {
      this.refuse(from, 'bad-request', 'no REQUESTED-TRANSPORT');
      this.error(from, m, { code: TurnError.BAD_REQUEST, reason: 'Bad Request' }, key);
      return;
    }
    if (m.requestedTransport !== TRANSPORT_UDP) {
      this.refuse(from, 'unsupported-transport', `transport ${m.requestedTransport}`);
      this.error(from, m, { code: TurnError.UNSUPPORTED_TRANSPORT, reason: 'Unsupported Transport Protocol' }, key);
      return;
    }
    if (m.reservationToken || (m.requestedFamily !== undefined && m.requestedFamily !== 1 && m.requestedFamily !== 2)) {
      this.refuse(from, 'bad-request', 'RESERVATION-TOKEN or unknown address family');
      this.error(from, m, { code: TurnError.INSUFFICIENT_CAPACITY, reason: 'Insufficient Capacity' }, key);
      return;
    }
    const family: Family = m.requestedFamily === 2 ? 6 : m.requestedFamily === 1 ? 4 : familyOf(from.address);
    if (family !== familyOf(from.address)) {
      this.refuse(from, 'address-family', 'a relayed address of the other family');
      this.error(from, m, { code: TurnError.ADDRESS_FAMILY_NOT_SUPPORTED, reason: 'Address Family not Supported' }, key);
      return;
    }
    if (this.byId.size >= this.limits.sessions) {
      this.refuse(from, 'capacity', `${this.limits.sessions} allocations`);
      this.error(from, m, { code: TurnError.INSUFFICIENT_CAPACITY, reason: 'Insufficient Capacity' }, key);
      return;
    }
    const peerKey = `${id.networkIdHex}|${id.name}`;
    if ((this.perPeer.get(peerKey) ?? 0) >= this.limits.sessionsPerPeer) {
      this.refuse(from, 'quota-peer', `${this.limits.sessionsPerPeer} allocations for ${id.name}`);
      this.error(from, m, { code: TurnError.ALLOCATION_QUOTA_REACHED, reason: 'Allocation Quota Reached' }, key);
      return;
    }
    if ((this.perSource.get(from.address) ?? 0) >= this.limits.sessionsPerSource) {
      this.refuse(from, 'quota-source', `${this.limits.sessionsPerSource} allocations from ${from.address}`);
      this.error(from, m, { code: TurnError.ALLOCATION_QUOTA_REACHED, reason: 'Allocation Quota Reached' }, key);
      return;
    }
    const lifetime = this.grantLifetime(m.lifetime);
    const a: Allocation = {
      id: this.nextId++,
      client: from,
      clientKey: clientKeyOf(from),
      network: id.networkIdHex,
      name: id.name,
      peer: id.peer,
      username: m.username ?? '',
      key,
      allocateTxid: Buffer.from(m.transactionId).toString('hex'),
      relayed: undefined,
      relayedKey: undefined,
      lifetimeSeconds: lifetime,
      expiresAt: now + lifetime * 1000,
      lastActive: now,
      ipPermissions: new Map(),
      exactPermissions: new Map(),
      channels: new Map(),
      channelOf: new Map(),
      bucket: new TokenBucket(this.limits.rateBytesPerSecond, Math.max(this.limits.rateBytesPerSecond / 4, 256 * 1024)),
      bytes: 0,
      success: undefined,
      fingerprint: m.stun.attributes.some((x) => x.type === Attr.FINGERPRINT),
    };
    this.byId.set(a.id, a);
    this.byClient.set(a.clientKey, a);
    this.perSource.set(from.address, (this.perSource.get(from.address) ?? 0) + 1);
    this.perPeer.set(peerKey, (this.perPeer.get(peerKey) ?? 0) + 1);
    if (this.byId.size === 1) this.nextSweepAt = now + SWEEP_MS;
    this.sink.bind(a.id, from, family);
  }

  private refresh(a: Allocation, m: TurnMessage, now: number): void {
    if (m.lifetime === 0) {
      this.reply(a, m, 'success', { lifetime: 0 });
      this.remove(a, 'refresh-zero');
      return;
    }
    const lifetime = this.grantLifetime(m.lifetime);
    a.lifetimeSeconds = lifetime;
    a.expiresAt = now + lifetime * 1000;
    this.reply(a, m, 'success', { lifetime });
  }

  private createPermission(a: Allocation, m: TurnMessage, now: number): void {
    if (m.peers.length === 0 || m.peers.length > MAX_PERMISSIONS) {
      this.reply(a, m, 'error', { error: { code: TurnError.BAD_REQUEST, reason: 'Bad Request' } });
      return;
    }
    this.checkPeers(a, m.peers, now, (verdicts, at) => {
      if (verdicts.some((v) => v === undefined)) {
        this.reply(a, m, 'error', { error: { code: TurnError.FORBIDDEN, reason: 'Forbidden: not your partner' } });
        return;
      }
      if (a.ipPermissions.size + a.exactPermissions.size + verdicts.length > MAX_PERMISSIONS) {
        this.reply(a, m, 'error', { error: { code: TurnError.INSUFFICIENT_CAPACITY, reason: 'Too many permissions' } });
        return;
      }
      m.peers.forEach((p, i) => { this.permit(a, p, verdicts[i] ?? 'ip', at); });
      this.reply(a, m, 'success', {});
    });
  }

  private channelBind(a: Allocation, m: TurnMessage, now: number): void {
    const channel = m.channel;
    const peer = m.peers[0];
    if (channel === undefined || peer === undefined || channel < MIN_CHANNEL || channel > MAX_CHANNEL) {
      this.reply(a, m, 'error', { error: { code: TurnError.BAD_REQUEST, reason: 'Bad Request' } });
      return;
    }
    const peerKey = endpointKey(peer);
    const bound = a.channels.get(channel);
    const boundTo = a.channelOf.get(peerKey);
    if ((bound && bound.peerKey !== peerKey) || (boundTo !== undefined && boundTo !== channel)) {
      this.reply(a, m, 'error', { error: { code: TurnError.BAD_REQUEST, reason: 'Channel or peer bound otherwise' } });
      return;
    }
    if (!bound && a.channels.size >= MAX_CHANNELS) {
      this.reply(a, m, 'error', { error: { code: TurnError.INSUFFICIENT_CAPACITY, reason: 'Too many channels' } });
      return;
    }
    this.checkPeers(a, [peer], now, (verdicts, at) => {
      const verdict = verdicts[0];
      if (verdict === undefined) {
        this.reply(a, m, 'error', { error: { code: TurnError.FORBIDDEN, reason: 'Forbidden: not your partner' } });
        return;
      }
      if (!this.byId.has(a.id)) return;
      a.channels.set(channel, { peer, peerKey, expiresAt: at + this.limits.channelSeconds * 1000 });
      a.channelOf.set(peerKey, channel);
      this.permit(a, peer, verdict, at);
      this.reply(a, m, 'success', {});
    });
  }

  private send(from: Endpoint, m: TurnMessage, now: number): void {
    const a = this.byClient.get(clientKeyOf(from));
    const peer = m.peers[0];
    if (!a || !peer || !m.data) return;
    this.forward(a, peer, m.data, now);
  }

  // ------------------------------------------------------------------------------------------
  // Data.

  private forward(a: Allocation, peer: Endpoint, payload: Uint8Array, now: number): void {
    if (!a.relayed) return;
    if (payload.length > this.limits.maxPayload) {
      this.stats.droppedTooLarge++;
      return;
    }
    if (!this.permitted(a, peer, now)) {
      this.stats.droppedNoPermission++;
      return;
    }
    const local = this.byRelayed.get(endpointKey(peer));
    if (local && !isPartner(a, local)) {
      // An IP permission never reaches another allocation of this server.
      this.stats.droppedNoPermission++;
      return;
    }
    if (!a.bucket.take(payload.length, now) || !this.total.take(payload.length, now)) {
      this.stats.droppedRate++;
      return;
    }
    a.lastActive = now;
    a.bytes += payload.length;
    this.stats.bytesRelayed += payload.length;
    this.stats.datagramsRelayed++;
    if (local) this.toClientFromPeer(local, a.relayed, payload, now, true);
    else this.sink.toPeer(a.id, peer, payload);
  }

  /** `counted`: a datagram between two allocations of this server, counted once already (by the sender's side). */
  private toClientFromPeer(a: Allocation, from: Endpoint, payload: Uint8Array, now: number, counted = false): void {
    if (payload.length > this.limits.maxPayload) {
      this.stats.droppedTooLarge++;
      return;
    }
    if (!this.permitted(a, from, now)) {
      this.stats.droppedNoPermission++;
      return;
    }
    if (!a.bucket.take(payload.length, now) || (!counted && !this.total.take(payload.length, now))) {
      this.stats.droppedRate++;
      return;
    }
    a.lastActive = now;
    a.bytes += payload.length;
    if (!counted) {
      this.stats.bytesRelayed += payload.length;
      this.stats.datagramsRelayed++;
    }
    const fromKey = endpointKey(from);
    const channel = a.channelOf.get(fromKey);
    const c = channel !== undefined ? a.channels.get(channel) : undefined;
    if (channel !== undefined && c && c.expiresAt > now) {
      this.sink.toClient(a.client, encodeChannelData(channel, payload));
      return;
    }
    this.sink.toClient(a.client, encodeTurn(TurnMethod.DATA, 'indication', this.txid(), { peers: [from], data: payload }));
  }

  private permitted(a: Allocation, peer: Endpoint, now: number): boolean {
    const byIp = a.ipPermissions.get(peer.address);
    if (byIp !== undefined && byIp > now) return true;
    const exact = a.exactPermissions.get(endpointKey(peer));
    return exact !== undefined && exact > now;
  }

  private permit(a: Allocation, peer: Endpoint, verdict: 'ip' | 'exact', now: number): void {
    const until = now + this.limits.permissionSeconds * 1000;
    if (verdict === 'ip') a.ipPermissions.set(peer.address, until);
    else a.exactPermissions.set(endpointKey(peer), until);
  }

  /**
   * Whether each of `peers` is `a`'s partner: `exact` (the partner's relayed address), `ip` (an address the
   * partner registered from), or undefined (forbidden). Asks the registration store unless every peer is the
   * partner's allocation here, or already permitted.
   */
  private checkPeers(a: Allocation, peers: readonly Endpoint[], now: number, done: (verdicts: ('ip' | 'exact' | undefined)[], at: number) => void): void {
    const local = peers.map((p): 'ip' | 'exact' | undefined => {
      const other = this.byRelayed.get(endpointKey(p));
      if (other) return isPartner(a, other) ? 'exact' : undefined;
      if (a.exactPermissions.has(endpointKey(p))) return 'exact';
      if (a.ipPermissions.has(p.address)) return 'ip';
      return undefined;
    });
    const forbidden = (verdicts: ('ip' | 'exact' | undefined)[]): void => {
      verdicts.forEach((v, i) => {
        const p = peers[i];
        if (v === undefined && p) {
          this.stats.permissionsForbidden++;
          this.sink.event({ type: 'relay-forbidden', network: a.network, name: a.name, peer: a.peer, address: p });
        }
      });
    };
    if (local.every((v) => v !== undefined)) {
      done(local, now);
      return;
    }
    // Another allocation of this server that is not the partner's: never.
    if (peers.some((p, i) => local[i] === undefined && this.byRelayed.has(endpointKey(p)))) {
      forbidden(local);
      done(local, now);
      return;
    }
    if (this.pending.size >= this.limits.maxPending) {
      done(peers.map(() => undefined), now);
      return;
    }
    const ticket = this.nextTicket++;
    this.pending.set(ticket, (reg, at) => {
      if (!this.byId.has(a.id)) return;
      const verdicts = peers.map((p, i) => local[i] ?? partnerVerdict(a, reg, p));
      forbidden(verdicts);
      done(verdicts, at);
    });
    this.sink.lookup(ticket, a.network, a.peer);
  }

  // ------------------------------------------------------------------------------------------
  // Authentication.

  /**
   * Checks a request's long-term credentials. Answers the errors itself (401 with REALM and NONCE, 438 with a new
   * NONCE) and returns false then.
   */
  private authenticate(from: Endpoint, m: TurnMessage, data: Uint8Array, now: number, kind: 'allocate' | 'other'): { id: BuiltinIdentity; key: Uint8Array } | false {
    const challenge = (reason: RefuseReason, detail: string, code: { code: number; reason: string } = UNAUTHORIZED): false => {
      if (kind === 'allocate') this.refuse(from, reason, detail);
      this.error(from, m, code, undefined, { realm: BUILTIN_REALM, nonce: this.nonces.issue(from.address, now) });
      return false;
    };
    const hasIntegrity = m.stun.attributes.some((x) => x.type === Attr.MESSAGE_INTEGRITY);
    if (!hasIntegrity || m.username === undefined || m.realm === undefined || m.nonce === undefined) {
      return challenge('unauthenticated', 'no credentials');
    }
    const fresh = this.nonces.check(m.nonce, from.address, now);
    if (fresh !== 'fresh') return challenge('unauthenticated', `${fresh} nonce`, { code: TurnError.STALE_NONCE, reason: 'Stale Nonce' });
    const c = checkBuiltin(this.networks, m, data, now, kind === 'allocate', this.limits.maxCredentialSeconds);
    if (!c.ok) return challenge(c.reason, c.detail);
    return { id: c.id, key: c.key };
  }

  /** Runs `then` for a request on an existing allocation with valid credentials (its own username). */
  private withAllocation(from: Endpoint, m: TurnMessage, data: Uint8Array, now: number, then: (a: Allocation) => void): void {
    const a = this.byClient.get(clientKeyOf(from));
    if (!a?.relayed) {
      this.error(from, m, { code: TurnError.ALLOCATION_MISMATCH, reason: 'Allocation Mismatch' });
      return;
    }
    const auth = this.authenticate(from, m, data, now, 'other');
    if (!auth) return;
    if (m.username !== a.username) {
      this.error(from, m, { code: TurnError.WRONG_CREDENTIALS, reason: 'Wrong Credentials' }, auth.key);
      return;
    }
    then(a);
  }

  // ------------------------------------------------------------------------------------------
  // Helpers.

  private grantLifetime(requested: number | undefined): number {
    const l = this.limits;
    if (requested === undefined || requested < l.defaultLifetimeSeconds) return l.defaultLifetimeSeconds;
    return Math.min(requested, l.maxLifetimeSeconds);
  }

  private remove(a: Allocation, reason: 'refresh-zero' | 'expired' | 'idle' | 'closed' | undefined): void {
    if (!this.byId.delete(a.id)) return;
    this.byClient.delete(a.clientKey);
    if (a.relayedKey) this.byRelayed.delete(a.relayedKey);
    decrement(this.perSource, a.client.address);
    decrement(this.perPeer, `${a.network}|${a.name}`);
    if (a.relayed) this.sink.release(a.id);
    if (reason) this.sink.event({ type: 'relay-released', network: a.network, name: a.name, peer: a.peer, reason, bytes: a.bytes });
  }

  private refuse(from: Endpoint, reason: RefuseReason, detail: string): void {
    this.stats.refused[reason]++;
    this.sink.event({ type: 'relay-refused', from, reason, detail });
  }

  private reply(a: Allocation, m: TurnMessage, cls: 'success' | 'error', fields: TurnFields): void {
    this.sink.toClient(a.client, encodeTurn(m.method, cls, m.transactionId, fields, { key: a.key, fingerprint: a.fingerprint }));
  }

  private error(to: Endpoint, m: TurnMessage, error: { code: number; reason: string }, key?: Uint8Array, extra: TurnFields = {}): void {
    const fingerprint = m.stun.attributes.some((x) => x.type === Attr.FINGERPRINT);
    const bytes = encodeTurn(m.method, 'error', m.transactionId, { error, ...extra }, { ...(key ? { key } : {}), fingerprint });
    if (!key) {
      // Unauthenticated: counted, and never longer than what it answers (no amplification: only a bare Binding may get
      // more than it carried). Clients pad their first Allocate with SOFTWARE to get the challenge; --relay-open-challenge
      // answers standard clients' bare Allocates too (within the per-source request rate).
      const requestLength = 20 + m.stun.attributes.reduce((n, a) => n + 4 + ((a.value.length + 3) & ~3), 0);
      this.stats.unauthBytesIn += requestLength;
      if (bytes.length > requestLength && !this.openChallenge) {
        this.stats.unauthDropped++;
        return;
      }
      this.stats.unauthBytesOut += bytes.length;
    }
    this.sink.toClient(to, bytes);
  }

  /** Transaction ids of Data indications: unique enough, never secret (indications are not answered). */
  private txidCounter = 0;
  private readonly txidBuf = Buffer.alloc(12);
  private txid(): Uint8Array {
    this.txidCounter = (this.txidCounter + 1) >>> 0;
    const b = Buffer.from(this.txidBuf);
    b.writeUInt32BE(this.txidCounter, 8);
    return b;
  }
}

function isPartner(a: Allocation, other: Allocation): boolean {
  return other.network === a.network && other.name === a.peer && other.peer === a.name;
}

/** `ip` if `peer` is an address `reg` (the partner's registration, which must target `a.name`) registered from. */
function partnerVerdict(a: Allocation, reg: Registration | undefined, peer: Endpoint): 'ip' | 'exact' | undefined {
  if (!reg || reg.name !== a.peer || reg.target !== a.name) return undefined;
  if (reg.mapped.address === peer.address) return 'ip';
  for (const c of reg.candidates) {
    if (c.kind === 'relayed' && c.endpoint.address === peer.address && c.endpoint.port === peer.port) return 'exact';
    if ((c.kind === 'srflx' || c.kind === 'mapped' || c.kind === 'prflx') && c.endpoint.address === peer.address) return 'ip';
  }
  return undefined;
}

function clientKeyOf(e: Endpoint): string {
  return `${e.address}|${e.port}`;
}

function decrement(map: Map<string, number>, key: string): void {
  const n = (map.get(key) ?? 1) - 1;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
}

/** The STUN method of a datagram with STUN's header shape, or -1. */
function stunMethod(data: Uint8Array): number {
  if (data.length < 20 || ((data[0] ?? 0xff) & 0xc0) !== 0 || data[4] !== 0x21 || data[5] !== 0x12 || data[6] !== 0xa4 || data[7] !== 0x42) return -1;
  const t = ((data[0] ?? 0) << 8) | (data[1] ?? 0);
  return ((t & 0x3e00) >> 2) | ((t & 0x00e0) >> 1) | (t & 0x000f);
}
