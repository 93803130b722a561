/**
 * A Node Duplex over SecureSession and any reliable byte transport (a TCP socket today, a relay later):
 * the one stream API the rest of Burrow (pipe, send/receive) is written against.
 *
 * - Writes are encrypted into records; backpressure follows the transport's. Small writes (a pipe or
 *   a socket hands over 64 KiB at a time) are copied into a staging buffer and sealed as one record
 *   once it holds 256 KiB, or at the end of the event-loop turn they arrived in (setImmediate), so a
 *   record is 256 KiB whenever data comes faster than the network takes it, and a lone keystroke
 *   still leaves at once. Writes of 256 KiB or more are sealed in place, without a copy. A record's
 *   pieces reach the transport as one gathered write: few cipher set-ups and few syscalls per MiB.
 * - `end()` sends EOF and its 'finish' fires only once the peer confirmed delivery of every byte.
 * - The readable side ends at the peer's EOF; call `acknowledgeEnd()` once everything read has been
 *   written out, which is what the peer's 'finish' waits for.
 * - Any failure destroys the stream with a BurrowError (STREAM_BROKEN or STREAM_TAMPERED); data that
 *   did not authenticate is never pushed.
 */
import { createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import net from 'node:net';
import { Duplex } from 'node:stream';
import { Cipher, cipherName, MAX_RECORD_PAYLOAD, type CipherId } from '../codec/secure.js';
import { createSealCipher } from '../core/secure-records.js';
import { SecureSession, type SecureError, type SessionOutput } from '../core/secure-session.js';
import { BurrowError } from '../errors.js';

/** The transport: anything with the shape of a net.Socket. */
export type ByteTransport = Duplex;

/** Bytes one socket reads into its reused buffer at most per read (see connectReusingReads). */
const READ_BUFFER_BYTES = 512 * 1024;

/**
 * Hands a socket's reads, made into one reused buffer, to whoever attaches (the SecureStream that runs
 * over the socket). Bytes that arrive before anyone attached are copied and kept.
 */
class ReusedReads {
  private handler: ((view: Buffer) => void) | undefined;
  private early: Buffer[] = [];
  readonly onread = {
    buffer: Buffer.allocUnsafeSlow(READ_BUFFER_BYTES),
    callback: (bytes: number, buffer: Uint8Array): boolean => {
      const view = Buffer.from(buffer.buffer, buffer.byteOffset, bytes);
      if (this.handler === undefined) this.early.push(Buffer.from(view));
      else this.handler(view);
      return true;
    },
  };

  /** `handler` gets views of the reused buffer: it must be done with each before it returns. */
  attach(handler: (view: Buffer) => void): void {
    this.handler = handler;
    for (const chunk of this.early.splice(0)) handler(chunk);
  }
}

const reusedReads = new WeakMap<Duplex, ReusedReads>();

/**
 * net.connect(), but the socket reads into one reused 512 KiB buffer (Node's `onread`) instead of
 * allocating a fresh 64 KiB buffer per read, and a SecureStream opened over it takes the bytes
 * straight from there (it decrypts them into buffers of its own before the next read). Measured on
 * loopback, receiving 1 GiB this way cost a plain reader 0.40 s of CPU against 0.90 s with 'data'
 * events. Its 'data' events never fire: use it only as a SecureStream's transport.
 */
export function connectReusingReads(options: net.TcpNetConnectOpts): net.Socket {
  const reads = new ReusedReads();
  const socket = net.connect({ ...options, onread: reads.onread });
  reusedReads.set(socket, reads);
  return socket;
}

export interface SecureStreamOptions {
  readonly name: string;
  readonly peer: string;
  readonly authKey: Uint8Array;
  readonly context: Uint8Array;
  /** Handshake deadline. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Ciphers to offer, preferred first. Default: cipherPreference(), measured on this CPU. */
  readonly ciphers?: readonly CipherId[];
}

/** Bytes each side buffers before pushing back (both directions). */
const HIGH_WATER_MARK = 1024 * 1024;
/** Writes smaller than this are gathered in the staging buffer (one record's payload). */
const STAGE_BYTES = MAX_RECORD_PAYLOAD;

let measuredPreference: readonly CipherId[] | undefined;

/**
 * The ciphers this machine should offer, fastest first, measured once per process (about 3 ms):
 * AES-256-GCM unless ChaCha20-Poly1305 seals at least 1.5× as fast here, which is the case on CPUs
 * without AES instructions (software AES is several times slower). The margin keeps the choice stable
 * where both are fast, and the two are measured alternately, best of six rounds each, so that being
 * preempted during one round (a busy machine) cannot flip it.
 */
export function cipherPreference(): readonly CipherId[] {
  if (measuredPreference !== undefined) return measuredPreference;
  const key = Buffer.alloc(32, 7);
  const nonce = Buffer.alloc(12);
  const data = Buffer.alloc(128 * 1024, 1);
  const best = new Map<CipherId, number>([[Cipher.AES_256_GCM, Infinity], [Cipher.CHACHA20_POLY1305, Infinity]]);
  for (let round = 0; round < 6; round++) {
    for (const id of [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305] as const) {
      nonce[11] = round;
      const started = performance.now();
      const c = createSealCipher(cipherName(id), key, nonce);
      c.update(data);
      c.final();
      best.set(id, Math.min(best.get(id) ?? Infinity, performance.now() - started));
    }
  }
  const aes = best.get(Cipher.AES_256_GCM) ?? Infinity;
  const chacha = best.get(Cipher.CHACHA20_POLY1305) ?? Infinity;
  measuredPreference = aes >= 1.5 * chacha ? [Cipher.CHACHA20_POLY1305, Cipher.AES_256_GCM] : [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305];
  return measuredPreference;
}

/**
 * The partner holds the network secret (its HELLO authenticated) but speaks no stream protocol version
 * we speak: retrying cannot help, so connecting stops at once with this error.
 */
export class StreamVersionError extends BurrowError {
  constructor(peer: string, detail: string) {
    super('STREAM_BROKEN', `cannot open an encrypted stream with "${peer}": ${detail}. Run the same Burrow release on both sides (check with \`burrow --version\`).`);
  }
}

function ephemeral(): { privateKey: KeyObject; publicKey: Uint8Array } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  // The raw 32-byte key is the tail of its SubjectPublicKeyInfo encoding.
  const der = publicKey.export({ format: 'der', type: 'spki' });
  return { privateKey, publicKey: Uint8Array.from(der.subarray(der.length - 32)) };
}

const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function agreeWith(privateKey: KeyObject): (peer: Uint8Array) => Uint8Array {
  return (peer) => {
    const publicKey = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, peer]), format: 'der', type: 'spki' });
    return diffieHellman({ privateKey, publicKey });
  };
}

export function toError(peer: string, e: SecureError): BurrowError {
  switch (e.kind) {
    case 'version':
      return new StreamVersionError(peer, e.detail);
    case 'tampered':
    case 'handshake':
      return BurrowError.streamTampered(peer, e.detail);
    case 'truncated':
    case 'protocol':
    case 'delivery':
      return BurrowError.streamBroken(peer, e.detail);
  }
}

export class SecureStream extends Duplex {
  private finalCallback: ((err?: Error | null) => void) | undefined;
  private delivered = false;
  /** Small writes gathered into one record: bytes [0, staged) of `stage` are not sealed yet. */
  private stage: Buffer | undefined;
  private staged = 0;
  private flushTimer: NodeJS.Immediate | undefined;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  /** Whether a record left since the last keepalive tick. */
  private sentSinceTick = false;

  private constructor(
    private readonly session: SecureSession,
    private readonly transport: ByteTransport,
    private readonly peer: string,
  ) {
    // Not autoDestroy: after 'end' and 'finish' the stream must live on until the application has
    // acknowledged the peer's data (acknowledgeEnd); maybeClose() closes it then.
    super({ allowHalfOpen: true, autoDestroy: false, readableHighWaterMark: HIGH_WATER_MARK, writableHighWaterMark: HIGH_WATER_MARK });
  }

  /** Runs the handshake over `transport` and resolves with the open stream. */
  static open(transport: ByteTransport, options: SecureStreamOptions): Promise<SecureStream> {
    const keys = ephemeral();
    const session = new SecureSession({
      name: options.name,
      peer: options.peer,
      authKey: options.authKey,
      context: options.context,
      nonce: randomBytes(32),
      publicKey: keys.publicKey,
      agree: agreeWith(keys.privateKey),
      ciphers: options.ciphers ?? cipherPreference(),
    });
    const stream = new SecureStream(session, transport, options.peer);
    return stream.handshake(options);
  }

  /** Bytes of application data sent and received so far. */
  get bytesSent(): number {
    return this.session.bytesSent;
  }
  get bytesReceived(): number {
    return this.session.bytesReceived;
  }
  /** The negotiated AEAD, e.g. "aes-256-gcm" (for messages and benchmarks). */
  get cipher(): string {
    const agreed = this.session.negotiated;
    return agreed === undefined ? 'none' : cipherName(agreed.cipher);
  }

  /** Tells the peer that everything it sent has been written out (its 'finish' waits for this). */
  acknowledgeEnd(): void {
    this.run(this.session.acknowledgeEnd());
    this.maybeClose();
  }

  private handshake(options: SecureStreamOptions): Promise<SecureStream> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const cleanup = (): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        this.off('established', onEstablished);
        this.off('error', onError);
      };
      const onEstablished = (): void => {
        if (settled) return;
        settled = true;
        cleanup();
        resolve(this);
      };
      const onError = (err: Error): void => {
        if (settled) return;
        settled = true;
        cleanup();
        reject(err);
      };
      const onAbort = (): void => {
        this.destroy(BurrowError.aborted());
      };
      const timer = setTimeout(() => {
        this.destroy(BurrowError.streamBroken(this.peer, 'the handshake did not complete in time'));
      }, options.timeoutMs ?? 5000);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.once('established', onEstablished);
      this.once('error', onError);
      const reads = reusedReads.get(this.transport);
      if (reads !== undefined) {
        // Views of the socket's reused buffer: the session copies whatever it keeps of them.
        reads.attach((view) => {
          this.run(this.session.receive(view, true));
        });
      } else {
        this.transport.on('data', (chunk: Buffer) => {
          this.run(this.session.receive(chunk));
        });
      }
      this.transport.on('end', () => {
        this.run(this.session.transportEnded());
      });
      this.transport.on('close', () => {
        this.run(this.session.transportEnded());
      });
      this.transport.on('error', () => {
        // 'close' follows and reports what the session lost.
      });
      this.run(this.session.start());
    });
  }

  private run(outputs: SessionOutput[]): boolean {
    let ok = true;
    // One writev for all the pieces of all the records produced at once.
    const cork = outputs.length > 1;
    if (cork) this.transport.cork();
    for (const o of outputs) {
      switch (o.type) {
        case 'send':
          ok = this.transport.write(o.data) && ok;
          this.sentSinceTick = true;
          break;
        case 'established':
          this.emit('established');
          setImmediate(() => {
            this.run(this.session.drain());
          });
          break;
        case 'data':
          if (!this.push(o.data)) this.transport.pause();
          break;
        case 'peer-eof':
          this.push(null);
          // _read() is never called after the end, so a transport paused by backpressure would stay
          // paused: keep reading, the EOF_ACK and the FIN still have to arrive.
          this.transport.resume();
          break;
        case 'delivered':
          this.delivered = true;
          this.finalCallback?.();
          this.finalCallback = undefined;
          this.maybeClose();
          break;
        case 'error':
          this.transport.destroy();
          this.destroy(toError(this.peer, o.error));
          break;
      }
    }
    if (cork) this.transport.uncork();
    return ok;
  }

  /** Once both directions are finished and confirmed: flush, end the transport, and close. */
  private maybeClose(): void {
    if (!this.delivered || !this.session.hasAcknowledged || this.transport.writableEnded) return;
    this.transport.end(() => {
      this.destroy();
    });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.accept([chunk], callback);
  }

  /** Everything that queued up while the transport was busy: sealed together, written in one go. */
  override _writev(chunks: { chunk: Buffer }[], callback: (err?: Error | null) => void): void {
    this.accept(chunks.map((c) => c.chunk), callback);
  }

  /**
   * Small chunks are copied into the staging buffer (sealed when it is full, else at the end of this
   * event-loop turn); large ones are sealed as they are, after whatever was staged before them. The
   * callback comes once nothing of the chunks is referenced any more (staged bytes are copies) and
   * the transport takes more, so a caller may reuse its buffers then.
   */
  private accept(chunks: Buffer[], callback: (err?: Error | null) => void): void {
    let ok = true;
    try {
      for (const chunk of chunks) {
        let at = 0;
        if (chunk.length >= STAGE_BYTES) {
          // Sealed in place: what is staged, then as much of the chunk as fills whole records. The
          // sealer has read both when it returns, so the staging buffer is free again.
          at = Math.floor((this.staged + chunk.length) / STAGE_BYTES) * STAGE_BYTES - this.staged;
          const parts = this.stage !== undefined && this.staged > 0 ? [this.stage.subarray(0, this.staged), chunk.subarray(0, at)] : [chunk.subarray(0, at)];
          this.staged = 0;
          ok = this.run(this.session.writev(parts)) && ok;
        }
        // The rest (less than a record) is staged and joins whatever comes next.
        while (at < chunk.length) {
          this.stage ??= Buffer.allocUnsafeSlow(STAGE_BYTES);
          const n = chunk.copy(this.stage, this.staged, at);
          this.staged += n;
          at += n;
          if (this.staged === STAGE_BYTES) ok = this.flushStage() && ok;
        }
      }
    } catch (err) {
      callback(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (this.staged > 0) this.flushTimer ??= setImmediate(() => {
      this.flushTimer = undefined;
      if (!this.destroyed) this.flushStaged();
    });
    if (ok && !this.transport.writableNeedDrain) {
      callback();
      return;
    }
    this.transport.once('drain', () => {
      callback();
    });
  }

  /** Seals the staging buffer as one record; false when the transport asks us to wait. */
  private flushStage(): boolean {
    const stage = this.stage;
    if (stage === undefined || this.staged === 0) return true;
    const bytes = this.staged;
    this.staged = 0;
    // The sealer encrypts from the staging buffer into fresh buffers: it can be refilled at once.
    return this.run(this.session.writev([stage.subarray(0, bytes)]));
  }

  /** The end-of-turn flush (also before EOF). Errors destroy the stream. */
  private flushStaged(): void {
    try {
      this.flushStage();
    } catch (err) {
      this.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /**
   * Sends an empty record whenever `intervalMs` passed without one leaving, until our end of stream: for a path that
   * ends idle connections (the server's stream relay, 60 s idle by default). Unref'd; stopped on close.
   */
  keepAlive(intervalMs: number): void {
    if (this.keepaliveTimer !== undefined) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = setInterval(() => {
      if (!this.sentSinceTick && this.staged === 0 && !this.destroyed) this.run(this.session.keepalive());
      this.sentSinceTick = false;
    }, intervalMs);
    this.keepaliveTimer.unref();
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.finalCallback = callback;
    if (this.flushTimer !== undefined) clearImmediate(this.flushTimer);
    this.flushTimer = undefined;
    this.flushStaged();
    if (this.destroyed) return;
    this.run(this.session.end());
  }

  override _read(): void {
    this.transport.resume();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (this.keepaliveTimer !== undefined) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = undefined;
    if (this.flushTimer !== undefined) clearImmediate(this.flushTimer);
    this.flushTimer = undefined;
    const pending = this.finalCallback;
    this.finalCallback = undefined;
    pending?.(err ?? BurrowError.streamBroken(this.peer, 'the stream was closed before the peer confirmed delivery'));
    if (err || !this.transport.writableEnded || this.transport.writableFinished) {
      this.transport.destroy();
      callback(err);
      return;
    }
    // A clean end: the transport still holds our last records (the delivery confirmation); destroying
    // it now would discard them. Close once they are flushed.
    const done = (): void => {
      this.transport.destroy();
      callback(null);
    };
    this.transport.once('finish', done);
    this.transport.once('close', done);
  }
}
