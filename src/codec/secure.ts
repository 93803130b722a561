/**
 * The encrypted stream's wire format: the handshake HELLO and the AEAD records. Pure: keys, nonces and
 * randomness are passed in; decoders return typed reasons and never throw. The design is in
 * docs/protocol.md, "Encrypted streams".
 *
 * HELLO (sent by both sides at once, in the clear):
 *
 * ```
 *  "BRW1" | 0x01 | len | name | len | peer name | nonce (32) | X25519 public key (32) | HMAC-SHA256 (32)
 * ```
 *
 * Record:
 *
 * ```
 *  length (u32, big-endian; ciphertext incl. 16-byte tag) | AES-256-GCM( type (1) | payload )
 *  nonce = direction prefix (4) | sequence number (u64, big-endian); AAD = the length field
 * ```
 */
import { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from 'node:crypto';
import { checkName } from './messages.js';

export const HELLO_MAGIC = Buffer.from('BRW1', 'ascii');
export const HELLO_TYPE = 0x01;
export const NONCE_BYTES = 32;
export const X25519_PUBLIC_BYTES = 32;
export const TAG_BYTES = 16;
/** Largest payload in one record; larger writes are split. */
export const MAX_RECORD_PAYLOAD = 64 * 1024;
/** Records between deterministic key updates (each side derives the next key by itself). */
export const REKEY_INTERVAL = 2 ** 20;

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
  readonly nonce: Uint8Array;
  readonly publicKey: Uint8Array;
}

export type HelloDecodeError = 'need-more' | 'bad-magic' | 'bad-name' | 'bad-mac';

/** Encodes a HELLO, authenticated with `authKey` over `context` and the HELLO itself. */
export function encodeHello(hello: Hello, authKey: Uint8Array, context: Uint8Array): Buffer {
  const name = Buffer.from(hello.name, 'utf8');
  const peer = Buffer.from(hello.peer, 'utf8');
  const body = Buffer.concat([
    HELLO_MAGIC,
    Buffer.from([HELLO_TYPE, name.length]),
    name,
    Buffer.from([peer.length]),
    peer,
    hello.nonce,
    hello.publicKey,
  ]);
  const mac = createHmac('sha256', authKey).update('burrow/v1 hello').update(context).update(body).digest();
  return Buffer.concat([body, mac]);
}

/**
 * Decodes a HELLO from the start of `buf`. Returns how many bytes it used, or 'need-more' while the
 * buffer is still too short (a HELLO is at most 4 + 1 + 65 + 65 + 32 + 32 + 32 bytes).
 */
export function decodeHello(
  buf: Uint8Array,
  authKey: Uint8Array,
  context: Uint8Array,
): { ok: true; hello: Hello; used: number } | { ok: false; reason: HelloDecodeError } {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 6) return { ok: false, reason: 'need-more' };
  if (!b.subarray(0, 4).equals(HELLO_MAGIC) || b[4] !== HELLO_TYPE) return { ok: false, reason: 'bad-magic' };
  const nameLen = b[5] ?? 0;
  if (b.length < 6 + nameLen + 1) return { ok: false, reason: 'need-more' };
  const peerLen = b[6 + nameLen] ?? 0;
  const end = 7 + nameLen + peerLen + NONCE_BYTES + X25519_PUBLIC_BYTES;
  if (b.length < end + 32) return { ok: false, reason: 'need-more' };
  const name = b.subarray(6, 6 + nameLen).toString('utf8');
  const peer = b.subarray(7 + nameLen, 7 + nameLen + peerLen).toString('utf8');
  if (checkName(name) !== undefined || checkName(peer) !== undefined) return { ok: false, reason: 'bad-name' };
  const mac = createHmac('sha256', authKey).update('burrow/v1 hello').update(context).update(b.subarray(0, end)).digest();
  if (!timingSafeEqual(mac, b.subarray(end, end + 32))) return { ok: false, reason: 'bad-mac' };
  const nonceAt = 7 + nameLen + peerLen;
  return {
    ok: true,
    used: end + 32,
    hello: {
      name,
      peer,
      nonce: Uint8Array.from(b.subarray(nonceAt, nonceAt + NONCE_BYTES)),
      publicKey: Uint8Array.from(b.subarray(nonceAt + NONCE_BYTES, end)),
    },
  };
}

/** One direction's AEAD state: key, nonce prefix and sequence number, with deterministic rekeying. */
export class RecordCipher {
  private seq = 0n;
  private key: Buffer;
  private readonly nonce = Buffer.alloc(12);

  constructor(
    key: Uint8Array,
    prefix: Uint8Array,
    private readonly rekey: (key: Uint8Array) => Uint8Array,
  ) {
    this.key = Buffer.from(key);
    this.nonce.set(prefix.subarray(0, 4), 0);
  }

  get sequence(): bigint {
    return this.seq;
  }

  private next(): Buffer {
    if (this.seq > 0n && this.seq % BigInt(REKEY_INTERVAL) === 0n) this.key = Buffer.from(this.rekey(this.key));
    this.nonce.writeBigUInt64BE(this.seq, 4);
    this.seq++;
    return this.nonce;
  }

  /**
   * Builds one record as pieces to write in order (header with the encrypted type byte, encrypted
   * payload, tag): writing them with one writev avoids copying every payload a second time.
   */
  sealPieces(type: RecordTypeValue, payload: Uint8Array): Buffer[] {
    if (payload.length > MAX_RECORD_PAYLOAD) throw new RangeError('record payload too large');
    const head = Buffer.allocUnsafe(5);
    head.writeUInt32BE(1 + payload.length + TAG_BYTES, 0);
    const cipher = createCipheriv('aes-256-gcm', this.key, this.next());
    cipher.setAAD(head.subarray(0, 4));
    cipher.update(Buffer.from([type])).copy(head, 4);
    const body = cipher.update(payload);
    const last = cipher.final();
    return last.length > 0 ? [head, body, last, cipher.getAuthTag()] : [head, body, cipher.getAuthTag()];
  }

  /** Builds one record as a single buffer. */
  seal(type: RecordTypeValue, payload: Uint8Array): Buffer {
    return Buffer.concat(this.sealPieces(type, payload));
  }

  /** Opens one record body (after its length header). Undefined when it fails authentication. */
  open(header: Uint8Array, body: Uint8Array): { type: number; payload: Buffer } | undefined {
    if (body.length < 1 + TAG_BYTES) return undefined;
    const decipher = createDecipheriv('aes-256-gcm', this.key, this.next());
    decipher.setAAD(header);
    decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
    const plain = decipher.update(body.subarray(0, body.length - TAG_BYTES));
    try {
      decipher.final();
    } catch {
      return undefined;
    }
    return { type: plain[0] ?? 0, payload: plain.subarray(1) };
  }
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
