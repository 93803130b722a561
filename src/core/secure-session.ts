/**
 * The encrypted stream as a sans-IO state machine: bytes from the transport in, bytes to send and
 * application events out. Any reliable byte transport carries it (TCP simultaneous open today, a relay
 * later); src/node/secure-stream.ts wraps it as a Node Duplex.
 *
 * Theory of operation
 * -------------------
 * 1. Both sides send HELLO at once: names, a fresh 32-byte nonce, a fresh X25519 public key, and an
 *    HMAC under a key derived from the network secret over the rendezvous context and the HELLO. Only
 *    holders of the secret can produce one; a HELLO naming anyone but the expected partner (including our
 *    own, reflected) is refused.
 * 2. shared = X25519(our ephemeral private key, their public key). transcript = SHA-256(context ‖ HELLO
 *    of the name that sorts first ‖ the other HELLO). Two direction keys and nonce prefixes come from
 *    HKDF(shared, transcript). The ephemeral keys are dropped after this, so recorded traffic stays
 *    secret even if the network secret leaks later (forward secrecy).
 * 3. Each side's first record is FINISHED carrying the transcript hash: key confirmation.
 * 4. DATA records follow. Nonces are implicit sequence numbers, so a dropped, repeated or reordered
 *    record fails authentication; nothing is released to the application before its record verifies.
 * 5. EOF carries the number of data bytes sent; the receiver answers EOF_ACK with the number it
 *    delivered once the application says everything was written out. A transport that ends before EOF
 *    is a truncation.
 */
import { createHash, hkdfSync } from 'node:crypto';
import {
  decodeHello,
  encodeHello,
  MAX_RECORD_PAYLOAD,
  NONCE_BYTES,
  readU64,
  RecordCipher,
  RecordType,
  u64,
  type Hello,
} from '../codec/secure.js';

export type SecureErrorKind = 'handshake' | 'tampered' | 'truncated' | 'protocol' | 'delivery';

export interface SecureError {
  readonly kind: SecureErrorKind;
  readonly detail: string;
}

export type SessionOutput =
  | { readonly type: 'send'; readonly data: Buffer }
  | { readonly type: 'established' }
  | { readonly type: 'data'; readonly data: Buffer }
  | { readonly type: 'peer-eof'; readonly bytes: number }
  | { readonly type: 'delivered'; readonly bytes: number }
  | { readonly type: 'error'; readonly error: SecureError };

export interface SecureSessionConfig {
  readonly name: string;
  readonly peer: string;
  /** From the network secret (NetworkKeys.streamAuth). */
  readonly authKey: Uint8Array;
  /** Binds the stream to its rendezvous (e.g. both session nonces); both sides must pass the same bytes. */
  readonly context: Uint8Array;
  /** Fresh per stream. */
  readonly nonce: Uint8Array;
  readonly publicKey: Uint8Array;
  /** X25519 with our ephemeral private key (injected so the core stays free of key generation). */
  readonly agree: (peerPublicKey: Uint8Array) => Uint8Array;
}

type State = 'idle' | 'hello-sent' | 'awaiting-finished' | 'open' | 'failed';

export class SecureSession {
  private state: State = 'idle';
  private inbox: Buffer[] = [];
  private inboxBytes = 0;
  private ourHello: Buffer | undefined;
  private send: RecordCipher | undefined;
  private recv: RecordCipher | undefined;
  private transcript: Buffer | undefined;
  private sentBytes = 0;
  private receivedBytes = 0;
  private weEnded = false;
  private peerEnded = false;
  private acked = false;
  private delivered = false;

  constructor(private readonly config: SecureSessionConfig) {
    if (config.nonce.length !== NONCE_BYTES) throw new RangeError('nonce must be 32 bytes');
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }
  get bytesSent(): number {
    return this.sentBytes;
  }
  get bytesReceived(): number {
    return this.receivedBytes;
  }
  get peerHasEnded(): boolean {
    return this.peerEnded;
  }
  get hasAcknowledged(): boolean {
    return this.acked;
  }

  start(): SessionOutput[] {
    if (this.state !== 'idle') return [];
    const hello: Hello = { name: this.config.name, peer: this.config.peer, nonce: this.config.nonce, publicKey: this.config.publicKey };
    this.ourHello = encodeHello(hello, this.config.authKey, this.config.context);
    this.state = 'hello-sent';
    return [{ type: 'send', data: this.ourHello }];
  }

  /** Bytes from the transport. */
  receive(chunk: Uint8Array, draining = false): SessionOutput[] {
    if (this.state === 'failed' || (chunk.length === 0 && !draining)) return [];
    if (chunk.length > 0) {
      this.inbox.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.inboxBytes += chunk.length;
    }
    const out: SessionOutput[] = [];
    // Each step consumes one HELLO or one record; both return false when they need more bytes or failed.
    for (;;) {
      const state: State = this.state;
      const progressed = state === 'hello-sent' ? this.takeHello(out) : state === 'awaiting-finished' || state === 'open' ? this.takeRecord(out) : false;
      if (!progressed) break;
    }
    return out;
  }

  /** Processes bytes already received (after 'established'). */
  drain(): SessionOutput[] {
    return this.receive(new Uint8Array(0), true);
  }

  /** The transport ended (or broke). */
  transportEnded(): SessionOutput[] {
    if (this.state === 'failed') return [];
    if (this.peerEnded && this.weEnded && this.delivered) return [];
    if (this.peerEnded) {
      return this.fail('delivery', 'the connection closed before the peer confirmed it received everything we sent');
    }
    return this.fail('truncated', this.state === 'open'
      ? 'the connection ended without the peer’s authenticated end-of-stream: data may be missing'
      : 'the connection closed during the handshake');
  }

  /** Application data to send, split into records. */
  write(data: Uint8Array): SessionOutput[] {
    if (this.state !== 'open' || !this.send) throw new Error('write before the stream is open');
    if (this.weEnded) throw new Error('write after end');
    const out: SessionOutput[] = [];
    for (let at = 0; at < data.length; at += MAX_RECORD_PAYLOAD) {
      const part = data.subarray(at, Math.min(data.length, at + MAX_RECORD_PAYLOAD));
      for (const piece of this.send.sealPieces(RecordType.DATA, part)) out.push({ type: 'send', data: piece });
    }
    this.sentBytes += data.length;
    return out;
  }

  /** No more data from us. */
  end(): SessionOutput[] {
    if (this.state !== 'open' || !this.send || this.weEnded) return [];
    this.weEnded = true;
    return [{ type: 'send', data: this.send.seal(RecordType.EOF, u64(this.sentBytes)) }];
  }

  /** The application wrote out everything the peer sent: confirm delivery. */
  acknowledgeEnd(): SessionOutput[] {
    if (this.state !== 'open' || !this.send || !this.peerEnded || this.acked) return [];
    this.acked = true;
    return [{ type: 'send', data: this.send.seal(RecordType.EOF_ACK, u64(this.receivedBytes)) }];
  }

  // -------------------------------------------------------------------------------------------

  private fail(kind: SecureErrorKind, detail: string): SessionOutput[] {
    this.state = 'failed';
    this.inbox = [];
    return [{ type: 'error', error: { kind, detail } }];
  }

  /** The first n buffered bytes (n ≤ inboxBytes): a view when they lie in one chunk, else one copy. */
  private peek(n: number): Buffer {
    const first = this.inbox[0] ?? Buffer.alloc(0);
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    for (const chunk of this.inbox) {
      if (at >= n) break;
      at += chunk.copy(out, at, 0, Math.min(chunk.length, n - at));
    }
    return out;
  }

  private consume(n: number): void {
    this.inboxBytes -= n;
    while (n > 0) {
      const first = this.inbox[0];
      if (!first) break;
      if (first.length <= n) {
        n -= first.length;
        this.inbox.shift();
      } else {
        this.inbox[0] = first.subarray(n);
        n = 0;
      }
    }
  }

  private takeHello(out: SessionOutput[]): boolean {
    const d = decodeHello(this.peek(this.inboxBytes), this.config.authKey, this.config.context);
    if (!d.ok) {
      if (d.reason === 'need-more') {
        if (this.inboxBytes > 512) out.push(...this.fail('handshake', 'the peer sent something that is not a Burrow handshake'));
        return false;
      }
      const why = d.reason === 'bad-mac'
        ? 'the peer’s handshake failed authentication: it does not hold the network secret, or something on the path altered it'
        : 'the peer sent something that is not a Burrow handshake';
      out.push(...this.fail('handshake', why));
      return false;
    }
    const theirs = d.hello;
    if (theirs.name !== this.config.peer || theirs.peer !== this.config.name) {
      out.push(...this.fail('handshake', `the handshake is from "${theirs.name}" for "${theirs.peer}", not from "${this.config.peer}" for "${this.config.name}"`));
      return false;
    }
    const theirHello = Buffer.from(this.peek(d.used));
    this.consume(d.used);
    const ours = this.ourHello ?? Buffer.alloc(0);
    const weAreLow = this.config.name < this.config.peer;
    this.transcript = createHash('sha256')
      .update('burrow/v1 transcript')
      .update(this.config.context)
      .update(weAreLow ? ours : theirHello)
      .update(weAreLow ? theirHello : ours)
      .digest();
    let shared: Uint8Array;
    try {
      shared = this.config.agree(theirs.publicKey);
    } catch {
      out.push(...this.fail('handshake', 'the peer’s handshake carries an invalid X25519 public key'));
      return false;
    }
    const material = Buffer.from(hkdfSync('sha256', shared, this.transcript, 'burrow/v1 stream keys', 72));
    const lowToHigh = { key: material.subarray(0, 32), prefix: material.subarray(64, 68) };
    const highToLow = { key: material.subarray(32, 64), prefix: material.subarray(68, 72) };
    const rekey = (k: Uint8Array): Uint8Array => Buffer.from(hkdfSync('sha256', k, Buffer.alloc(0), 'burrow/v1 rekey', 32));
    const mine = weAreLow ? lowToHigh : highToLow;
    const theirsDir = weAreLow ? highToLow : lowToHigh;
    this.send = new RecordCipher(mine.key, mine.prefix, rekey);
    this.recv = new RecordCipher(theirsDir.key, theirsDir.prefix, rekey);
    this.state = 'awaiting-finished';
    out.push({ type: 'send', data: this.send.seal(RecordType.FINISHED, this.transcript) });
    return true;
  }

  private takeRecord(out: SessionOutput[]): boolean {
    if (this.inboxBytes < 4 || !this.recv) return false;
    const header = this.peek(4);
    const length = header.readUInt32BE(0);
    if (length > MAX_RECORD_PAYLOAD + 1 + 16 || length < 17) {
      out.push(...this.fail('tampered', `a record header claims ${length} bytes: the stream was altered on the way`));
      return false;
    }
    if (this.inboxBytes < 4 + length) return false;
    const whole = this.peek(4 + length);
    this.consume(4 + length);
    const record = this.recv.open(whole.subarray(0, 4), whole.subarray(4));
    if (!record) {
      out.push(...this.fail('tampered', 'a record failed authentication: data was altered, reordered or replayed on the way'));
      return false;
    }
    if (this.state === 'awaiting-finished') {
      if (record.type !== RecordType.FINISHED || !this.transcript || !record.payload.equals(this.transcript)) {
        out.push(...this.fail('handshake', 'the peer’s key confirmation does not match ours'));
        return false;
      }
      this.state = 'open';
      out.push({ type: 'established' });
      // Stop here: the application attaches its handlers once it learns the stream is open, so
      // whatever else arrived is processed by drain() on a later turn of the event loop.
      return false;
    }
    switch (record.type) {
      case RecordType.DATA:
        if (this.peerEnded) {
          out.push(...this.fail('protocol', 'the peer sent data after its end of stream'));
          return false;
        }
        this.receivedBytes += record.payload.length;
        out.push({ type: 'data', data: record.payload });
        return true;
      case RecordType.EOF: {
        const claimed = readU64(record.payload);
        if (this.peerEnded || claimed !== this.receivedBytes) {
          out.push(...this.fail('truncated', `the peer says it sent ${claimed ?? '?'} bytes but ${this.receivedBytes} arrived`));
          return false;
        }
        this.peerEnded = true;
        out.push({ type: 'peer-eof', bytes: this.receivedBytes });
        return true;
      }
      case RecordType.EOF_ACK: {
        const confirmed = readU64(record.payload);
        if (!this.weEnded || confirmed !== this.sentBytes) {
          out.push(...this.fail('delivery', `the peer confirmed ${confirmed ?? '?'} bytes but we sent ${this.sentBytes}`));
          return false;
        }
        this.delivered = true;
        out.push({ type: 'delivered', bytes: this.sentBytes });
        return true;
      }
      default:
        out.push(...this.fail('protocol', `unexpected record type ${record.type}`));
        return false;
    }
  }
}
