/**
 * WireGuard endpoint discovery, server side: the handshake responder, sans-IO. The server is a WireGuard *responder*
 * with one key pair per network (derived from the network secret, so `burrow serve` needs no new flags or state).
 * Clients add it as a WireGuard peer; their own WireGuard then handshakes with it from its own listen port, and the
 * source address of those packets is the public mapping of that port — learnt without raw sockets and without
 * touching the port.
 *
 * Two kinds of state, kept apart:
 *  - here, the responder's own: handshake sessions (transport keys and counters) and, per interface key, the last
 *    accepted TAI64N timestamp and current session. They belong to the server the interface handshakes with and
 *    never leave its process (a multi-process server passes WireGuard packets to the one process that holds them);
 *  - in the shared `WgRegistry` (src/server/wg-registry.ts): what the interface proved (its endpoint) and announced,
 *    which every server answers WG-SYNC from. The responder reports endpoints as `endpoint` outcomes; the core
 *    writes them to the registry.
 *
 * What counts as proof:
 *  - a handshake initiation proves the initiator holds the private key of the interface key it names (Noise IK);
 *  - the first transport packet after our response proves it also holds the preshared key, i.e. the network secret
 *    (psk2 mixes it into the transport keys). Only then is an endpoint recorded; every later authenticated transport
 *    packet (WireGuard's keepalives) refreshes it, as WireGuard's own roaming does.
 * Replays: initiations must carry a TAI64N timestamp greater than the last accepted one for that key (WireGuard's own
 * rule); transport counters must increase per session. Everything is bounded (maps with caps, evicting the oldest)
 * and expires.
 */
import type { Endpoint } from '../codec/address.js';
import {
  consumeInitiation,
  createResponse,
  generateKeyPair,
  initiationMac1Valid,
  openTransport,
  transportHeader,
  WgType,
  type KeyPair,
  type ServerIdentity,
} from '../crypto/wireguard.js';
import { TokenBucket } from './limits.js';

export interface WgLimits {
  /** Interfaces remembered (per server, all networks), by the responder and by the in-memory registry. */
  readonly maxPeers: number;
  /** Confirmed handshake sessions remembered (about one per interface). */
  readonly maxSessions: number;
  /** Answered but unconfirmed handshakes remembered; a flood of them never displaces a confirmed session. */
  readonly maxPending: number;
  /**
   * Handshake initiations answered per second, server-wide (each costs four X25519 operations, about 1 ms here).
   * Anyone who knows the server's public key can send valid initiations; this caps what they can cost. Interfaces
   * re-handshake every 2 minutes, so the default serves about 60,000 interfaces.
   */
  readonly initiationsPerSecond: number;
  readonly initiationBurst: number;
  /** A record without an authenticated packet (or, in the registry, announcement) for this long is forgotten. */
  readonly peerLifetimeMs: number;
  /** WireGuard's REJECT_AFTER_TIME: a session is never used longer. */
  readonly sessionLifetimeMs: number;
  /** An answered initiation must be confirmed by a transport packet within this time. */
  readonly pendingLifetimeMs: number;
}

export const DEFAULT_WG_LIMITS: WgLimits = {
  maxPeers: 100_000,
  maxSessions: 100_000,
  maxPending: 4096,
  initiationsPerSecond: 500,
  initiationBurst: 1000,
  peerLifetimeMs: 180_000,
  sessionLifetimeMs: 180_000,
  pendingLifetimeMs: 10_000,
};

export interface WgNetwork {
  readonly networkIdHex: string;
  readonly identity: ServerIdentity;
}

/** What the responder remembers per interface key. */
interface PeerRecord {
  readonly network: string;
  readonly key: Buffer;
  endpoint: Endpoint | undefined;
  /** Greatest accepted TAI64N, as hex (fixed width, so string order is time order). */
  lastTimestamp: string;
  sessionIndex: number | undefined;
  touchedAt: number;
}

interface Session {
  readonly network: string;
  readonly peerKey: Buffer;
  readonly receiveKey: Buffer;
  readonly timestamp: string;
  /** Highest counter accepted; -1 before the first packet. */
  maxCounter: bigint;
  expiresAt: number;
}

export type WgPacketOutcome =
  | { readonly type: 'answered'; readonly reply: Uint8Array }
  /**
   * An authenticated transport packet of the interface's current session: its source is the interface's endpoint.
   * `confirmed` for the session's first packet (the network's preshared key is proven), `moved` when the endpoint
   * differs from the last one seen.
   */
  | { readonly type: 'endpoint'; readonly network: string; readonly key: Buffer; readonly endpoint: Endpoint; readonly confirmed: boolean; readonly moved: boolean }
  /** Authentic, but of a session that is no longer the interface's current one: nothing to record. */
  | { readonly type: 'stale-session' }
  | { readonly type: 'rejected'; readonly reason: WgRejectReason };

export type WgRejectReason =
  | 'unknown-server-key'
  | 'bad-initiation'
  | 'replayed-initiation'
  | 'initiation-budget'
  | 'unknown-session'
  | 'bad-transport'
  | 'replayed-transport'
  | 'unexpected-type';

export interface WgStats {
  initiations: number;
  confirmations: number;
  keepalives: number;
  rejected: number;
  endpointChanges: number;
}

function recordKey(network: string, key: Uint8Array): string {
  return `${network}:${Buffer.from(key).toString('base64')}`;
}

export class WgResponder {
  readonly stats: WgStats = { initiations: 0, confirmations: 0, keepalives: 0, rejected: 0, endpointChanges: 0 };
  readonly limits: WgLimits;
  private networks: WgNetwork[] = [];
  private readonly peers = new Map<string, PeerRecord>();
  /** Confirmed sessions, by our index. */
  private readonly sessions = new Map<number, Session>();
  /** Answered, unconfirmed handshakes, by our index, and their initiator ephemeral keys (duplicates are replays). */
  private readonly pending = new Map<number, Session & { readonly ephemeral: string }>();
  private readonly pendingEphemerals = new Set<string>();
  private readonly initiations: TokenBucket;

  constructor(
    networks: readonly WgNetwork[],
    private readonly randomBytes: (n: number) => Uint8Array,
    limits: Partial<WgLimits> = {},
    private readonly ephemeral: () => KeyPair = generateKeyPair,
  ) {
    this.limits = { ...DEFAULT_WG_LIMITS, ...limits };
    this.initiations = new TokenBucket(this.limits.initiationsPerSecond, this.limits.initiationBurst);
    this.setNetworks(networks);
  }

  setNetworks(networks: readonly WgNetwork[]): void {
    this.networks = [...networks];
  }

  get peerCount(): number {
    return this.peers.size;
  }

  /** Confirmed and pending sessions. */
  get sessionCount(): number {
    return this.sessions.size + this.pending.size;
  }

  identityOf(networkIdHex: string): ServerIdentity | undefined {
    return this.networks.find((n) => n.networkIdHex === networkIdHex)?.identity;
  }

  /** One WireGuard-shaped datagram from `from`. */
  handlePacket(from: Endpoint, data: Uint8Array, now: number): WgPacketOutcome {
    switch (data[0] ?? 0) {
      case WgType.INITIATION:
        return this.initiation(data, now);
      case WgType.TRANSPORT:
        return this.transport(from, data, now);
      default:
        // Responses and cookie replies are for initiators; the server never initiates.
        return this.reject('unexpected-type');
    }
  }

  private reject(reason: WgRejectReason): WgPacketOutcome {
    this.stats.rejected++;
    return { type: 'rejected', reason };
  }

  private initiation(data: Uint8Array, now: number): WgPacketOutcome {
    // mac1 first: it is cheap and names the network (each network has its own server key).
    const network = this.networks.find((n) => initiationMac1Valid(data, n.identity));
    if (!network) return this.reject('unknown-server-key');
    // The same initiation again (a replay, or a copy) while it is pending: nothing new to answer.
    const ephemeral = Buffer.from(data.subarray(8, 40)).toString('base64');
    if (this.pendingEphemerals.has(ephemeral)) return this.reject('replayed-initiation');
    if (!this.initiations.take(1, now)) return this.reject('initiation-budget');
    const consumed = consumeInitiation(data, network.identity);
    if (!consumed.ok) return this.reject('bad-initiation');
    const init = consumed.value;
    const timestamp = init.timestamp.toString('hex');
    const record = this.peers.get(recordKey(network.networkIdHex, init.peerKey));
    if (record && timestamp <= record.lastTimestamp) return this.reject('replayed-initiation');
    let index = 0;
    do index = Buffer.from(this.randomBytes(4)).readUInt32LE(0);
    while (this.sessions.has(index) || this.pending.has(index));
    const keys = createResponse(init, network.identity, this.ephemeral(), index);
    if (!keys) return this.reject('bad-initiation');
    this.stats.initiations++;
    while (this.pending.size >= this.limits.maxPending) {
      const oldest = this.pending.entries().next();
      if (oldest.done) break;
      this.dropPending(oldest.value[0]);
    }
    this.pending.set(index, {
      network: network.networkIdHex,
      peerKey: init.peerKey,
      receiveKey: keys.receiveKey,
      timestamp,
      maxCounter: -1n,
      expiresAt: now + this.limits.pendingLifetimeMs,
      ephemeral,
    });
    this.pendingEphemerals.add(ephemeral);
    // 92 bytes in answer to 148: never an amplifier.
    return { type: 'answered', reply: keys.packet };
  }

  private dropPending(index: number): void {
    const p = this.pending.get(index);
    if (!p) return;
    this.pending.delete(index);
    this.pendingEphemerals.delete(p.ephemeral);
  }

  private addSession(index: number, session: Session): void {
    while (this.sessions.size >= this.limits.maxSessions) {
      const oldest = this.sessions.keys().next();
      if (oldest.done) break;
      this.sessions.delete(oldest.value);
    }
    this.sessions.set(index, session);
  }

  private transport(from: Endpoint, data: Uint8Array, now: number): WgPacketOutcome {
    const header = transportHeader(data);
    if (!header) return this.reject('bad-transport');
    const confirmed = this.sessions.get(header.receiverIndex);
    const session = confirmed ?? this.pending.get(header.receiverIndex);
    if (!session || session.expiresAt <= now) return this.reject('unknown-session');
    if (header.counter <= session.maxCounter) return this.reject('replayed-transport');
    if (!openTransport(data, session.receiveKey, header.counter)) return this.reject('bad-transport');
    session.maxCounter = header.counter;
    if (confirmed) {
      this.stats.keepalives++;
      const record = this.peers.get(recordKey(session.network, session.peerKey)) ? this.upsert(session.network, session.peerKey, now) : undefined;
      if (record?.sessionIndex !== header.receiverIndex) return { type: 'stale-session' };
      const moved = this.touchEndpoint(record, from, now);
      return { type: 'endpoint', network: session.network, key: session.peerKey, endpoint: from, confirmed: false, moved };
    }
    // First packet of the session: the initiator has the preshared key (the network secret).
    this.dropPending(header.receiverIndex);
    const existing = this.peers.get(recordKey(session.network, session.peerKey));
    if (existing && session.timestamp <= existing.lastTimestamp) return this.reject('replayed-initiation');
    this.stats.confirmations++;
    const record = this.upsert(session.network, session.peerKey, now);
    record.lastTimestamp = session.timestamp;
    if (record.sessionIndex !== undefined && record.sessionIndex !== header.receiverIndex) this.sessions.delete(record.sessionIndex);
    record.sessionIndex = header.receiverIndex;
    this.addSession(header.receiverIndex, { ...session, expiresAt: now + this.limits.sessionLifetimeMs });
    const moved = this.touchEndpoint(record, from, now);
    return { type: 'endpoint', network: session.network, key: session.peerKey, endpoint: from, confirmed: true, moved };
  }

  private touchEndpoint(record: PeerRecord, from: Endpoint, now: number): boolean {
    const moved = !record.endpoint || record.endpoint.address !== from.address || record.endpoint.port !== from.port;
    if (moved && record.endpoint) this.stats.endpointChanges++;
    record.endpoint = from;
    record.touchedAt = now;
    return moved;
  }

  private upsert(network: string, key: Uint8Array, now: number): PeerRecord {
    const id = recordKey(network, key);
    let record = this.peers.get(id);
    if (record) {
      // Re-insert: the map's order is then least-recently-touched first, which is what eviction removes.
      this.peers.delete(id);
    } else {
      while (this.peers.size >= this.limits.maxPeers) {
        const oldest = this.peers.keys().next();
        if (oldest.done) break;
        this.peers.delete(oldest.value);
      }
      record = { network, key: Buffer.from(key), endpoint: undefined, lastTimestamp: '', sessionIndex: undefined, touchedAt: now };
    }
    record.touchedAt = now;
    this.peers.set(id, record);
    return record;
  }

  /** Forgets expired records and sessions; returns how many records went. */
  sweep(now: number): number {
    let removed = 0;
    // Records are kept in the order they were last touched, so the expired ones are all at the front.
    for (const [id, record] of this.peers) {
      if (now - record.touchedAt < this.limits.peerLifetimeMs) break;
      this.peers.delete(id);
      if (record.sessionIndex !== undefined) this.sessions.delete(record.sessionIndex);
      removed++;
    }
    for (const [index, session] of this.sessions) {
      if (session.expiresAt <= now) this.sessions.delete(index);
    }
    // Pending handshakes are kept in arrival order with one lifetime: the expired ones are at the front.
    for (const [index, p] of this.pending) {
      if (p.expiresAt > now) break;
      this.dropPending(index);
    }
    return removed;
  }
}
