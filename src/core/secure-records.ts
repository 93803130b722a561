/**
 * The record layer of the encrypted stream: one direction's AEAD state each way, sealing records from
 * any number of application chunks and opening them as the transport delivers bytes, without ever
 * joining chunks into one buffer. Free of I/O and clocks; keys and nonce prefixes come from the
 * handshake (./secure-session.ts). The byte layout is in src/codec/secure.ts and docs/protocol.md §8.
 *
 * Why incremental: AES-GCM and ChaCha20-Poly1305 both process a record's bytes in order, so a record of
 * 256 KiB can be encrypted from four 64 KiB chunks as they come, and decrypted from whatever pieces
 * the socket hands over. Nothing of a record is released before its tag verifies: the opener holds the
 * decrypted pieces (at most MAX_RECORD_PAYLOAD bytes) until then.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import {
  cipherName,
  decodeRecordHeader,
  encodeRecordHeader,
  RECORD_HEADER_BYTES,
  REKEY_INTERVAL,
  TAG_BYTES,
  type CipherId,
  type RecordTypeValue,
} from '../codec/secure.js';

/** The node:crypto cipher objects both AEADs share the shape of. */
export interface SealCipher {
  setAAD(aad: NodeJS.ArrayBufferView, options: { plaintextLength: number }): unknown;
  update(data: Uint8Array): Buffer;
  final(): Buffer;
  getAuthTag(): Buffer;
}
interface OpenDecipher {
  setAAD(aad: NodeJS.ArrayBufferView, options: { plaintextLength: number }): unknown;
  setAuthTag(tag: Uint8Array): unknown;
  update(data: Uint8Array): Buffer;
  final(): Buffer;
}

/** A fresh AEAD encryptor for one record (node:crypto has no way to reuse one with a new nonce). */
export function createSealCipher(algorithm: 'aes-256-gcm' | 'chacha20-poly1305', key: Uint8Array, nonce: Uint8Array): SealCipher {
  return algorithm === 'aes-256-gcm'
    ? createCipheriv(algorithm, key, nonce, { authTagLength: TAG_BYTES })
    : createCipheriv(algorithm, key, nonce, { authTagLength: TAG_BYTES });
}

function createOpenDecipher(algorithm: 'aes-256-gcm' | 'chacha20-poly1305', key: Uint8Array, nonce: Uint8Array): OpenDecipher {
  return algorithm === 'aes-256-gcm'
    ? createDecipheriv(algorithm, key, nonce, { authTagLength: TAG_BYTES })
    : createDecipheriv(algorithm, key, nonce, { authTagLength: TAG_BYTES });
}

/**
 * node:crypto returns every update() in a fresh buffer. Above glibc's mmap threshold (128 KiB) each
 * one would be mapped, page-faulted in and unmapped again: so the cipher never sees more than this
 * at once (measured: a 1 MiB update per record cost the sender five times the page faults).
 */
const UPDATE_SLICE = 64 * 1024;
/**
 * Decrypted pieces smaller than this are copied together (into buffers of up to 64 KiB) rather than
 * kept one by one: a path that re-segments the stream into tiny TCP segments must not make one record
 * cost a million buffer objects. Larger pieces are kept as they are, without a copy.
 */
const SMALL_PIECE = 4 * 1024;
const COALESCE_BYTES = 64 * 1024;
const EMPTY = Buffer.alloc(0);

/** Derives a direction's next key from its current one. */
export type Rekey = (key: Uint8Array) => Uint8Array;

const TYPE_BYTES = new Map<number, Buffer>();
function typeByte(type: number): Buffer {
  let b = TYPE_BYTES.get(type);
  if (b === undefined) {
    b = Buffer.from([type]);
    TYPE_BYTES.set(type, b);
  }
  return b;
}

/** Key, nonce prefix and sequence number of one direction, with deterministic rekeying. */
class DirectionState {
  private seq = 0;
  private current: Buffer;
  private readonly nonceBytes = Buffer.alloc(12);
  readonly algorithm: 'aes-256-gcm' | 'chacha20-poly1305';

  constructor(
    cipher: CipherId,
    key: Uint8Array,
    prefix: Uint8Array,
    private readonly rekey: Rekey,
    private readonly rekeyInterval: number,
  ) {
    if (key.length !== 32 || prefix.length < 4) throw new RangeError('a direction needs a 32-byte key and a 4-byte nonce prefix');
    this.algorithm = cipherName(cipher);
    this.current = Buffer.from(key);
    this.nonceBytes.set(prefix.subarray(0, 4), 0);
  }

  /** Records processed so far in this direction. */
  get sequence(): number {
    return this.seq;
  }

  /** The key and nonce of the next record (the nonce buffer is reused: use it at once). */
  next(): { key: Buffer; nonce: Buffer } {
    if (this.seq > 0 && this.seq % this.rekeyInterval === 0) this.current = Buffer.from(this.rekey(this.current));
    // u64 big-endian without BigInt: 2^53 records are far beyond any stream.
    this.nonceBytes.writeUInt32BE(Math.floor(this.seq / 2 ** 32), 4);
    this.nonceBytes.writeUInt32BE(this.seq >>> 0, 8);
    this.seq++;
    return { key: this.current, nonce: this.nonceBytes };
  }
}

/** Seals our direction's records. `rekeyInterval` is for tests; the protocol's is REKEY_INTERVAL. */
export class RecordSealer {
  private readonly state: DirectionState;

  constructor(cipher: CipherId, key: Uint8Array, prefix: Uint8Array, rekey: Rekey, rekeyInterval = REKEY_INTERVAL) {
    this.state = new DirectionState(cipher, key, prefix, rekey, rekeyInterval);
  }

  get sequence(): number {
    return this.state.sequence;
  }

  /**
   * Seals one record whose payload is `parts` joined (at most MAX_RECORD_PAYLOAD bytes) and appends
   * the pieces to write, in order, to `out`: header (length and the encrypted type byte), the
   * ciphertext of each part, the tag. The parts are read once and never copied.
   */
  seal(type: RecordTypeValue, parts: readonly Uint8Array[], out: Buffer[]): void {
    let length = 0;
    for (const p of parts) length += p.length;
    const header = encodeRecordHeader(length);
    const { key, nonce } = this.state.next();
    const cipher = createSealCipher(this.state.algorithm, key, nonce);
    cipher.setAAD(header, { plaintextLength: 1 + length });
    const head = Buffer.allocUnsafe(RECORD_HEADER_BYTES + 1);
    header.copy(head, 0);
    cipher.update(typeByte(type)).copy(head, RECORD_HEADER_BYTES);
    out.push(head);
    for (const p of parts) {
      for (let at = 0; at < p.length; at += UPDATE_SLICE) out.push(cipher.update(p.length <= UPDATE_SLICE ? p : p.subarray(at, at + UPDATE_SLICE)));
    }
    const last = cipher.final();
    if (last.length > 0) out.push(last);
    out.push(cipher.getAuthTag());
  }

  /** One record as a single buffer (handshake and control records, tests). */
  sealOne(type: RecordTypeValue, payload: Uint8Array): Buffer {
    const out: Buffer[] = [];
    this.seal(type, [payload], out);
    return Buffer.concat(out);
  }
}

export type OpenEvent =
  /** A record verified: its type and its payload, in pieces (views into fresh buffers, never reused). */
  | { readonly kind: 'record'; readonly type: number; readonly payload: readonly Buffer[]; readonly payloadBytes: number }
  /** A length field no sender produces: the stream was altered. */
  | { readonly kind: 'bad-length'; readonly length: number }
  /** The tag did not verify: altered, reordered, replayed or injected. */
  | { readonly kind: 'bad-tag' };

/** Opens the peer's records from the transport's bytes, in whatever pieces they come. */
export class RecordOpener {
  private readonly state: DirectionState;
  private phase: 'header' | 'body' | 'tag' | 'failed' = 'header';
  private readonly header = Buffer.alloc(RECORD_HEADER_BYTES);
  private readonly tag = Buffer.alloc(TAG_BYTES);
  private filled = 0;
  private bodyLeft = 0;
  private decipher: OpenDecipher | undefined;
  private pieces: Buffer[] = [];
  private held = 0;
  /** Where small pieces are gathered: [tailStart, tailUsed) is not yet in `pieces`. */
  private tail: Buffer = EMPTY;
  private tailStart = 0;
  private tailUsed = 0;

  constructor(cipher: CipherId, key: Uint8Array, prefix: Uint8Array, rekey: Rekey, rekeyInterval = REKEY_INTERVAL) {
    this.state = new DirectionState(cipher, key, prefix, rekey, rekeyInterval);
  }

  get sequence(): number {
    return this.state.sequence;
  }

  /** True while part of a record has arrived but not all of it. */
  get midRecord(): boolean {
    return this.phase !== 'header' || this.filled > 0;
  }

  /** Decrypted bytes held back until their record's tag arrives (at most MAX_RECORD_PAYLOAD + 1). */
  get heldBytes(): number {
    return this.held;
  }

  /**
   * Takes bytes from `chunk` starting at `at` and stops at the end of the first record that completes
   * (or fails), so the caller can act on it before the next one. `used` says how many bytes it took.
   * After a failure it takes nothing more.
   */
  take(chunk: Uint8Array, at = 0): { used: number; event?: OpenEvent } {
    const start = at;
    while (at < chunk.length) {
      switch (this.phase) {
        case 'failed':
          return { used: at - start };
        case 'header': {
          const n = Math.min(RECORD_HEADER_BYTES - this.filled, chunk.length - at);
          this.header.set(chunk.subarray(at, at + n), this.filled);
          this.filled += n;
          at += n;
          if (this.filled < RECORD_HEADER_BYTES) break;
          this.filled = 0;
          const h = decodeRecordHeader(this.header);
          if (!h.ok) {
            this.phase = 'failed';
            return { used: at - start, event: { kind: 'bad-length', length: h.length ?? 0 } };
          }
          const { key, nonce } = this.state.next();
          this.decipher = createOpenDecipher(this.state.algorithm, key, nonce);
          this.bodyLeft = h.length - TAG_BYTES;
          this.decipher.setAAD(this.header, { plaintextLength: this.bodyLeft });
          this.phase = 'body';
          break;
        }
        case 'body': {
          const n = Math.min(this.bodyLeft, chunk.length - at, UPDATE_SLICE);
          const plain = this.decipher?.update(chunk.subarray(at, at + n));
          if (plain !== undefined && plain.length > 0) this.keep(plain);
          this.bodyLeft -= n;
          at += n;
          if (this.bodyLeft === 0) this.phase = 'tag';
          break;
        }
        case 'tag': {
          const n = Math.min(TAG_BYTES - this.filled, chunk.length - at);
          this.tag.set(chunk.subarray(at, at + n), this.filled);
          this.filled += n;
          at += n;
          if (this.filled < TAG_BYTES) break;
          return { used: at - start, event: this.finish() };
        }
      }
    }
    return { used: at - start };
  }

  /** Holds a decrypted piece until the tag verifies (small ones gathered, see SMALL_PIECE). */
  private keep(plain: Buffer): void {
    this.held += plain.length;
    if (plain.length >= SMALL_PIECE) {
      this.flushTail();
      this.pieces.push(plain);
      return;
    }
    if (this.tailUsed + plain.length > this.tail.length) {
      this.flushTail();
      // bodyLeft still counts this piece: never gather more than the record has left.
      this.tail = Buffer.allocUnsafe(Math.max(plain.length, Math.min(COALESCE_BYTES, this.bodyLeft)));
      this.tailStart = 0;
      this.tailUsed = 0;
    }
    plain.copy(this.tail, this.tailUsed);
    this.tailUsed += plain.length;
  }

  private flushTail(): void {
    if (this.tailUsed > this.tailStart) this.pieces.push(this.tail.subarray(this.tailStart, this.tailUsed));
    this.tailStart = this.tailUsed;
  }

  private finish(): OpenEvent {
    this.flushTail();
    this.tail = EMPTY;
    this.tailStart = 0;
    this.tailUsed = 0;
    const decipher = this.decipher;
    const pieces = this.pieces;
    this.decipher = undefined;
    this.pieces = [];
    this.held = 0;
    this.filled = 0;
    let verified = false;
    if (decipher !== undefined) {
      try {
        decipher.setAuthTag(this.tag);
        decipher.final();
        verified = true;
      } catch {
        verified = false;
      }
    }
    if (!verified) {
      this.phase = 'failed';
      return { kind: 'bad-tag' };
    }
    this.phase = 'header';
    // The first plaintext byte is the record type; the payload follows it.
    const first = pieces[0];
    const type = first?.[0] ?? 0;
    const payload: Buffer[] = [];
    let payloadBytes = 0;
    for (const [i, piece] of pieces.entries()) {
      const p = i === 0 ? piece.subarray(1) : piece;
      if (p.length > 0) {
        payload.push(p);
        payloadBytes += p.length;
      }
    }
    return { kind: 'record', type, payload, payloadBytes };
  }
}

