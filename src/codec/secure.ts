/**
 * The encrypted stream's wire format (stream protocol version 2): the handshake HELLO, the record
 * header, and the negotiation of version and cipher. Pure: keys and randomness are passed in; decoders
 * return typed reasons and never throw. The AEAD itself lives in src/core/secure-records.ts. The design
 * is in docs/protocol.md §8, "Encrypted streams".
 *
 * HELLO (sent by both sides at once, in the clear; layout 2, used by stream versions ≥ 2):
 *
 * ```
 *  "BRW1" | 0x02 | lowest version | highest version | n | n cipher ids (preferred first) |
 *  len | name | len | peer name | nonce (32) | X25519 public key (32) | HMAC-SHA256 (32)
 * ```
 *
 * Record:
 *
 * ```
 *  length (u32, big-endian; ciphertext incl. 16-byte tag) | AEAD( type (1) | payload ≤ 256 KiB ) | tag (16)
 *  nonce = direction prefix (4) | sequence number (u64, big-endian); AAD = the length field
 * ```
 *
 * Version 1 (Burrow 0.1: HELLO layout 0x01, AES-256-GCM only, 64 KiB records) is recognised, so that a
 * peer still running it gets a clear "update" error instead of a generic handshake failure.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { checkName } from './messages.js';

export const HELLO_MAGIC = Buffer.from('BRW1', 'ascii');
/** HELLO layout byte of stream version 1 (no version or cipher fields). */
export const HELLO_LAYOUT_V1 = 0x01;
/** HELLO layout byte of stream versions ≥ 2. */
export const HELLO_LAYOUT_V2 = 0x02;
/** The stream protocol versions this code speaks. */
export const STREAM_VERSION_MIN = 2;
export const STREAM_VERSION_MAX = 2;
export const NONCE_BYTES = 32;
export const X25519_PUBLIC_BYTES = 32;
export const HELLO_MAC_BYTES = 32;
export const TAG_BYTES = 16;
/** At most this many cipher ids in a HELLO. */
export const MAX_CIPHERS = 8;
/**
 * Largest payload in one record; larger writes are split. 256 KiB: few records per MiB (each costs a
 * cipher set-up), yet small enough that a record the receiver releases is still in the CPU's L2 cache
 * when the application reads it (1 MiB records measured slower end to end: hashing then ran from RAM).
 */
export const MAX_RECORD_PAYLOAD = 256 * 1024;
/** The largest length field a record may carry: type byte, payload, tag. */
export const MAX_RECORD_LENGTH = 1 + MAX_RECORD_PAYLOAD + TAG_BYTES;
export const MIN_RECORD_LENGTH = 1 + TAG_BYTES;
export const RECORD_HEADER_BYTES = 4;
/**
 * Records between deterministic key updates (each side derives the next key by itself). With 256 KiB
 * records that is at most 64 GiB (2^36 bytes) per key, below TLS 1.3's AES-GCM limit of 2^24.5 full
 * 16 KiB records (2^38.5 bytes; RFC 8446 §5.5).
 */
export const REKEY_INTERVAL = 2 ** 18;

/** AEAD ciphers, by their id on the wire. */
export const Cipher = {
  AES_256_GCM: 0x01,
  CHACHA20_POLY1305: 0x02,
} as const;
export type CipherId = (typeof Cipher)[keyof typeof Cipher];
export const CIPHER_IDS: readonly CipherId[] = [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305];

/** The node:crypto name of a cipher. */
export function cipherName(id: CipherId): 'aes-256-gcm' | 'chacha20-poly1305' {
  return id === Cipher.AES_256_GCM ? 'aes-256-gcm' : 'chacha20-poly1305';
}

export function isCipherId(n: number): n is CipherId {
  return (CIPHER_IDS as readonly number[]).includes(n);
}

export const RecordType = {
  FINISHED: 0x01,
  DATA: 0x02,
  /** The sender will send no more data; payload: total data bytes it sent (u64). */
  EOF: 0x03,
  /** Everything up to EOF was delivered; payload: total data bytes received (u64). */
  EOF_ACK: 0x04,
} as const;
export type RecordTypeValue = (typeof RecordType)[keyof typeof RecordType];

export interface Hello {
  readonly name: string;
  readonly peer: string;
  /** The range of stream versions this side speaks. */
  readonly versions: { readonly min: number; readonly max: number };
  /** Cipher ids, most preferred first; ids this code does not know are kept (a newer peer may list them). */
  readonly ciphers: readonly number[];
  readonly nonce: Uint8Array;
  readonly publicKey: Uint8Array;
}

export type HelloDecodeError =
  | 'need-more'
  | 'bad-magic'
  | 'bad-field'
  | 'bad-name'
  | 'bad-mac'
  /** A valid HELLO of stream version 1 (authenticated with the network secret): the peer runs Burrow 0.1. */
  | 'version-1';

const MAC_LABEL_V1 = 'burrow/v1 hello';
const MAC_LABEL_V2 = 'burrow/v2 hello';

function mac(label: string, authKey: Uint8Array, context: Uint8Array, body: Uint8Array): Buffer {
  return createHmac('sha256', authKey).update(label).update(context).update(body).digest();
}

/** Encodes a HELLO, authenticated with `authKey` over `context` and the HELLO itself. Throws RangeError on misuse. */
export function encodeHello(hello: Hello, authKey: Uint8Array, context: Uint8Array): Buffer {
  const name = Buffer.from(hello.name, 'utf8');
  const peer = Buffer.from(hello.peer, 'utf8');
  if (checkName(hello.name) !== undefined || checkName(hello.peer) !== undefined) throw new RangeError('invalid name in HELLO');
  if (hello.ciphers.length === 0 || hello.ciphers.length > MAX_CIPHERS) throw new RangeError(`a HELLO lists 1 to ${MAX_CIPHERS} ciphers`);
  const { min, max } = hello.versions;
  if (!Number.isInteger(min) || !Number.isInteger(max) || min < 2 || min > max || max > 255) throw new RangeError('invalid version range');
  if (hello.nonce.length !== NONCE_BYTES || hello.publicKey.length !== X25519_PUBLIC_BYTES) throw new RangeError('nonce and public key are 32 bytes each');
  const body = Buffer.concat([
    HELLO_MAGIC,
    Buffer.from([HELLO_LAYOUT_V2, min, max, hello.ciphers.length, ...hello.ciphers, name.length]),
    name,
    Buffer.from([peer.length]),
    peer,
    hello.nonce,
    hello.publicKey,
  ]);
  return Buffer.concat([body, mac(MAC_LABEL_V2, authKey, context, body)]);
}

type HelloResult = { ok: true; hello: Hello; used: number } | { ok: false; reason: HelloDecodeError };

/**
 * Decodes a HELLO from the start of `buf`. Returns how many bytes it used, or 'need-more' while the
 * buffer is still too short (a HELLO is at most 8 + 8 + 65 + 65 + 32 + 32 + 32 bytes).
 */
export function decodeHello(buf: Uint8Array, authKey: Uint8Array, context: Uint8Array): HelloResult {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 5) return { ok: false, reason: 'need-more' };
  if (!b.subarray(0, 4).equals(HELLO_MAGIC)) return { ok: false, reason: 'bad-magic' };
  if (b[4] === HELLO_LAYOUT_V1) return decodeHelloV1(b, authKey, context);
  if (b[4] !== HELLO_LAYOUT_V2) return { ok: false, reason: 'bad-magic' };
  if (b.length < 8) return { ok: false, reason: 'need-more' };
  const min = b[5] ?? 0;
  const max = b[6] ?? 0;
  const count = b[7] ?? 0;
  if (min < 2 || min > max || count === 0 || count > MAX_CIPHERS) return { ok: false, reason: 'bad-field' };
  let at = 8 + count;
  if (b.length < at + 1) return { ok: false, reason: 'need-more' };
  const ciphers = [...b.subarray(8, at)];
  const names: string[] = [];
  for (let i = 0; i < 2; i++) {
    if (b.length < at + 1) return { ok: false, reason: 'need-more' };
    const length = b[at] ?? 0;
    if (b.length < at + 1 + length) return { ok: false, reason: 'need-more' };
    names.push(b.subarray(at + 1, at + 1 + length).toString('utf8'));
    at += 1 + length;
  }
  const end = at + NONCE_BYTES + X25519_PUBLIC_BYTES;
  if (b.length < end + HELLO_MAC_BYTES) return { ok: false, reason: 'need-more' };
  const [name = '', peer = ''] = names;
  if (checkName(name) !== undefined || checkName(peer) !== undefined) return { ok: false, reason: 'bad-name' };
  if (!timingSafeEqual(mac(MAC_LABEL_V2, authKey, context, b.subarray(0, end)), b.subarray(end, end + HELLO_MAC_BYTES))) return { ok: false, reason: 'bad-mac' };
  return {
    ok: true,
    used: end + HELLO_MAC_BYTES,
    hello: {
      name,
      peer,
      versions: { min, max },
      ciphers,
      nonce: Uint8Array.from(b.subarray(at, at + NONCE_BYTES)),
      publicKey: Uint8Array.from(b.subarray(at + NONCE_BYTES, end)),
    },
  };
}

/**
 * Version 1: "BRW1" | 0x01 | len | name | len | peer | nonce (32) | key (32) | HMAC (32). Only its MAC is
 * checked, so that 'version-1' is reported only for a real peer holding the secret.
 */
function decodeHelloV1(b: Buffer, authKey: Uint8Array, context: Uint8Array): HelloResult {
  if (b.length < 6) return { ok: false, reason: 'need-more' };
  const nameLen = b[5] ?? 0;
  if (b.length < 6 + nameLen + 1) return { ok: false, reason: 'need-more' };
  const peerLen = b[6 + nameLen] ?? 0;
  const end = 7 + nameLen + peerLen + NONCE_BYTES + X25519_PUBLIC_BYTES;
  if (b.length < end + HELLO_MAC_BYTES) return { ok: false, reason: 'need-more' };
  const valid = timingSafeEqual(mac(MAC_LABEL_V1, authKey, context, b.subarray(0, end)), b.subarray(end, end + HELLO_MAC_BYTES));
  return { ok: false, reason: valid ? 'version-1' : 'bad-mac' };
}

export type Negotiated = { ok: true; version: number; cipher: CipherId } | { ok: false; reason: 'no-common-version' | 'no-common-cipher' };

/**
 * What two HELLOs agree on; symmetric, so both sides reach the same answer on their own.
 * - Version: the highest both speak.
 * - Cipher: among the ciphers both list, the one with the lowest sum of positions in the two lists;
 *   a tie goes to ChaCha20-Poly1305. So AES-256-GCM is used when both sides prefer it (both have AES
 *   hardware), and ChaCha20-Poly1305, fast in software, as soon as one side prefers it.
 */
export function negotiate(a: Pick<Hello, 'versions' | 'ciphers'>, b: Pick<Hello, 'versions' | 'ciphers'>): Negotiated {
  const version = Math.min(a.versions.max, b.versions.max);
  if (version < Math.max(a.versions.min, b.versions.min)) return { ok: false, reason: 'no-common-version' };
  let best: { cipher: CipherId; score: number } | undefined;
  // Tie-break order: ChaCha20-Poly1305 first.
  for (const cipher of [Cipher.CHACHA20_POLY1305, Cipher.AES_256_GCM] as const) {
    const ia = a.ciphers.indexOf(cipher);
    const ib = b.ciphers.indexOf(cipher);
    if (ia < 0 || ib < 0) continue;
    if (best === undefined || ia + ib < best.score) best = { cipher, score: ia + ib };
  }
  return best === undefined ? { ok: false, reason: 'no-common-cipher' } : { ok: true, version, cipher: best.cipher };
}

/** The 4-byte record header (the AEAD's associated data) for a payload of `payloadLength` bytes. */
export function encodeRecordHeader(payloadLength: number): Buffer {
  if (!Number.isInteger(payloadLength) || payloadLength < 0 || payloadLength > MAX_RECORD_PAYLOAD) throw new RangeError('record payload too large');
  const head = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
  head.writeUInt32BE(1 + payloadLength + TAG_BYTES, 0);
  return head;
}

/** Reads a record header's length field; a length no sender can produce means the stream was altered. */
export function decodeRecordHeader(header: Uint8Array): { ok: true; length: number } | { ok: false; reason: 'need-more' | 'bad-length'; length?: number } {
  if (header.length < RECORD_HEADER_BYTES) return { ok: false, reason: 'need-more' };
  const length = Buffer.from(header.buffer, header.byteOffset, RECORD_HEADER_BYTES).readUInt32BE(0);
  if (length < MIN_RECORD_LENGTH || length > MAX_RECORD_LENGTH) return { ok: false, reason: 'bad-length', length };
  return { ok: true, length };
}

export function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

export function readU64(b: Uint8Array): number | undefined {
  if (b.length !== 8) return undefined;
  const v = Buffer.from(b.buffer, b.byteOffset, 8).readBigUInt64BE();
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(v);
}
