/**
 * The encrypted stream as a sans-IO state machine: bytes from the transport in, bytes to send and
 * application events out. Any reliable byte transport carries it (TCP simultaneous open today, a relay
 * later); src/node/secure-stream.ts wraps it as a Node Duplex.
 *
 * Theory of operation (stream protocol version 2; docs/protocol.md §8)
 * --------------------------------------------------------------------
 * 1. Both sides send HELLO at once: names, the range of stream versions and the ciphers they speak
 *    (preferred first), a fresh 32-byte nonce, a fresh X25519 public key, and an HMAC under a key
 *    derived from the network secret over the rendezvous context and the HELLO. Only holders of the
 *    secret can produce one; a HELLO naming anyone but the expected partner (including our own,
 *    reflected) is refused. A valid HELLO of version 1 means the partner runs an older Burrow: that is
 *    reported as such ('version'), not as an attack.
 * 2. Both pick the same version and cipher from the two HELLOs (negotiate() in the codec). shared =
 *    X25519(our ephemeral private key, their public key). transcript = SHA-256(context ‖ HELLO of the
 *    name that sorts first ‖ the other HELLO). Two direction keys and nonce prefixes come from
 *    HKDF(shared, transcript, label ‖ version ‖ cipher). The ephemeral keys are dropped after this, so
 *    recorded traffic stays secret even if the network secret leaks later (forward secrecy). A
 *    man in the middle who edits the version or cipher lists changes the transcript and fails step 3.
 * 3. Each side's first record is FINISHED carrying the transcript hash: key confirmation.
 * 4. DATA records follow, each up to 256 KiB. Nonces are implicit sequence numbers, so a dropped,
 *    repeated or reordered record fails authentication; nothing is released to the application
 *    before its record verifies (./secure-records.ts holds a record's pieces until its tag).
 * 5. EOF carries the number of data bytes sent; the receiver answers EOF_ACK with the number it
 *    delivered once the application says everything was written out. A transport that ends before EOF
 *    is a truncation.
 */
import { createHash, hkdfSync } from 'node:crypto';
import {
  Cipher,
  decodeHello,
  encodeHello,
  MAX_RECORD_PAYLOAD,
  negotiate,
  NONCE_BYTES,
  readU64,
  RecordType,
  STREAM_VERSION_MAX,
  STREAM_VERSION_MIN,
  u64,
  type CipherId,
  type Hello,
} from '../codec/secure.js';
import { RecordOpener, RecordSealer, type OpenEvent } from './secure-records.js';

export type SecureErrorKind = 'handshake' | 'version' | 'tampered' | 'truncated' | 'protocol' | 'delivery';

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
  /** Ciphers we accept, preferred first. Default: AES-256-GCM, then ChaCha20-Poly1305. */
  readonly ciphers?: readonly CipherId[];
}

type State = 'idle' | 'hello-sent' | 'awaiting-finished' | 'open' | 'failed';

/** A HELLO is at most 8 + 8 + 2 × 65 + 96 bytes; more without one is not a Burrow peer. */
const MAX_HELLO_BYTES = 512;
const DEFAULT_CIPHERS: readonly CipherId[] = [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305];

export class SecureSession {
  private state: State = 'idle';
  /** Received bytes not yet processed: the HELLO, or what arrived behind FINISHED before drain(). */
  private inbox: Buffer[] = [];
  private inboxBytes = 0;
  private ourHello: Buffer | undefined;
  private sealer: RecordSealer | undefined;
  private opener: RecordOpener | undefined;
  private transcript: Buffer | undefined;
  private agreed: { version: number; cipher: CipherId } | undefined;
  private sentBytes = 0;
  private receivedBytes = 0;
  private weEnded = false;
  private peerEnded = false;
  private acked = false;
  private delivered = false;

  constructor(private readonly config: SecureSessionConfig) {
    if (config.nonce.length !== NONCE_BYTES) throw new RangeError('nonce must be 32 bytes');
    if (config.ciphers !== undefined && config.ciphers.length === 0) throw new RangeError('at least one cipher');
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
  /** The negotiated stream version and cipher, once the peer's HELLO arrived. */
  get negotiated(): { readonly version: number; readonly cipher: CipherId } | undefined {
    return this.agreed;
  }

  start(): SessionOutput[] {
    if (this.state !== 'idle') return [];
    const hello: Hello = {
      name: this.config.name,
      peer: this.config.peer,
      versions: { min: STREAM_VERSION_MIN, max: STREAM_VERSION_MAX },
      ciphers: this.config.ciphers ?? DEFAULT_CIPHERS,
      nonce: this.config.nonce,
      publicKey: this.config.publicKey,
    };
    this.ourHello = encodeHello(hello, this.config.authKey, this.config.context);
    this.state = 'hello-sent';
    return [{ type: 'send', data: this.ourHello }];
  }

  /**
   * Bytes from the transport. Data outputs are views of fresh buffers, valid for as long as anyone
   * holds them. `transient`: the caller reuses `chunk` once this returns (a socket reading into one
   * buffer), so whatever is not processed now is copied.
   */
  receive(chunk: Uint8Array, transient = false): SessionOutput[] {
    if (this.state === 'failed' || chunk.length === 0) return [];
    this.inbox.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.inboxBytes += chunk.length;
    const out = this.process();
    // The record layer copies headers and tags and decrypts bodies into fresh buffers; only the
    // inbox (a HELLO in pieces, bytes behind FINISHED until drain()) can still point into `chunk`.
    if (transient && this.inbox.length > 0) this.inbox = this.inbox.map((b) => (b.buffer === chunk.buffer ? Buffer.from(b) : b));
    return out;
  }

  /** Processes bytes already received (after 'established'). */
  drain(): SessionOutput[] {
    return this.state === 'failed' ? [] : this.process();
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
    return this.writev([data]);
  }

  /** Several application chunks at once: sealed into as few records as the size limit allows, without joining them. */
  writev(chunks: readonly Uint8Array[]): SessionOutput[] {
    if (this.state !== 'open' || !this.sealer) throw new Error('write before the stream is open');
    if (this.weEnded) throw new Error('write after end');
    const pieces: Buffer[] = [];
    let parts: Uint8Array[] = [];
    let room = MAX_RECORD_PAYLOAD;
    for (const chunk of chunks) {
      this.sentBytes += chunk.length;
      for (let at = 0; at < chunk.length;) {
        const n = Math.min(room, chunk.length - at);
        parts.push(n === chunk.length ? chunk : chunk.subarray(at, at + n));
        at += n;
        room -= n;
        if (room === 0) {
          this.sealer.seal(RecordType.DATA, parts, pieces);
          parts = [];
          room = MAX_RECORD_PAYLOAD;
        }
      }
    }
    if (parts.length > 0) this.sealer.seal(RecordType.DATA, parts, pieces);
    return pieces.map((data) => ({ type: 'send', data }));
  }

  /**
   * An empty DATA record: it moves no application byte and every version-2 receiver takes it as such, but it keeps a
   * path that ends idle connections (the stream relay's idle timeout) from seeing the stream idle. Nothing after our
   * EOF (the peer would take it as data after the end).
   */
  keepalive(): SessionOutput[] {
    if (this.state !== 'open' || !this.sealer || this.weEnded) return [];
    return [{ type: 'send', data: this.sealer.sealOne(RecordType.DATA, new Uint8Array(0)) }];
  }

  /** No more data from us. */
  end(): SessionOutput[] {
    if (this.state !== 'open' || !this.sealer || this.weEnded) return [];
    this.weEnded = true;
    return [{ type: 'send', data: this.sealer.sealOne(RecordType.EOF, u64(this.sentBytes)) }];
  }

  /** The application wrote out everything the peer sent: confirm delivery. */
  acknowledgeEnd(): SessionOutput[] {
    if (this.state !== 'open' || !this.sealer || !this.peerEnded || this.acked) return [];
    this.acked = true;
    return [{ type: 'send', data: this.sealer.sealOne(RecordType.EOF_ACK, u64(this.receivedBytes)) }];
  }

  // -------------------------------------------------------------------------------------------

  private fail(kind: SecureErrorKind, detail: string): SessionOutput[] {
    this.state = 'failed';
    this.inbox = [];
    this.inboxBytes = 0;
    return [{ type: 'error', error: { kind, detail } }];
  }

  private process(): SessionOutput[] {
    const out: SessionOutput[] = [];
    if (this.state === 'hello-sent' && !this.takeHello(out)) return out;
    // Records, one at a time, straight from the received chunks. Stops after FINISHED (the
    // application attaches its handlers once it learns the stream is open; drain() goes on) and
    // after a failure.
    while (this.inbox.length > 0 && this.opener !== undefined && (this.state === 'awaiting-finished' || this.state === 'open')) {
      const chunk = this.inbox[0] ?? Buffer.alloc(0);
      const { used, event } = this.opener.take(chunk);
      this.inboxBytes -= used;
      if (used === chunk.length) this.inbox.shift();
      else this.inbox[0] = chunk.subarray(used);
      if (event !== undefined && !this.handleRecord(event, out)) break;
    }
    return out;
  }

  /** Decodes the peer's HELLO from the inbox; true once it is done and the keys are set. */
  private takeHello(out: SessionOutput[]): boolean {
    const all = this.inbox.length === 1 ? (this.inbox[0] ?? Buffer.alloc(0)) : Buffer.concat(this.inbox);
    const d = decodeHello(all, this.config.authKey, this.config.context);
    if (!d.ok) {
      switch (d.reason) {
        case 'need-more':
          if (this.inboxBytes > MAX_HELLO_BYTES) out.push(...this.fail('handshake', 'the peer sent something that is not a Burrow handshake'));
          return false;
        case 'version-1':
          out.push(...this.fail('version', `"${this.config.peer}" runs an older Burrow (stream protocol 1, release 0.1); this one speaks stream protocol ${STREAM_VERSION_MIN}–${STREAM_VERSION_MAX}`));
          return false;
        case 'bad-mac':
          out.push(...this.fail('handshake', 'the peer’s handshake failed authentication: it does not hold the network secret, or something on the path altered it'));
          return false;
        case 'bad-magic':
        case 'bad-field':
        case 'bad-name':
          out.push(...this.fail('handshake', 'the peer sent something that is not a Burrow handshake'));
          return false;
      }
    }
    const theirs = d.hello;
    if (theirs.name !== this.config.peer || theirs.peer !== this.config.name) {
      out.push(...this.fail('handshake', `the handshake is from "${theirs.name}" for "${theirs.peer}", not from "${this.config.peer}" for "${this.config.name}"`));
      return false;
    }
    const agreed = negotiate({ versions: { min: STREAM_VERSION_MIN, max: STREAM_VERSION_MAX }, ciphers: this.config.ciphers ?? DEFAULT_CIPHERS }, theirs);
    if (!agreed.ok) {
      out.push(...(agreed.reason === 'no-common-version'
        ? this.fail('version', `"${this.config.peer}" speaks stream protocol ${theirs.versions.min}–${theirs.versions.max}, this Burrow ${STREAM_VERSION_MIN}–${STREAM_VERSION_MAX}`)
        : this.fail('handshake', `"${this.config.peer}" offers no cipher this Burrow accepts`)));
      return false;
    }
    const theirHello = Buffer.from(all.subarray(0, d.used));
    const rest = all.subarray(d.used);
    this.inbox = rest.length > 0 ? [rest] : [];
    this.inboxBytes = rest.length;
    const ours = this.ourHello ?? Buffer.alloc(0);
    const weAreLow = this.config.name < this.config.peer;
    this.transcript = createHash('sha256')
      .update('burrow/v2 transcript')
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
    const info = Buffer.concat([Buffer.from('burrow/v2 stream keys'), Buffer.from([agreed.version, agreed.cipher])]);
    const material = Buffer.from(hkdfSync('sha256', shared, this.transcript, info, 72));
    const lowToHigh = { key: material.subarray(0, 32), prefix: material.subarray(64, 68) };
    const highToLow = { key: material.subarray(32, 64), prefix: material.subarray(68, 72) };
    const rekey = (k: Uint8Array): Uint8Array => Buffer.from(hkdfSync('sha256', k, Buffer.alloc(0), 'burrow/v2 rekey', 32));
    const mine = weAreLow ? lowToHigh : highToLow;
    const theirsDir = weAreLow ? highToLow : lowToHigh;
    this.agreed = { version: agreed.version, cipher: agreed.cipher };
    this.sealer = new RecordSealer(agreed.cipher, mine.key, mine.prefix, rekey);
    this.opener = new RecordOpener(agreed.cipher, theirsDir.key, theirsDir.prefix, rekey);
    this.state = 'awaiting-finished';
    out.push({ type: 'send', data: this.sealer.sealOne(RecordType.FINISHED, this.transcript) });
    return true;
  }

  /** Acts on one opened record; false stops processing (a failure, or the pause after FINISHED). */
  private handleRecord(event: OpenEvent, out: SessionOutput[]): boolean {
    if (event.kind === 'bad-length') {
      out.push(...this.fail('tampered', `a record header claims ${event.length} bytes: the stream was altered on the way`));
      return false;
    }
    if (event.kind === 'bad-tag') {
      out.push(...this.fail('tampered', 'a record failed authentication: data was altered, reordered or replayed on the way'));
      return false;
    }
    if (this.state === 'awaiting-finished') {
      const payload = Buffer.concat(event.payload);
      if (event.type !== RecordType.FINISHED || !this.transcript || !payload.equals(this.transcript)) {
        out.push(...this.fail('handshake', 'the peer’s key confirmation does not match ours'));
        return false;
      }
      this.state = 'open';
      out.push({ type: 'established' });
      return false;
    }
    switch (event.type) {
      case RecordType.DATA:
        if (this.peerEnded) {
          out.push(...this.fail('protocol', 'the peer sent data after its end of stream'));
          return false;
        }
        this.receivedBytes += event.payloadBytes;
        for (const data of event.payload) out.push({ type: 'data', data });
        return true;
      case RecordType.EOF: {
        const claimed = readU64(Buffer.concat(event.payload));
        if (this.peerEnded || claimed !== this.receivedBytes) {
          out.push(...this.fail('truncated', `the peer says it sent ${claimed ?? '?'} bytes but ${this.receivedBytes} arrived`));
          return false;
        }
        this.peerEnded = true;
        out.push({ type: 'peer-eof', bytes: this.receivedBytes });
        return true;
      }
      case RecordType.EOF_ACK: {
        const confirmed = readU64(Buffer.concat(event.payload));
        if (!this.weEnded || confirmed !== this.sentBytes) {
          out.push(...this.fail('delivery', `the peer confirmed ${confirmed ?? '?'} bytes but we sent ${this.sentBytes}`));
          return false;
        }
        this.delivered = true;
        out.push({ type: 'delivered', bytes: this.sentBytes });
        return true;
      }
      default:
        out.push(...this.fail('protocol', `unexpected record type ${event.type}`));
        return false;
    }
  }
}
