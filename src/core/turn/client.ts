/**
 * A TURN client (RFC 8656, UDP), sans-IO: inputs in (`start`, datagrams from the TURN server, `send` to a peer,
 * `timer`, `close`), actions out (`transmit` a datagram to the TURN server, `allocated`, `data` from a peer,
 * `peer-refused`, `failed`, `closed`). The caller owns the socket and the timer and passes the time in; it hands the
 * client only datagrams that came from the TURN server's address (src/node/relay-transport.ts demultiplexes them from
 * the rest of the socket's traffic).
 *
 * Theory of operation
 * -------------------
 * 1. Allocate. The first Allocate (REQUESTED-TRANSPORT UDP, LIFETIME) goes out without credentials; the server
 *    answers 401 with REALM and NONCE, and the client retries with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY
 *    (HMAC-SHA1, key MD5(username:realm:password), RFC 8489 section 9.2). A 438 (stale nonce) on any request is
 *    retried once with the new NONCE. Success gives the relayed address (XOR-RELAYED-ADDRESS), our mapped address as
 *    the relay sees it, and the granted LIFETIME. A 401 with credentials, a 403, 437, 441, 442, 486 or 508, or no
 *    answer after the retransmissions fails the allocation with the code and the server's reason phrase.
 * 2. Refresh. The allocation is refreshed at 5/6 of the granted lifetime (werift does the same); a failed refresh
 *    loses the allocation (`failed`, stage 'refresh').
 * 3. Peers. The first datagram to a peer endpoint binds a channel to it (ChannelBind, which also installs the
 *    permission for its IP address, RFC 8656 section 12); datagrams wait in a small queue meanwhile and then go out as
 *    ChannelData (4 bytes of overhead). Channels (and with them the permissions) are re-bound every 4 minutes, within
 *    the 5-minute permission lifetime. A peer the relay refuses (403: the built-in relay only lets an allocation reach
 *    its introduced partner) is reported once (`peer-refused`) and left alone for `refusedRetryMs`.
 * 4. From peers. ChannelData on a bound channel and Data indications (from a peer with a permission but no channel yet)
 *    become `data` actions with the peer's address.
 * 5. Close. A Refresh with LIFETIME 0 deletes the allocation (sent once, unanswered is fine), then `closed`.
 *
 * Every request is retransmitted on `retransmitMs` (RFC 8489 section 6.2.1's doubling, shortened: a relay is chosen
 * in the first second of a connection) and given up after its last step. Answers are matched by transaction id;
 * a success answer that carries MESSAGE-INTEGRITY must verify with the long-term key, or it is dropped.
 */
import { endpointKey, type Endpoint } from '../../codec/address.js';
import { TRANSACTION_ID_LENGTH } from '../../codec/stun.js';
import {
  decodeChannelData,
  decodeTurn,
  encodeChannelData,
  encodeTurn,
  longTermKey,
  looksLikeChannelData,
  MAX_CHANNEL,
  MIN_CHANNEL,
  TRANSPORT_UDP,
  TurnError,
  TurnMethod,
  verifyTurnIntegrity,
  type TurnFields,
  type TurnMessage,
} from '../../codec/turn.js';
import { Backoff } from '../backoff.js';

/** SOFTWARE length of an unauthenticated request: 44 + 4 + 88 = 136 bytes, more than a 401 with a 24-char nonce (88). */
const UNAUTHENTICATED_SOFTWARE_LENGTH = 88;

export interface TurnCredentials {
  readonly username: string;
  readonly password: string;
}

export interface TurnTiming {
  /** Retransmissions of a request (ms after each attempt; the request fails after the last). */
  readonly retransmitMs: readonly number[];
  /** Re-bind channels (and so refresh their permissions) this often; permissions last 300 s. */
  readonly channelRefreshMs: number;
  /** How long a peer the relay refused is left alone before another try. */
  readonly refusedRetryMs: number;
}

export const DEFAULT_TURN_TIMING: TurnTiming = {
  retransmitMs: [250, 500, 1000, 1000, 1000],
  channelRefreshMs: 240_000,
  refusedRetryMs: 10_000,
};

export interface TurnClientConfig {
  readonly credentials: TurnCredentials;
  /** The allocation lifetime asked for, in seconds (the server may grant less). Default 600. */
  readonly lifetimeSeconds?: number;
  readonly randomBytes: (n: number) => Uint8Array;
  readonly timing?: Partial<TurnTiming>;
  /** SOFTWARE sent with requests. */
  readonly software?: string;
}

/** Datagrams waiting per peer for its channel at most (the agent's checks are few; the rest is dropped like loss). */
export const MAX_QUEUED_PER_PEER = 32;
/** Channels per allocation at most (one per peer endpoint: a symmetric NAT may show several ports). */
export const MAX_CHANNELS = 256;

/** Why the allocation failed: the request, the TURN error code (0: no answer) and the server's words. */
export interface TurnFailure {
  readonly stage: 'allocate' | 'refresh';
  /** The TURN/STUN error code, or 0 when the server never answered. */
  readonly code: number;
  readonly reason: string;
  /** Requests sent for this stage (retransmissions included). */
  readonly attempts: number;
}

export type TurnInput =
  | { readonly type: 'start'; readonly now: number }
  | { readonly type: 'timer'; readonly now: number }
  /** A datagram from the TURN server's address. */
  | { readonly type: 'datagram'; readonly data: Uint8Array; readonly now: number }
  /** Relay `data` to `peer`. Dropped (like a lost datagram) before the allocation or for a refused peer. */
  | { readonly type: 'send'; readonly peer: Endpoint; readonly data: Uint8Array; readonly now: number }
  | { readonly type: 'close'; readonly now: number };

export type TurnAction =
  /** Send this datagram to the TURN server. */
  | { readonly type: 'transmit'; readonly data: Uint8Array }
  | { readonly type: 'allocated'; readonly relayed: Endpoint; readonly mapped: Endpoint | undefined; readonly lifetimeSeconds: number }
  | { readonly type: 'data'; readonly peer: Endpoint; readonly data: Uint8Array }
  | { readonly type: 'peer-refused'; readonly peer: Endpoint; readonly code: number; readonly reason: string }
  | { readonly type: 'failed'; readonly failure: TurnFailure }
  /** Dropped a datagram from the server (malformed, unmatched, failed integrity). */
  | { readonly type: 'dropped'; readonly reason: string }
  | { readonly type: 'closed' };

type State = 'idle' | 'allocating' | 'allocated' | 'failed' | 'closed';

interface Pending {
  readonly method: number;
  readonly fields: TurnFields;
  readonly txid: Uint8Array;
  readonly data: Uint8Array;
  sent: number;
  nextAt: number;
  /** A 438 was already retried once. */
  staleRetried: boolean;
  readonly peer?: Endpoint;
}

interface Channel {
  readonly number: number;
  readonly peer: Endpoint;
  state: 'binding' | 'bound' | 'refused';
  /** When to re-bind (bound) or when a refused peer may be tried again. */
  until: number;
  readonly queue: Uint8Array[];
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

export class TurnClient {
  private readonly timing: TurnTiming;
  private readonly backoff: Backoff;
  private readonly lifetime: number;
  private state: State = 'idle';
  private realm: string | undefined;
  private nonce: string | undefined;
  private key: Uint8Array | undefined;
  private readonly pending = new Map<string, Pending>();
  private readonly channels = new Map<string, Channel>();
  private readonly byNumber = new Map<number, Channel>();
  private nextChannel = MIN_CHANNEL;
  private refreshAt = Infinity;
  private allocateAttempts = 0;
  private relayedAddress: Endpoint | undefined;
  /** Allocate was answered 401 once already with credentials: a second one means they are wrong. */
  private authenticated = false;

  constructor(private readonly config: TurnClientConfig) {
    this.timing = { ...DEFAULT_TURN_TIMING, ...config.timing };
    this.backoff = new Backoff(this.timing.retransmitMs);
    this.lifetime = config.lifetimeSeconds ?? 600;
  }

  get relayed(): Endpoint | undefined {
    return this.relayedAddress;
  }

  get isAllocated(): boolean {
    return this.state === 'allocated';
  }

  get isFinished(): boolean {
    return this.state === 'failed' || this.state === 'closed';
  }

  nextTimeoutAt(): number | undefined {
    if (this.state !== 'allocating' && this.state !== 'allocated') return undefined;
    let next = this.refreshAt;
    for (const p of this.pending.values()) next = Math.min(next, p.nextAt);
    for (const c of this.channels.values()) if (c.state === 'bound') next = Math.min(next, c.until);
    return next === Infinity ? undefined : next;
  }

  handle(input: TurnInput): TurnAction[] {
    const out: TurnAction[] = [];
    switch (input.type) {
      case 'start':
        if (this.state !== 'idle') break;
        this.state = 'allocating';
        this.request(TurnMethod.ALLOCATE, { requestedTransport: TRANSPORT_UDP, lifetime: this.lifetime }, input.now, out);
        break;
      case 'timer':
        this.onTimer(input.now, out);
        break;
      case 'datagram':
        this.onDatagram(input.data, input.now, out);
        break;
      case 'send':
        this.send(input.peer, input.data, input.now, out);
        break;
      case 'close':
        this.close(out);
        break;
      default: {
        const never: never = input;
        throw new Error(`unknown input ${String(never)}`);
      }
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------

  private authFields(): TurnFields {
    if (!this.realm || this.nonce === undefined) return {};
    return { username: this.config.credentials.username, realm: this.realm, nonce: this.nonce };
  }

  private encode(method: number, txid: Uint8Array, fields: TurnFields): Uint8Array {
    const auth = this.authFields();
    // A request without credentials is padded with SOFTWARE to at least the length of the server's 401/438 answer
    // (REALM, a NONCE, an ERROR-CODE): a server that never answers unauthenticated traffic with more bytes than it
    // carried (burrow serve) otherwise drops it.
    const software = this.config.software ?? 'burrow';
    const all: TurnFields = { ...fields, ...auth, software: auth.username === undefined ? software.padEnd(UNAUTHENTICATED_SOFTWARE_LENGTH, ' ') : software };
    return encodeTurn(method, 'request', txid, all, { ...(this.key ? { key: this.key } : {}), fingerprint: true });
  }

  private request(method: number, fields: TurnFields, now: number, out: TurnAction[], peer?: Endpoint, staleRetried = false): void {
    const txid = this.config.randomBytes(TRANSACTION_ID_LENGTH);
    const data = this.encode(method, txid, fields);
    const p: Pending = { method, fields, txid, data, sent: 1, nextAt: this.backoff.nextAt(now, 1), staleRetried, ...(peer ? { peer } : {}) };
    this.pending.set(hex(txid), p);
    if (method === TurnMethod.ALLOCATE) this.allocateAttempts++;
    out.push({ type: 'transmit', data });
  }

  private onTimer(now: number, out: TurnAction[]): void {
    if (this.state !== 'allocating' && this.state !== 'allocated') return;
    for (const [k, p] of [...this.pending]) {
      if (now < p.nextAt) continue;
      if (p.sent >= this.timing.retransmitMs.length) {
        this.pending.delete(k);
        this.timedOut(p, now, out);
        if (this.isFinished) return;
        continue;
      }
      p.sent++;
      p.nextAt = this.backoff.nextAt(now, p.sent);
      if (p.method === TurnMethod.ALLOCATE) this.allocateAttempts++;
      out.push({ type: 'transmit', data: p.data });
    }
    if (this.state === 'allocated' && now >= this.refreshAt) {
      this.refreshAt = Infinity;
      this.request(TurnMethod.REFRESH, { lifetime: this.lifetime }, now, out);
    }
    for (const c of this.channels.values()) {
      if (c.state === 'bound' && now >= c.until) {
        c.until = Infinity;
        this.request(TurnMethod.CHANNEL_BIND, { channel: c.number, peers: [c.peer] }, now, out, c.peer);
      }
    }
  }

  private timedOut(p: Pending, now: number, out: TurnAction[]): void {
    switch (p.method) {
      case TurnMethod.ALLOCATE:
        this.fail({ stage: 'allocate', code: 0, reason: 'no answer from the TURN server', attempts: this.allocateAttempts }, out);
        return;
      case TurnMethod.REFRESH:
        this.fail({ stage: 'refresh', code: 0, reason: 'no answer to a Refresh', attempts: p.sent }, out);
        return;
      case TurnMethod.CHANNEL_BIND:
        if (p.peer) this.refuse(p.peer, 0, 'no answer to ChannelBind', now, out);
        return;
      default:
        return;
    }
  }

  private fail(failure: TurnFailure, out: TurnAction[]): void {
    this.state = 'failed';
    this.pending.clear();
    this.channels.clear();
    this.byNumber.clear();
    out.push({ type: 'failed', failure });
  }

  private close(out: TurnAction[]): void {
    if (this.state === 'closed' || this.state === 'failed') return;
    if (this.state === 'allocated') {
      // Delete the allocation (RFC 8656 section 7): LIFETIME 0, sent once.
      out.push({ type: 'transmit', data: this.encode(TurnMethod.REFRESH, this.config.randomBytes(TRANSACTION_ID_LENGTH), { lifetime: 0 }) });
    }
    this.state = 'closed';
    this.pending.clear();
    this.channels.clear();
    this.byNumber.clear();
    out.push({ type: 'closed' });
  }

  // -------------------------------------------------------------------------------------------
  // Peers.

  private send(peer: Endpoint, data: Uint8Array, now: number, out: TurnAction[]): void {
    if (this.state !== 'allocated') return;
    const key = endpointKey(peer);
    let c = this.channels.get(key);
    if (c?.state === 'refused') {
      if (now < c.until) return;
      this.channels.delete(key);
      this.byNumber.delete(c.number);
      c = undefined;
    }
    if (c?.state === 'bound') {
      out.push({ type: 'transmit', data: encodeChannelData(c.number, data) });
      return;
    }
    if (!c) {
      const number = this.allocateChannelNumber();
      if (number === undefined) return;
      c = { number, peer, state: 'binding', until: Infinity, queue: [] };
      this.channels.set(key, c);
      this.byNumber.set(number, c);
      this.request(TurnMethod.CHANNEL_BIND, { channel: number, peers: [peer] }, now, out, peer);
    }
    if (c.queue.length < MAX_QUEUED_PER_PEER) c.queue.push(Uint8Array.from(data));
  }

  private allocateChannelNumber(): number | undefined {
    if (this.byNumber.size >= MAX_CHANNELS) return undefined;
    for (let i = 0; i <= MAX_CHANNEL - MIN_CHANNEL; i++) {
      const n = this.nextChannel;
      this.nextChannel = n >= MAX_CHANNEL ? MIN_CHANNEL : n + 1;
      if (!this.byNumber.has(n)) return n;
    }
    return undefined;
  }

  private refuse(peer: Endpoint, code: number, reason: string, now: number, out: TurnAction[]): void {
    const c = this.channels.get(endpointKey(peer));
    if (!c) return;
    const wasBound = c.state === 'bound';
    c.state = 'refused';
    c.until = now + this.timing.refusedRetryMs;
    c.queue.length = 0;
    if (!wasBound || code !== 0) out.push({ type: 'peer-refused', peer, code, reason });
  }

  // -------------------------------------------------------------------------------------------
  // From the server.

  private onDatagram(data: Uint8Array, now: number, out: TurnAction[]): void {
    if (this.state !== 'allocating' && this.state !== 'allocated') return;
    if (looksLikeChannelData(data)) {
      const d = decodeChannelData(data);
      if (!d.ok) {
        out.push({ type: 'dropped', reason: `malformed ChannelData: ${d.reason}` });
        return;
      }
      const c = this.byNumber.get(d.channel);
      if (c?.state !== 'bound') {
        out.push({ type: 'dropped', reason: `ChannelData on channel 0x${d.channel.toString(16)}, which is not bound` });
        return;
      }
      out.push({ type: 'data', peer: c.peer, data: d.data });
      return;
    }
    const decoded = decodeTurn(data);
    if (!decoded.ok) {
      out.push({ type: 'dropped', reason: `malformed TURN message: ${decoded.reason}` });
      return;
    }
    const msg = decoded.msg;
    if (msg.cls === 'indication') {
      if (msg.method === TurnMethod.DATA && msg.peers[0] && msg.data && this.state === 'allocated') {
        out.push({ type: 'data', peer: msg.peers[0], data: msg.data });
      } else {
        out.push({ type: 'dropped', reason: `unexpected TURN indication (method 0x${msg.method.toString(16)})` });
      }
      return;
    }
    if (msg.cls === 'request') {
      out.push({ type: 'dropped', reason: 'a request from the TURN server' });
      return;
    }
    const k = hex(msg.transactionId);
    const p = this.pending.get(k);
    if (!p || p.method !== msg.method) {
      out.push({ type: 'dropped', reason: 'a TURN answer for no outstanding request' });
      return;
    }
    if (msg.cls === 'success' && this.key && verifyTurnIntegrity(data, msg, this.key) === 'invalid') {
      out.push({ type: 'dropped', reason: 'a TURN answer failed MESSAGE-INTEGRITY' });
      return;
    }
    this.pending.delete(k);
    if (msg.nonce !== undefined) this.nonce = msg.nonce;
    if (msg.cls === 'error') this.onError(p, msg, now, out);
    else this.onSuccess(p, msg, now, out);
  }

  private onError(p: Pending, msg: TurnMessage, now: number, out: TurnAction[]): void {
    const code = msg.error?.code ?? 0;
    const reason = msg.error?.reason ?? 'no reason given';
    if (code === TurnError.UNAUTHORIZED && p.method === TurnMethod.ALLOCATE && !this.authenticated && msg.realm !== undefined && msg.nonce !== undefined) {
      // The expected challenge: retry with long-term credentials.
      this.authenticated = true;
      this.realm = msg.realm;
      this.key = longTermKey(this.config.credentials.username, msg.realm, this.config.credentials.password);
      this.request(p.method, p.fields, now, out, p.peer);
      return;
    }
    if (code === TurnError.STALE_NONCE && !p.staleRetried && msg.nonce !== undefined) {
      if (msg.realm !== undefined && msg.realm !== this.realm) {
        this.realm = msg.realm;
        this.key = longTermKey(this.config.credentials.username, msg.realm, this.config.credentials.password);
      }
      this.request(p.method, p.fields, now, out, p.peer, true);
      return;
    }
    switch (p.method) {
      case TurnMethod.ALLOCATE:
        this.fail({ stage: 'allocate', code, reason, attempts: this.allocateAttempts }, out);
        return;
      case TurnMethod.REFRESH:
        this.fail({ stage: 'refresh', code, reason, attempts: p.sent }, out);
        return;
      case TurnMethod.CHANNEL_BIND:
        if (p.peer) this.refuse(p.peer, code, reason, now, out);
        return;
      default:
        return;
    }
  }

  private onSuccess(p: Pending, msg: TurnMessage, now: number, out: TurnAction[]): void {
    switch (p.method) {
      case TurnMethod.ALLOCATE: {
        if (this.state !== 'allocating') return;
        if (!msg.relayed) {
          this.fail({ stage: 'allocate', code: 0, reason: 'the Allocate answer has no XOR-RELAYED-ADDRESS', attempts: this.allocateAttempts }, out);
          return;
        }
        this.state = 'allocated';
        this.relayedAddress = msg.relayed;
        const lifetime = msg.lifetime ?? this.lifetime;
        this.refreshAt = now + Math.max(1000, Math.floor((lifetime * 1000 * 5) / 6));
        out.push({ type: 'allocated', relayed: msg.relayed, mapped: msg.mapped, lifetimeSeconds: lifetime });
        return;
      }
      case TurnMethod.REFRESH: {
        const lifetime = msg.lifetime ?? this.lifetime;
        this.refreshAt = now + Math.max(1000, Math.floor((lifetime * 1000 * 5) / 6));
        return;
      }
      case TurnMethod.CHANNEL_BIND: {
        const c = p.peer ? this.channels.get(endpointKey(p.peer)) : undefined;
        if (!c || c.state === 'refused') return;
        c.state = 'bound';
        c.until = now + this.timing.channelRefreshMs;
        for (const d of c.queue.splice(0)) out.push({ type: 'transmit', data: encodeChannelData(c.number, d) });
        return;
      }
      default:
        return;
    }
  }
}
