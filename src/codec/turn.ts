/**
 * TURN (RFC 8656) framing on top of the STUN codec: the methods and attributes a UDP relay needs, long-term
 * credentials (MESSAGE-INTEGRITY with key MD5(username:realm:password)), ChannelData framing, and the credentials
 * Burrow derives for its built-in relay and for coturn (docs/protocol.md, "Relay").
 *
 * Pure: transaction ids, keys, times and nonces are passed in. Decoders never throw: they return
 * `{ ok: false, reason }` with a typed reason (and a detail for attribute problems).
 *
 * ChannelData (RFC 8656 section 12.4):
 * ```
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |         Channel Number        |            Length             |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                       Application Data (Length bytes)         |
 * |                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                               |  zero padding to 4 bytes      |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * ```
 */
import { createHash, createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { Endpoint } from './address.js';
import {
  Attr,
  decodeErrorCode,
  decodeStun,
  decodeXorAddress,
  encodeErrorCode,
  encodeStun,
  encodeXorAddress,
  verifyIntegritySha1,
  type AttributeInput,
  type IntegrityResult,
  type StunClass,
  type StunDecodeError,
  type StunMessage,
} from './stun.js';

/** TURN methods (RFC 8656 section 17). Send and Data are indications only. */
export const TurnMethod = {
  ALLOCATE: 0x003,
  REFRESH: 0x004,
  SEND: 0x006,
  DATA: 0x007,
  CREATE_PERMISSION: 0x008,
  CHANNEL_BIND: 0x009,
} as const;

/** The STUN and TURN attributes TURN uses (RFC 8656 section 18, RFC 8489 section 18.3). */
export const TurnAttr = {
  USERNAME: Attr.USERNAME,
  MESSAGE_INTEGRITY: Attr.MESSAGE_INTEGRITY,
  ERROR_CODE: Attr.ERROR_CODE,
  UNKNOWN_ATTRIBUTES: Attr.UNKNOWN_ATTRIBUTES,
  CHANNEL_NUMBER: 0x000c,
  LIFETIME: 0x000d,
  XOR_PEER_ADDRESS: 0x0012,
  DATA: 0x0013,
  REALM: 0x0014,
  NONCE: 0x0015,
  XOR_RELAYED_ADDRESS: 0x0016,
  REQUESTED_ADDRESS_FAMILY: 0x0017,
  EVEN_PORT: 0x0018,
  REQUESTED_TRANSPORT: 0x0019,
  DONT_FRAGMENT: 0x001a,
  XOR_MAPPED_ADDRESS: Attr.XOR_MAPPED_ADDRESS,
  RESERVATION_TOKEN: 0x0022,
  SOFTWARE: Attr.SOFTWARE,
  FINGERPRINT: Attr.FINGERPRINT,
  /** RFC 8656 section 18.13; comprehension-optional. */
  ADDITIONAL_ADDRESS_FAMILY: 0x8000,
  ICMP: 0x8004,
} as const;

/** TURN and STUN error codes a relay answers with (RFC 8656 section 6, RFC 8489 section 14.8). */
export const TurnError = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  UNKNOWN_ATTRIBUTE: 420,
  ALLOCATION_MISMATCH: 437,
  STALE_NONCE: 438,
  ADDRESS_FAMILY_NOT_SUPPORTED: 440,
  WRONG_CREDENTIALS: 441,
  UNSUPPORTED_TRANSPORT: 442,
  ALLOCATION_QUOTA_REACHED: 486,
  SERVER_ERROR: 500,
  INSUFFICIENT_CAPACITY: 508,
} as const;

/** REQUESTED-TRANSPORT's protocol number for UDP. */
export const TRANSPORT_UDP = 17;
/**
 * Channel numbers: RFC 8656 section 12 gives clients 0x4000-0x4FFF; RFC 5766 allowed up to 0x7FFE, and coturn's
 * clients still pick from that range, so a server accepts it (nothing else on Burrow's port starts with 0x40-0x7F).
 */
export const MIN_CHANNEL = 0x4000;
export const MAX_CHANNEL = 0x7ffe;
/** The top of RFC 8656's range: what Burrow's own clients use. */
export const MAX_CHANNEL_RFC8656 = 0x4fff;
/** ChannelData header length. */
export const CHANNEL_HEADER_LENGTH = 4;
/**
 * Largest TURN message we decode: a Send or Data indication carrying a 64 KiB UDP payload plus its attributes. The
 * relay itself bounds what it forwards far below this (src/server/relay).
 */
export const MAX_TURN_MESSAGE_LENGTH = 65_535 + 20;

/** The parts of a TURN message a client or server acts on; absent attributes are undefined. */
export interface TurnMessage {
  readonly method: number;
  readonly cls: StunClass;
  readonly transactionId: Uint8Array;
  readonly username: string | undefined;
  readonly realm: string | undefined;
  readonly nonce: string | undefined;
  readonly lifetime: number | undefined;
  /** REQUESTED-TRANSPORT's protocol number (17 = UDP). */
  readonly requestedTransport: number | undefined;
  /** REQUESTED-ADDRESS-FAMILY: 1 IPv4, 2 IPv6. */
  readonly requestedFamily: number | undefined;
  readonly channel: number | undefined;
  /** Every XOR-PEER-ADDRESS, in order (CreatePermission may carry several). */
  readonly peers: readonly Endpoint[];
  readonly data: Uint8Array | undefined;
  readonly relayed: Endpoint | undefined;
  readonly mapped: Endpoint | undefined;
  readonly error: { readonly code: number; readonly reason: string } | undefined;
  readonly evenPort: boolean;
  readonly reservationToken: Uint8Array | undefined;
  readonly dontFragment: boolean;
  /** Comprehension-required attributes (type < 0x8000) this codec does not know: a server answers 420 listing them. */
  readonly unknownRequired: readonly number[];
  /** The framed STUN message (for `verifyTurnIntegrity`). */
  readonly stun: StunMessage;
}

export type TurnDecodeError =
  | { readonly reason: StunDecodeError }
  | { readonly reason: 'bad-attribute'; readonly detail: string };

export type TurnDecodeResult = { readonly ok: true; readonly msg: TurnMessage } | ({ readonly ok: false } & TurnDecodeError);

const KNOWN = new Set<number>([
  ...Object.values(TurnAttr),
  Attr.MESSAGE_INTEGRITY_SHA256,
  Attr.MAPPED_ADDRESS,
  Attr.PADDING,
  Attr.RESPONSE_ORIGIN,
  Attr.OTHER_ADDRESS,
]);

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** USERNAME, REALM and NONCE are bounded (RFC 8489 sections 14.3, 14.9, 14.10: < 513, 763 and 763 bytes). */
const TEXT_LIMITS: ReadonlyMap<number, { label: string; max: number }> = new Map([
  [TurnAttr.USERNAME, { label: 'USERNAME', max: 512 }],
  [TurnAttr.REALM, { label: 'REALM', max: 763 }],
  [TurnAttr.NONCE, { label: 'NONCE', max: 763 }],
]);

/** Decodes a STUN-framed TURN message (any method; the caller checks which it expects). */
export function decodeTurn(buf: Uint8Array): TurnDecodeResult {
  const framed = decodeStun(buf, MAX_TURN_MESSAGE_LENGTH);
  if (!framed.ok) return { ok: false, reason: framed.reason };
  const stun = framed.msg;
  const txid = stun.transactionId;
  const bad = (detail: string): TurnDecodeResult => ({ ok: false, reason: 'bad-attribute', detail });
  const text: Record<number, string> = {};
  let lifetime: number | undefined;
  let requestedTransport: number | undefined;
  let requestedFamily: number | undefined;
  let channel: number | undefined;
  const peers: Endpoint[] = [];
  let data: Uint8Array | undefined;
  let relayed: Endpoint | undefined;
  let mapped: Endpoint | undefined;
  let error: { code: number; reason: string } | undefined;
  let evenPort = false;
  let dontFragment = false;
  let reservationToken: Uint8Array | undefined;
  const unknownRequired: number[] = [];
  for (const a of stun.attributes) {
    const v = a.value;
    const u32 = (): number => new DataView(v.buffer, v.byteOffset, 4).getUint32(0);
    switch (a.type) {
      case TurnAttr.USERNAME:
      case TurnAttr.REALM:
      case TurnAttr.NONCE: {
        const limit = TEXT_LIMITS.get(a.type);
        if (!limit || a.type in text) break; // only the first counts (RFC 8489 section 5)
        if (v.length > limit.max) return bad(`${limit.label} is ${v.length} bytes long; the limit is ${limit.max}`);
        try {
          text[a.type] = utf8Decoder.decode(v);
        } catch {
          return bad(`${limit.label} is not valid UTF-8`);
        }
        break;
      }
      case TurnAttr.LIFETIME:
        if (lifetime !== undefined) break;
        if (v.length !== 4) return bad('LIFETIME must be 4 bytes');
        lifetime = u32();
        break;
      case TurnAttr.REQUESTED_TRANSPORT:
        if (requestedTransport !== undefined) break;
        if (v.length !== 4) return bad('REQUESTED-TRANSPORT must be 4 bytes');
        requestedTransport = v[0];
        break;
      case TurnAttr.REQUESTED_ADDRESS_FAMILY:
        if (requestedFamily !== undefined) break;
        if (v.length !== 4) return bad('REQUESTED-ADDRESS-FAMILY must be 4 bytes');
        requestedFamily = v[0];
        break;
      case TurnAttr.CHANNEL_NUMBER:
        if (channel !== undefined) break;
        if (v.length !== 4) return bad('CHANNEL-NUMBER must be 4 bytes');
        channel = ((v[0] ?? 0) << 8) | (v[1] ?? 0);
        break;
      case TurnAttr.XOR_PEER_ADDRESS: {
        const d = decodeXorAddress(v, txid);
        if (!d.ok) return bad(`XOR-PEER-ADDRESS: ${d.reason}`);
        peers.push(d.endpoint);
        break;
      }
      case TurnAttr.XOR_RELAYED_ADDRESS: {
        if (relayed) break;
        const d = decodeXorAddress(v, txid);
        if (!d.ok) return bad(`XOR-RELAYED-ADDRESS: ${d.reason}`);
        relayed = d.endpoint;
        break;
      }
      case TurnAttr.XOR_MAPPED_ADDRESS: {
        if (mapped) break;
        const d = decodeXorAddress(v, txid);
        if (!d.ok) return bad(`XOR-MAPPED-ADDRESS: ${d.reason}`);
        mapped = d.endpoint;
        break;
      }
      case TurnAttr.DATA:
        data ??= v;
        break;
      case TurnAttr.ERROR_CODE: {
        if (error) break;
        const e = decodeErrorCode(v);
        if (!e) return bad('ERROR-CODE is malformed');
        error = e;
        break;
      }
      case TurnAttr.EVEN_PORT:
        if (v.length !== 1) return bad('EVEN-PORT must be 1 byte');
        evenPort = true;
        break;
      case TurnAttr.DONT_FRAGMENT:
        if (v.length !== 0) return bad('DONT-FRAGMENT must be empty');
        dontFragment = true;
        break;
      case TurnAttr.RESERVATION_TOKEN:
        if (v.length !== 8) return bad('RESERVATION-TOKEN must be 8 bytes');
        reservationToken ??= v;
        break;
      default:
        if (a.type < 0x8000 && !KNOWN.has(a.type) && !unknownRequired.includes(a.type)) unknownRequired.push(a.type);
    }
  }
  return {
    ok: true,
    msg: {
      method: stun.method,
      cls: stun.cls,
      transactionId: txid,
      username: text[TurnAttr.USERNAME],
      realm: text[TurnAttr.REALM],
      nonce: text[TurnAttr.NONCE],
      lifetime,
      requestedTransport,
      requestedFamily,
      channel,
      peers,
      data,
      relayed,
      mapped,
      error,
      evenPort,
      reservationToken,
      dontFragment,
      unknownRequired,
      stun,
    },
  };
}

/** What `encodeTurn` puts in a message; every field is optional. Attributes go out in this order. */
export interface TurnFields {
  readonly username?: string;
  readonly realm?: string;
  readonly nonce?: string;
  readonly error?: { readonly code: number; readonly reason: string };
  readonly unknownAttributes?: readonly number[];
  readonly requestedTransport?: number;
  readonly requestedFamily?: number;
  readonly lifetime?: number;
  readonly channel?: number;
  readonly peers?: readonly Endpoint[];
  readonly relayed?: Endpoint;
  readonly mapped?: Endpoint;
  readonly data?: Uint8Array;
  readonly dontFragment?: boolean;
  readonly software?: string;
}

export interface TurnEncodeOptions {
  /** Long-term key (`longTermKey`): appends MESSAGE-INTEGRITY (HMAC-SHA1). */
  readonly key?: Uint8Array;
  /** Appends FINGERPRINT. */
  readonly fingerprint?: boolean;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0);
  return b;
}

/** Builds a TURN message. Throws RangeError only for programmer errors (a bad transaction id or address). */
export function encodeTurn(method: number, cls: StunClass, transactionId: Uint8Array, fields: TurnFields, options: TurnEncodeOptions = {}): Buffer {
  const attrs: AttributeInput[] = [];
  const text = (type: number, s: string | undefined): void => {
    if (s !== undefined) attrs.push({ type, value: Buffer.from(s, 'utf8') });
  };
  // USERNAME, NONCE, REALM: the order of RFC 5769's long-term sample.
  text(TurnAttr.USERNAME, fields.username);
  text(TurnAttr.NONCE, fields.nonce);
  text(TurnAttr.REALM, fields.realm);
  if (fields.error) attrs.push({ type: TurnAttr.ERROR_CODE, value: encodeErrorCode(fields.error.code, fields.error.reason) });
  if (fields.unknownAttributes && fields.unknownAttributes.length > 0) {
    const v = new Uint8Array(fields.unknownAttributes.length * 2);
    fields.unknownAttributes.forEach((t, i) => {
      v[i * 2] = t >> 8;
      v[i * 2 + 1] = t & 0xff;
    });
    attrs.push({ type: TurnAttr.UNKNOWN_ATTRIBUTES, value: v });
  }
  if (fields.requestedTransport !== undefined) attrs.push({ type: TurnAttr.REQUESTED_TRANSPORT, value: u32(fields.requestedTransport << 24) });
  if (fields.requestedFamily !== undefined) attrs.push({ type: TurnAttr.REQUESTED_ADDRESS_FAMILY, value: u32(fields.requestedFamily << 24) });
  if (fields.lifetime !== undefined) attrs.push({ type: TurnAttr.LIFETIME, value: u32(fields.lifetime) });
  if (fields.channel !== undefined) attrs.push({ type: TurnAttr.CHANNEL_NUMBER, value: u32(fields.channel << 16) });
  for (const p of fields.peers ?? []) attrs.push({ type: TurnAttr.XOR_PEER_ADDRESS, value: encodeXorAddress(p, transactionId) });
  if (fields.relayed) attrs.push({ type: TurnAttr.XOR_RELAYED_ADDRESS, value: encodeXorAddress(fields.relayed, transactionId) });
  if (fields.mapped) attrs.push({ type: TurnAttr.XOR_MAPPED_ADDRESS, value: encodeXorAddress(fields.mapped, transactionId) });
  if (fields.data) attrs.push({ type: TurnAttr.DATA, value: fields.data });
  if (fields.dontFragment) attrs.push({ type: TurnAttr.DONT_FRAGMENT, value: new Uint8Array(0) });
  text(TurnAttr.SOFTWARE, fields.software);
  return encodeStun(method, cls, transactionId, attrs, {
    ...(options.key ? { integritySha1Key: options.key } : {}),
    ...(options.fingerprint ? { fingerprint: true } : {}),
  });
}

/** Checks MESSAGE-INTEGRITY (HMAC-SHA1) of a decoded TURN message with a long-term key. */
export function verifyTurnIntegrity(buf: Uint8Array, msg: TurnMessage, key: Uint8Array): IntegrityResult {
  return verifyIntegritySha1(buf, msg.stun, key);
}

/** The long-term credential key (RFC 8489 section 9.2.2): MD5(username ":" realm ":" password). SASLprep is not applied. */
export function longTermKey(username: string, realm: string, password: string): Uint8Array {
  return new Uint8Array(createHash('md5').update(`${username}:${realm}:${password}`, 'utf8').digest());
}

// ---------------------------------------------------------------------------------------------
// ChannelData.

/** Whether a datagram is ChannelData (first byte 0x40..0x7F: RFC 8656 section 12, RFC 5766's wider range). */
export function looksLikeChannelData(buf: Uint8Array): boolean {
  return buf.length >= CHANNEL_HEADER_LENGTH && ((buf[0] ?? 0) & 0xc0) === 0x40 && !(buf[0] === 0x7f && buf[1] === 0xff);
}

/**
 * Frames `data` for `channel`. `pad` appends zeros to a multiple of 4 bytes: required over TCP, optional over UDP
 * (RFC 8656 section 12.5); receivers accept both.
 */
export function encodeChannelData(channel: number, data: Uint8Array, pad = false): Buffer {
  if (channel < MIN_CHANNEL || channel > MAX_CHANNEL) throw new RangeError(`channel 0x${channel.toString(16)} is outside 0x4000-0x7FFE`);
  if (data.length > 0xffff) throw new RangeError('ChannelData carries at most 65535 bytes');
  const total = CHANNEL_HEADER_LENGTH + (pad ? (data.length + 3) & ~3 : data.length);
  const buf = Buffer.allocUnsafe(total);
  buf.writeUInt16BE(channel, 0);
  buf.writeUInt16BE(data.length, 2);
  buf.set(data, 4);
  buf.fill(0, 4 + data.length);
  return buf;
}

export type ChannelDataDecodeError = 'too-short' | 'not-channel-data' | 'truncated' | 'too-long';

export type ChannelDataDecodeResult =
  | { readonly ok: true; readonly channel: number; readonly data: Uint8Array }
  | { readonly ok: false; readonly reason: ChannelDataDecodeError };

/**
 * Decodes one ChannelData datagram. The datagram may carry up to 3 bytes of padding after the data; a shorter one is
 * `truncated` and a longer one `too-long` (both discarded, RFC 8656 section 12.5). `data` is a view into `buf`.
 */
export function decodeChannelData(buf: Uint8Array): ChannelDataDecodeResult {
  if (buf.length < CHANNEL_HEADER_LENGTH) return { ok: false, reason: 'too-short' };
  const channel = ((buf[0] ?? 0) << 8) | (buf[1] ?? 0);
  if (channel < MIN_CHANNEL || channel > MAX_CHANNEL) return { ok: false, reason: 'not-channel-data' };
  const length = ((buf[2] ?? 0) << 8) | (buf[3] ?? 0);
  if (buf.length < CHANNEL_HEADER_LENGTH + length) return { ok: false, reason: 'truncated' };
  if (buf.length > CHANNEL_HEADER_LENGTH + ((length + 3) & ~3)) return { ok: false, reason: 'too-long' };
  return { ok: true, channel, data: buf.subarray(CHANNEL_HEADER_LENGTH, CHANNEL_HEADER_LENGTH + length) };
}

// ---------------------------------------------------------------------------------------------
// Credentials (docs/protocol.md, "Relay credentials").

/** The realm of the built-in relay. */
export const BUILTIN_REALM = 'burrow';

/** The built-in relay's credential key: HKDF-SHA256(secret, salt "", info "burrow relay v1", 32). */
export function relayKeyFromSecret(secret: Uint8Array): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', secret, new Uint8Array(0), Buffer.from('burrow relay v1', 'utf8'), 32));
}

/** Who a built-in relay allocation is for: it may reach only `peer`. */
export interface BuiltinIdentity {
  /** Unix seconds after which the credentials are refused. */
  readonly expiry: number;
  /** Hex of the network id (src/crypto/keys.ts). */
  readonly networkIdHex: string;
  /** The allocating peer's name. */
  readonly name: string;
  /** Its introduced partner's name. */
  readonly peer: string;
}

/** Names may hold ':' and '%'; in the username they are written %3A and %25 so the four fields split unambiguously. */
function escapeName(name: string): string {
  return name.replace(/%/g, '%25').replace(/:/g, '%3A');
}

function unescapeName(text: string): string | undefined {
  if (/%(?!25|3A)/.test(text)) return undefined;
  return text.replace(/%3A/g, ':').replace(/%25/g, '%');
}

/** The built-in relay's username: `EXPIRY:NETID:NAME:PEER` (':' and '%' in names escaped as %3A and %25). */
export function builtinUsername(id: BuiltinIdentity): string {
  return `${Math.floor(id.expiry)}:${id.networkIdHex}:${escapeName(id.name)}:${escapeName(id.peer)}`;
}

/** Parses a built-in relay username; undefined when it is not one. Names are not checked here (see checkName). */
export function parseBuiltinUsername(username: string): BuiltinIdentity | undefined {
  const parts = username.split(':');
  if (parts.length !== 4) return undefined;
  const [expiry, networkIdHex, name, peer] = parts as [string, string, string, string];
  if (!/^[0-9]{1,15}$/.test(expiry) || !/^[0-9a-f]{16}$/.test(networkIdHex)) return undefined;
  const n = unescapeName(name);
  const p = unescapeName(peer);
  if (n === undefined || p === undefined || n === '' || p === '') return undefined;
  return { expiry: Number(expiry), networkIdHex, name: n, peer: p };
}

/** The built-in relay's password for `username`: base64(HMAC-SHA256(relayKey, username)). */
export function builtinPassword(relayKey: Uint8Array, username: string): string {
  return createHmac('sha256', relayKey).update(username, 'utf8').digest('base64');
}

/** Both halves of the built-in relay's credentials, and the long-term key they make. */
export function builtinCredentials(relayKey: Uint8Array, id: BuiltinIdentity): { username: string; password: string; key: Uint8Array } {
  const username = builtinUsername(id);
  const password = builtinPassword(relayKey, username);
  return { username, password, key: longTermKey(username, BUILTIN_REALM, password) };
}

/**
 * TURN REST API credentials (draft-uberti-behave-turn-rest-00), what coturn's `--use-auth-secret
 * --static-auth-secret` checks: username `EXPIRY:NAME`, password base64(HMAC-SHA1(secret, username)).
 */
export function turnRestCredentials(secret: Uint8Array | string, name: string, expiry: number): { username: string; password: string } {
  const username = `${Math.floor(expiry)}:${name}`;
  const password = createHmac('sha1', typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret).update(username, 'utf8').digest('base64');
  return { username, password };
}

/** Constant-time string comparison, for passwords. */
export function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}
