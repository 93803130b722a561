/**
 * The stream relay's pairing (sans-IO): two TCP connections to the server's TCP port, one from each peer of an
 * introduced pair, each authenticated with the built-in relay's credentials, are spliced together. The server then
 * only copies bytes (SecureStream ciphertext: it holds no key of the peers' session). docs/protocol.md, "Stream
 * relay", draws the exchange:
 *
 *   peer ── STREAM-RELAY request (no credentials) ──────────────▶ server
 *        ◀─ 401 error: REALM "burrow", NONCE ────────────────────
 *        ── STREAM-RELAY request: USERNAME EXPIRY:NETID:NAME:PEER,
 *           REALM, NONCE, MESSAGE-INTEGRITY (long-term key) ─────▶  waits (≤ pairTimeoutMs) for PEER:NAME
 *        ◀─ STREAM-RELAY success (MESSAGE-INTEGRITY) ────────────   when both are in: then raw bytes both ways
 *
 * Errors end the connection after the error answer: 401 (credentials), 438 (stale nonce), 403 (relay off),
 * 486 (per-peer or per-source quota), 508 (capacity), 408 (the partner did not come in time), 400 (anything else).
 * The driver (src/node/stream-relay.ts) owns the sockets, copies the bytes and enforces the byte rate and idle time.
 */
import type { Endpoint } from '../../codec/address.js';
import { decodeTurn, encodeTurn, TurnError, type TurnMessage } from '../../codec/turn.js';
import { Attr } from '../../codec/stun.js';
import type { NetworkKeys } from '../../crypto/keys.js';
import { resolveRelayLimits, type RelayLimits } from './config.js';
import { checkBuiltin } from './credentials.js';
import { NonceIssuer } from './nonce.js';

/** The STUN method of a stream relay request (Burrow's range). */
export const STREAM_RELAY_METHOD = 0x0ba;
/** How long an authenticated connection waits for its partner's. */
export const DEFAULT_PAIR_TIMEOUT_MS = 30_000;
/** Requests one connection may make before it authenticates (the 401 dance takes two). */
const MAX_REQUESTS = 3;

export type StreamRefuseReason = 'disabled' | 'bad-credentials' | 'expired-credentials' | 'quota-peer' | 'quota-source' | 'capacity' | 'partner-timeout' | 'bad-request';

export interface StreamRelayStats {
  sessionsTotal: number;
  bytesRelayed: number;
  readonly refused: Record<StreamRefuseReason, number>;
}

export type StreamAction =
  | { readonly type: 'send'; readonly conn: number; readonly data: Uint8Array }
  /** Send `data` (if any), then close. */
  | { readonly type: 'close'; readonly conn: number }
  /** Start copying bytes between `a` and `b` (each has been sent its success answer). */
  | { readonly type: 'splice'; readonly a: number; readonly b: number; readonly network: string; readonly names: readonly [string, string] };

interface Waiting {
  readonly conn: number;
  readonly from: Endpoint;
  readonly network: string;
  readonly name: string;
  readonly peer: string;
  readonly since: number;
  readonly txid: Uint8Array;
  readonly key: Uint8Array;
}

interface Conn {
  readonly from: Endpoint;
  requests: number;
  /** Its slot, once authenticated. */
  slot: string | undefined;
  /** Spliced: counted as a session until closed. */
  spliced: boolean;
  network: string | undefined;
  name: string | undefined;
}

export interface StreamRelayConfig {
  readonly enabled: boolean;
  readonly limits?: Partial<RelayLimits>;
  readonly nonceKey: Uint8Array;
  readonly pairTimeoutMs?: number;
}

export class StreamRelayCore {
  readonly stats: StreamRelayStats = {
    sessionsTotal: 0,
    bytesRelayed: 0,
    refused: { disabled: 0, 'bad-credentials': 0, 'expired-credentials': 0, 'quota-peer': 0, 'quota-source': 0, capacity: 0, 'partner-timeout': 0, 'bad-request': 0 },
  };
  readonly limits: RelayLimits;
  private readonly pairTimeoutMs: number;
  private readonly nonces: NonceIssuer;
  private networks: ReadonlyMap<string, NetworkKeys> = new Map();
  private readonly conns = new Map<number, Conn>();
  private readonly waiting = new Map<string, Waiting>();
  /** Authenticated connections (waiting or spliced) per peer name and per source address. */
  private readonly perPeer = new Map<string, number>();
  private readonly perSource = new Map<string, number>();
  private active = 0;

  constructor(private readonly config: StreamRelayConfig) {
    this.limits = resolveRelayLimits(config.limits);
    this.pairTimeoutMs = config.pairTimeoutMs ?? DEFAULT_PAIR_TIMEOUT_MS;
    this.nonces = new NonceIssuer(config.nonceKey, this.limits.nonceSeconds);
  }

  setNetworks(networks: readonly NetworkKeys[]): void {
    this.networks = new Map(networks.map((n) => [n.networkIdHex, n]));
  }

  /** Spliced pairs now (the sessions gauge). */
  get sessions(): number {
    return this.active;
  }

  /** Whether `conn` has authenticated (it then waits for its partner, or is spliced). */
  isAuthenticated(conn: number): boolean {
    return this.conns.get(conn)?.slot !== undefined;
  }

  /** Whether a TCP connection's first STUN message is a stream relay request. */
  static claims(message: Uint8Array): boolean {
    if (message.length < 20 || ((message[0] ?? 0xff) & 0xc0) !== 0) return false;
    const t = ((message[0] ?? 0) << 8) | (message[1] ?? 0);
    const method = ((t & 0x3e00) >> 2) | ((t & 0x00e0) >> 1) | (t & 0x000f);
    return method === STREAM_RELAY_METHOD;
  }

  nextTimeoutAt(): number | undefined {
    let at: number | undefined;
    for (const w of this.waiting.values()) if (at === undefined || w.since + this.pairTimeoutMs < at) at = w.since + this.pairTimeoutMs;
    return at;
  }

  /** A new connection, handed over with its first message. */
  opened(conn: number, from: Endpoint): void {
    this.conns.set(conn, { from, requests: 0, slot: undefined, spliced: false, network: undefined, name: undefined });
  }

  /** One STUN message on `conn` before it is spliced. */
  message(conn: number, data: Uint8Array, now: number): StreamAction[] {
    const c = this.conns.get(conn);
    if (!c) return [];
    const out: StreamAction[] = [];
    const d = decodeTurn(data);
    if (!d.ok || d.msg.method !== STREAM_RELAY_METHOD || d.msg.cls !== 'request' || c.slot !== undefined || ++c.requests > MAX_REQUESTS) {
      this.refuse(out, conn, 'bad-request', d.ok ? d.msg : undefined, { code: TurnError.BAD_REQUEST, reason: 'Bad Request' });
      return out;
    }
    const m = d.msg;
    if (!this.config.enabled) {
      this.refuse(out, conn, 'disabled', m, { code: TurnError.FORBIDDEN, reason: 'Relay disabled on this server' });
      return out;
    }
    const hasIntegrity = m.stun.attributes.some((x) => x.type === Attr.MESSAGE_INTEGRITY);
    if (!hasIntegrity || m.username === undefined || m.nonce === undefined) {
      out.push({ type: 'send', conn, data: this.challenge(m, c.from, now, { code: TurnError.UNAUTHORIZED, reason: 'Unauthorized' }) });
      return out;
    }
    const fresh = this.nonces.check(m.nonce, c.from.address, now);
    if (fresh !== 'fresh') {
      out.push({ type: 'send', conn, data: this.challenge(m, c.from, now, { code: TurnError.STALE_NONCE, reason: 'Stale Nonce' }) });
      return out;
    }
    const auth = checkBuiltin(this.networks, m, data, now, true, this.limits.maxCredentialSeconds);
    if (!auth.ok) {
      this.stats.refused[auth.reason]++;
      out.push({ type: 'send', conn, data: this.challenge(m, c.from, now, { code: TurnError.UNAUTHORIZED, reason: 'Unauthorized' }) });
      out.push({ type: 'close', conn });
      this.conns.delete(conn);
      return out;
    }
    const { id, key } = auth;
    const peerKey = `${id.networkIdHex}\0${id.name}`;
    const answerError = (reason: StreamRefuseReason, error: { code: number; reason: string }): StreamAction[] => {
      this.stats.refused[reason]++;
      out.push({ type: 'send', conn, data: encodeTurn(STREAM_RELAY_METHOD, 'error', m.transactionId, { error }, { key }) }, { type: 'close', conn });
      this.conns.delete(conn);
      return out;
    };
    if (this.active * 2 + this.waiting.size >= this.limits.sessions * 2) return answerError('capacity', { code: TurnError.INSUFFICIENT_CAPACITY, reason: 'Insufficient Capacity' });
    if ((this.perPeer.get(peerKey) ?? 0) >= this.limits.sessionsPerPeer) return answerError('quota-peer', { code: TurnError.ALLOCATION_QUOTA_REACHED, reason: 'Quota Reached' });
    if ((this.perSource.get(c.from.address) ?? 0) >= this.limits.sessionsPerSource) return answerError('quota-source', { code: TurnError.ALLOCATION_QUOTA_REACHED, reason: 'Quota Reached' });
    const slot = slotOf(id.networkIdHex, id.name, id.peer);
    const partnerSlot = slotOf(id.networkIdHex, id.peer, id.name);
    // A second connection for the same slot replaces the first (a peer that retried).
    const stale = this.waiting.get(slot);
    if (stale) {
      out.push({ type: 'close', conn: stale.conn });
      this.closed(stale.conn);
    }
    c.slot = slot;
    c.network = id.networkIdHex;
    c.name = id.name;
    increment(this.perPeer, peerKey);
    increment(this.perSource, c.from.address);
    const success = encodeTurn(STREAM_RELAY_METHOD, 'success', m.transactionId, {}, { key });
    const partner = this.waiting.get(partnerSlot);
    if (!partner) {
      this.waiting.set(slot, { conn, from: c.from, network: id.networkIdHex, name: id.name, peer: id.peer, since: now, txid: m.transactionId, key });
      this.pendingSuccess.set(conn, success);
      return out;
    }
    this.waiting.delete(partnerSlot);
    const partnerConn = this.conns.get(partner.conn);
    if (partnerConn) partnerConn.spliced = true;
    c.spliced = true;
    this.active++;
    this.stats.sessionsTotal++;
    const partnerSuccess = this.pendingSuccess.get(partner.conn);
    this.pendingSuccess.delete(partner.conn);
    if (partnerSuccess) out.push({ type: 'send', conn: partner.conn, data: partnerSuccess });
    out.push({ type: 'send', conn, data: success });
    out.push({ type: 'splice', a: partner.conn, b: conn, network: id.networkIdHex, names: [partner.name, id.name] });
    return out;
  }

  private readonly pendingSuccess = new Map<number, Uint8Array>();

  /** `conn` closed (either side of a splice closes both: the driver reports each). */
  closed(conn: number): void {
    const c = this.conns.get(conn);
    if (!c) return;
    this.conns.delete(conn);
    this.pendingSuccess.delete(conn);
    if (c.slot !== undefined) {
      const w = this.waiting.get(c.slot);
      if (w?.conn === conn) this.waiting.delete(c.slot);
      decrement(this.perPeer, `${c.network ?? ''}\0${c.name ?? ''}`);
      decrement(this.perSource, c.from.address);
    }
    if (c.spliced) {
      c.spliced = false;
      // The pair counts once: the first of its two connections to close ends it.
      for (const other of this.conns.values()) {
        if (other.spliced && other.slot !== undefined && c.slot !== undefined && partnerSlotOf(c.slot) === other.slot) {
          other.spliced = false;
          this.active--;
          return;
        }
      }
    }
  }

  /** Ends the waits that lasted too long. */
  timer(now: number): StreamAction[] {
    const out: StreamAction[] = [];
    for (const w of [...this.waiting.values()]) {
      if (now - w.since < this.pairTimeoutMs) continue;
      this.stats.refused['partner-timeout']++;
      out.push({ type: 'send', conn: w.conn, data: encodeTurn(STREAM_RELAY_METHOD, 'error', w.txid, { error: { code: 408, reason: 'Partner did not connect in time' } }, { key: w.key }) });
      out.push({ type: 'close', conn: w.conn });
      this.closed(w.conn);
    }
    return out;
  }

  private challenge(m: TurnMessage, from: Endpoint, now: number, error: { code: number; reason: string }): Uint8Array {
    return encodeTurn(STREAM_RELAY_METHOD, 'error', m.transactionId, { error, realm: 'burrow', nonce: this.nonces.issue(from.address, now) });
  }

  private refuse(out: StreamAction[], conn: number, reason: StreamRefuseReason, m: TurnMessage | undefined, error: { code: number; reason: string }): void {
    this.stats.refused[reason]++;
    if (m) out.push({ type: 'send', conn, data: encodeTurn(STREAM_RELAY_METHOD, 'error', m.transactionId, { error }) });
    out.push({ type: 'close', conn });
    this.closed(conn);
  }
}

/** Names hold no control characters (checkName), so NUL separates the fields. */
function slotOf(network: string, name: string, peer: string): string {
  return `${network}\0${name}\0${peer}`;
}

function partnerSlotOf(slot: string): string {
  const [net, name, peer] = slot.split('\0');
  return slotOf(net ?? '', peer ?? '', name ?? '');
}

function increment(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

function decrement(map: Map<string, number>, key: string): void {
  const n = (map.get(key) ?? 1) - 1;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
}
