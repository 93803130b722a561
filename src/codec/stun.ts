/**
 * STUN message framing (RFC 8489): header, attributes, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT.
 *
 * Pure: callers pass transaction ids and keys in; nothing here draws randomness or reads the clock.
 * Decoders never throw: they return `{ ok: false, reason }` with a typed reason.
 *
 * ```
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |0 0|     STUN Message Type     |         Message Length        |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                         Magic Cookie                          |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |                     Transaction ID (96 bits)                  |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * ```
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { addressToBytes, bytesToAddress, type Endpoint } from './address.js';

export const MAGIC_COOKIE = 0x2112a442;
export const HEADER_LENGTH = 20;
export const TRANSACTION_ID_LENGTH = 12;
/** Largest message we accept or build: fits an unfragmented IPv6 UDP datagram on a 1280-byte MTU path. */
export const MAX_MESSAGE_LENGTH = 1200;

export type StunClass = 'request' | 'indication' | 'success' | 'error';

/** Standard attribute types (RFC 8489 section 18.3, RFC 5780 section 7). */
export const Attr = {
  MAPPED_ADDRESS: 0x0001,
  CHANGE_REQUEST: 0x0003,
  USERNAME: 0x0006,
  /** HMAC-SHA1 (RFC 8489 section 14.5); TURN's long-term credentials use it (src/codec/turn.ts). */
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  UNKNOWN_ATTRIBUTES: 0x000a,
  XOR_PEER_ADDRESS: 0x0012,
  MESSAGE_INTEGRITY_SHA256: 0x001c,
  XOR_MAPPED_ADDRESS: 0x0020,
  PADDING: 0x0026,
  RESPONSE_PORT: 0x0027,
  SOFTWARE: 0x8022,
  FINGERPRINT: 0x8028,
  RESPONSE_ORIGIN: 0x802b,
  OTHER_ADDRESS: 0x802c,
} as const;

export interface StunAttribute {
  readonly type: number;
  readonly value: Uint8Array;
  /** Offset of the attribute header within the decoded message. */
  readonly offset: number;
}

export interface StunMessage {
  readonly method: number;
  readonly cls: StunClass;
  readonly transactionId: Uint8Array;
  readonly attributes: readonly StunAttribute[];
}

export type StunDecodeError =
  | 'too-short'
  | 'too-long'
  | 'not-stun'
  | 'bad-length'
  | 'truncated-attribute'
  | 'attribute-after-fingerprint'
  | 'bad-fingerprint';

export type StunDecodeResult = { ok: true; msg: StunMessage } | { ok: false; reason: StunDecodeError };

const CLASS_BITS: Record<StunClass, number> = { request: 0x000, indication: 0x010, success: 0x100, error: 0x110 };

/** Interleaves the 12-bit method and the 2-bit class into the 14-bit message type (RFC 8489 section 5). */
export function messageType(method: number, cls: StunClass): number {
  return ((method & 0xf80) << 2) | ((method & 0x070) << 1) | (method & 0x00f) | CLASS_BITS[cls];
}

function splitType(type: number): { method: number; cls: StunClass } {
  const method = ((type & 0x3e00) >> 2) | ((type & 0x00e0) >> 1) | (type & 0x000f);
  const c = type & 0x0110;
  const cls: StunClass = c === 0x000 ? 'request' : c === 0x010 ? 'indication' : c === 0x100 ? 'success' : 'error';
  return { method, cls };
}

/** Cheap test used to demultiplex STUN from other traffic on one port (RFC 7983 plus the magic cookie). */
export function looksLikeStun(buf: Uint8Array): boolean {
  return (
    buf.length >= HEADER_LENGTH &&
    ((buf[0] ?? 0xff) & 0xc0) === 0 &&
    buf[4] === 0x21 &&
    buf[5] === 0x12 &&
    buf[6] === 0xa4 &&
    buf[7] === 0x42
  );
}

/**
 * Decodes one STUN message. `maxLength` defaults to MAX_MESSAGE_LENGTH; TURN, whose Send and Data indications carry
 * whole datagrams, passes a larger bound (src/codec/turn.ts).
 */
export function decodeStun(buf: Uint8Array, maxLength: number = MAX_MESSAGE_LENGTH): StunDecodeResult {
  if (buf.length < HEADER_LENGTH) return { ok: false, reason: 'too-short' };
  if (buf.length > maxLength) return { ok: false, reason: 'too-long' };
  if (!looksLikeStun(buf)) return { ok: false, reason: 'not-stun' };
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const type = view.getUint16(0);
  const length = view.getUint16(2);
  if (length % 4 !== 0 || length + HEADER_LENGTH !== buf.length) return { ok: false, reason: 'bad-length' };
  const attributes: StunAttribute[] = [];
  let offset = HEADER_LENGTH;
  let sawFingerprint = false;
  while (offset < buf.length) {
    if (sawFingerprint) return { ok: false, reason: 'attribute-after-fingerprint' };
    if (offset + 4 > buf.length) return { ok: false, reason: 'truncated-attribute' };
    const attrType = view.getUint16(offset);
    const attrLength = view.getUint16(offset + 2);
    const padded = (attrLength + 3) & ~3;
    if (offset + 4 + padded > buf.length) return { ok: false, reason: 'truncated-attribute' };
    const value = buf.subarray(offset + 4, offset + 4 + attrLength);
    if (attrType === Attr.FINGERPRINT) {
      if (attrLength !== 4 || view.getUint32(offset + 4) !== fingerprintOf(buf, offset)) {
        return { ok: false, reason: 'bad-fingerprint' };
      }
      sawFingerprint = true;
    }
    attributes.push({ type: attrType, value, offset });
    offset += 4 + padded;
  }
  const { method, cls } = splitType(type);
  return { ok: true, msg: { method, cls, transactionId: buf.subarray(8, 20), attributes } };
}

/**
 * Splits a byte stream into STUN messages (RFC 8489 section 6.2.2: over TCP each message is delimited
 * by its own length field). Returns whole messages and the unconsumed rest, or an error when the next
 * message cannot be STUN or would exceed MAX_MESSAGE_LENGTH (the connection should then be closed).
 */
export function splitStunStream(buf: Uint8Array): { messages: Uint8Array[]; rest: Uint8Array } | { error: 'not-stun' | 'too-long' } {
  const messages: Uint8Array[] = [];
  let at = 0;
  while (buf.length - at >= 4) {
    if (((buf[at] ?? 0) & 0xc0) !== 0) return { error: 'not-stun' };
    const total = HEADER_LENGTH + (((buf[at + 2] ?? 0) << 8) | (buf[at + 3] ?? 0));
    if (total > MAX_MESSAGE_LENGTH) return { error: 'too-long' };
    if (buf.length - at < total) break;
    messages.push(buf.subarray(at, at + total));
    at += total;
  }
  return { messages, rest: buf.subarray(at) };
}

export function findAttribute(msg: StunMessage, type: number): StunAttribute | undefined {
  return msg.attributes.find((a) => a.type === type);
}

export interface EncodeOptions {
  /** Append MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 section 14.5) computed with this key, before any SHA-256 one. */
  readonly integritySha1Key?: Uint8Array;
  /** Append MESSAGE-INTEGRITY-SHA256 computed with this key (RFC 8489 section 14.6). */
  readonly integrityKey?: Uint8Array;
  /** Append FINGERPRINT (RFC 8489 section 14.7). */
  readonly fingerprint?: boolean;
  /** Append a PADDING attribute (RFC 5780 section 7.6) so the message is at least this long. */
  readonly padTo?: number;
}

export interface AttributeInput {
  readonly type: number;
  readonly value: Uint8Array;
}

export function encodeStun(
  method: number,
  cls: StunClass,
  transactionId: Uint8Array,
  attributes: readonly AttributeInput[],
  options: EncodeOptions = {},
): Buffer {
  if (transactionId.length !== TRANSACTION_ID_LENGTH) throw new RangeError('transaction id must be 12 bytes');
  const all = [...attributes];
  let bodyLength = all.reduce((n, a) => n + 4 + ((a.value.length + 3) & ~3), 0);
  const tail = (options.integritySha1Key ? 24 : 0) + (options.integrityKey ? 36 : 0) + (options.fingerprint ? 8 : 0);
  if (options.padTo !== undefined) {
    const missing = options.padTo - (HEADER_LENGTH + bodyLength + tail);
    if (missing > 0) {
      const padLength = Math.max(0, ((missing + 3) & ~3) - 4);
      all.push({ type: Attr.PADDING, value: new Uint8Array(padLength) });
      bodyLength += 4 + padLength;
    }
  }
  // From Node's buffer pool (zeroed: attribute padding must be zero), not a fresh ArrayBuffer each time.
  const buf = Buffer.allocUnsafe(HEADER_LENGTH + bodyLength + tail).fill(0);
  buf.writeUInt16BE(messageType(method, cls), 0);
  buf.writeUInt32BE(MAGIC_COOKIE, 4);
  buf.set(transactionId, 8);
  let offset = HEADER_LENGTH;
  for (const a of all) {
    buf.writeUInt16BE(a.type, offset);
    buf.writeUInt16BE(a.value.length, offset + 2);
    buf.set(a.value, offset + 4);
    offset += 4 + ((a.value.length + 3) & ~3);
  }
  if (options.integritySha1Key) {
    buf.writeUInt16BE(offset + 24 - HEADER_LENGTH, 2);
    const mac = createHmac('sha1', options.integritySha1Key).update(buf.subarray(0, offset)).digest();
    buf.writeUInt16BE(Attr.MESSAGE_INTEGRITY, offset);
    buf.writeUInt16BE(20, offset + 2);
    mac.copy(buf, offset + 4);
    offset += 24;
  }
  if (options.integrityKey) {
    // The length field covers everything up to and including MESSAGE-INTEGRITY-SHA256 while hashing.
    buf.writeUInt16BE(offset + 36 - HEADER_LENGTH, 2);
    const mac = createHmac('sha256', options.integrityKey).update(buf.subarray(0, offset)).digest();
    buf.writeUInt16BE(Attr.MESSAGE_INTEGRITY_SHA256, offset);
    buf.writeUInt16BE(32, offset + 2);
    mac.copy(buf, offset + 4);
    offset += 36;
  }
  if (options.fingerprint) {
    buf.writeUInt16BE(offset + 8 - HEADER_LENGTH, 2);
    buf.writeUInt16BE(Attr.FINGERPRINT, offset);
    buf.writeUInt16BE(4, offset + 2);
    buf.writeUInt32BE(fingerprintOf(buf, offset), offset + 4);
    offset += 8;
  }
  buf.writeUInt16BE(offset - HEADER_LENGTH, 2);
  return buf;
}

export type IntegrityResult = 'valid' | 'missing' | 'invalid';

/**
 * Checks MESSAGE-INTEGRITY-SHA256 with `key`. Only FINGERPRINT may follow it; attributes
 * after it are not covered and make the message invalid (RFC 8489 section 14.6).
 */
export function verifyIntegrity(buf: Uint8Array, msg: StunMessage, key: Uint8Array): IntegrityResult {
  const index = msg.attributes.findIndex((a) => a.type === Attr.MESSAGE_INTEGRITY_SHA256);
  if (index < 0) return 'missing';
  const attr = msg.attributes[index];
  if (!attr || attr.value.length !== 32) return 'invalid';
  const following = msg.attributes.slice(index + 1);
  if (following.some((a) => a.type !== Attr.FINGERPRINT)) return 'invalid';
  const header = Buffer.from(buf.subarray(0, HEADER_LENGTH));
  header.writeUInt16BE(attr.offset + 36 - HEADER_LENGTH, 2);
  const mac = createHmac('sha256', key).update(header).update(buf.subarray(HEADER_LENGTH, attr.offset)).digest();
  return timingSafeEqual(mac, attr.value) ? 'valid' : 'invalid';
}

/**
 * Checks MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 section 14.5) with `key`. Only MESSAGE-INTEGRITY-SHA256 and
 * FINGERPRINT may follow it.
 */
export function verifyIntegritySha1(buf: Uint8Array, msg: StunMessage, key: Uint8Array): IntegrityResult {
  const index = msg.attributes.findIndex((a) => a.type === Attr.MESSAGE_INTEGRITY);
  if (index < 0) return 'missing';
  const attr = msg.attributes[index];
  if (!attr || attr.value.length !== 20) return 'invalid';
  const following = msg.attributes.slice(index + 1);
  if (following.some((a) => a.type !== Attr.FINGERPRINT && a.type !== Attr.MESSAGE_INTEGRITY_SHA256)) return 'invalid';
  const header = Buffer.from(buf.subarray(0, HEADER_LENGTH));
  header.writeUInt16BE(attr.offset + 24 - HEADER_LENGTH, 2);
  const mac = createHmac('sha1', key).update(header).update(buf.subarray(HEADER_LENGTH, attr.offset)).digest();
  return timingSafeEqual(mac, attr.value) ? 'valid' : 'invalid';
}

// CRC-32 (ISO-HDLC) table, for FINGERPRINT.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) c = (CRC_TABLE[(c ^ byte) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** FINGERPRINT value for a FINGERPRINT attribute at `offset`: CRC-32 of what precedes it, XOR 0x5354554e. */
function fingerprintOf(buf: Uint8Array, offset: number): number {
  // The CRC covers the header with a length that already counts the FINGERPRINT attribute.
  const header = Buffer.from(buf.subarray(0, HEADER_LENGTH));
  header.writeUInt16BE(offset + 8 - HEADER_LENGTH, 2);
  const joined = Buffer.concat([header, buf.subarray(HEADER_LENGTH, offset)]);
  return (crc32(joined) ^ 0x5354554e) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Address attributes (RFC 8489 sections 14.1 and 14.2).
//
//  0                   1                   2                   3
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |0 0 0 0 0 0 0 0|    Family     |         X-Port                |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                X-Address (Variable)
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

export type AddressDecodeError = 'bad-address-length' | 'bad-family';

function xorMask(transactionId: Uint8Array): Uint8Array {
  const mask = new Uint8Array(16);
  mask.set([0x21, 0x12, 0xa4, 0x42], 0);
  mask.set(transactionId, 4);
  return mask;
}

export function encodeXorAddress(endpoint: Endpoint, transactionId: Uint8Array): Uint8Array {
  const bytes = addressToBytes(endpoint.address);
  if (!bytes) throw new RangeError(`not an IP address: ${endpoint.address}`);
  const out = new Uint8Array(4 + bytes.length);
  out[1] = bytes.length === 4 ? 0x01 : 0x02;
  out[2] = (endpoint.port >> 8) ^ 0x21;
  out[3] = (endpoint.port & 0xff) ^ 0x12;
  const mask = xorMask(transactionId);
  for (let i = 0; i < bytes.length; i++) out[4 + i] = (bytes[i] ?? 0) ^ (mask[i] ?? 0);
  return out;
}

export function decodeXorAddress(
  value: Uint8Array,
  transactionId: Uint8Array,
): { ok: true; endpoint: Endpoint } | { ok: false; reason: AddressDecodeError } {
  const plain = decodePlainAddress(value);
  if (!plain.ok) return plain;
  const mask = xorMask(transactionId);
  const bytes = value.subarray(4).map((b, i) => b ^ (mask[i] ?? 0));
  const port = ((value[2] ?? 0) << 8 | (value[3] ?? 0)) ^ 0x2112;
  return { ok: true, endpoint: { address: bytesToAddress(bytes), port } };
}

export function encodePlainAddress(endpoint: Endpoint): Uint8Array {
  const bytes = addressToBytes(endpoint.address);
  if (!bytes) throw new RangeError(`not an IP address: ${endpoint.address}`);
  const out = new Uint8Array(4 + bytes.length);
  out[1] = bytes.length === 4 ? 0x01 : 0x02;
  out[2] = endpoint.port >> 8;
  out[3] = endpoint.port & 0xff;
  out.set(bytes, 4);
  return out;
}

export function decodePlainAddress(
  value: Uint8Array,
): { ok: true; endpoint: Endpoint } | { ok: false; reason: AddressDecodeError } {
  if (value.length !== 8 && value.length !== 20) return { ok: false, reason: 'bad-address-length' };
  const family = value[1];
  if (!((family === 0x01 && value.length === 8) || (family === 0x02 && value.length === 20))) {
    return { ok: false, reason: 'bad-family' };
  }
  const port = ((value[2] ?? 0) << 8) | (value[3] ?? 0);
  return { ok: true, endpoint: { address: bytesToAddress(value.subarray(4)), port } };
}

// ERROR-CODE (RFC 8489 section 14.8): 21 reserved bits, 3-bit class, 8-bit number, UTF-8 reason.
export function encodeErrorCode(code: number, reason: string): Uint8Array {
  const text = Buffer.from(reason, 'utf8');
  const out = new Uint8Array(4 + text.length);
  out[2] = Math.floor(code / 100) & 0x07;
  out[3] = code % 100;
  out.set(text, 4);
  return out;
}

export function decodeErrorCode(value: Uint8Array): { code: number; reason: string } | undefined {
  if (value.length < 4) return undefined;
  const cls = (value[2] ?? 0) & 0x07;
  const num = value[3] ?? 0;
  if (cls < 3 || cls > 6 || num > 99) return undefined;
  return { code: cls * 100 + num, reason: Buffer.from(value.subarray(4)).toString('utf8') };
}
