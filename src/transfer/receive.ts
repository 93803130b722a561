/**
 * The receiving side's Node driver: ReceiverSession's events onto the file system.
 *
 * - Names are checked against the output directory as soon as the manifest arrives, before any data
 *   moves; without `force` an existing name refuses the whole transfer.
 * - Each file is written to `.burrow-<random>.part` in the output directory (created exclusively,
 *   mode 0600), hashed on the way, and only when its size and SHA-256 match the sender's is it given
 *   its mode, flushed to disk and moved to its name: link() (fails if the name was taken meanwhile)
 *   then unlink(), or rename() with `force`. So no partial or unverified file ever has a final name.
 * - Data arrives through a Writable that completes each chunk only once it is on disk: that is the
 *   backpressure, all the way to the sender's disk, and memory stays constant.
 * - On any failure (the stream breaks or is tampered with, the signal aborts, a disk error) the
 *   temporary files are deleted before the promise rejects. When the failure is ours to explain (a
 *   name exists, a write failed), a FAIL frame tells the sender why first.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { link, lstat, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { BurrowError } from '../errors.js';
import type { FailReason, ManifestEntry } from './codec.js';
import { FileWriter } from './disk.js';
import { FailureLatch, type TransferEvent, type TransferredFile, type TransferStream, type TransferSummary } from './driver.js';
import { TransferError } from './errors.js';
import { ReceiverSession } from './session.js';

export interface ReceiveOptions {
  /** An existing directory; files land directly in it. */
  readonly outDir: string;
  /** The sender's name, for messages. */
  readonly peer: string;
  /** Replace existing files of the same names. */
  readonly force?: boolean;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: TransferEvent) => void;
  /**
   * After refusing, and after success, how long to wait for the sender to take our last frames and
   * close before closing ourselves (closing with unread data would reset the connection and could
   * lose them). Default 2000 ms.
   */
  readonly lingerMs?: number;
}

/** A failure the sender should hear about, with the FAIL frame that explains it. */
class Refusal extends Error {
  constructor(
    readonly error: BurrowError,
    readonly reason: FailReason,
    readonly index: number | undefined,
    readonly detail: string,
  ) {
    super(error.message);
  }
}

const TEMP_PREFIX = '.burrow-';
const TEMP_SUFFIX = '.part';
/** link() is missing on some file systems (FAT, some FUSE and network mounts). */
const NO_LINK = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'ENOSYS', 'EMLINK']);

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** True for the temporary names this module creates (for tests and cleanup tools). */
export function isTemporaryName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX) && name.endsWith(TEMP_SUFFIX);
}

interface OpenFile {
  readonly index: number;
  readonly temp: string;
  readonly handle: FileHandle;
  readonly writer: FileWriter;
  readonly hash: Hash;
  written: number;
}

/** Receives one transfer into `options.outDir`; resolves once every file is verified and in place. */
export function receiveFiles(stream: TransferStream, options: ReceiveOptions): Promise<TransferSummary> {
  return new FileReceiver(stream, options).run();
}

class FileReceiver {
  private readonly session = new ReceiverSession();
  private readonly outDir: string;
  private readonly force: boolean;
  private readonly lingerMs: number;
  private readonly temps = new Set<string>();
  private readonly received: TransferredFile[] = [];
  private current: OpenFile | undefined;
  private bytes = 0;
  private totalBytes = 0;
  /** The disk work in progress; cleanup waits for it so no file is created behind its back. */
  private busy: Promise<void> = Promise.resolve();
  private stopped = false;
  private readonly started = performance.now();

  constructor(
    private readonly stream: TransferStream,
    private readonly options: ReceiveOptions,
  ) {
    this.outDir = resolve(options.outDir);
    this.force = options.force ?? false;
    this.lingerMs = options.lingerMs ?? 2000;
  }

  run(): Promise<TransferSummary> {
    const { stream, options } = this;
    return new Promise<TransferSummary>((resolvePromise, rejectPromise) => {
      let lingerTimer: NodeJS.Timeout | undefined;
      /** Every file is verified and in place: from here on the transfer can only succeed. */
      let placed = false;
      const sink = new Writable({
        highWaterMark: 1024 * 1024,
        write: (chunk: Buffer, _encoding, callback) => {
          this.busy = this.handle(chunk);
          this.busy.then(() => {
            callback();
          }, callback);
        },
        writev: (chunks: { chunk: Buffer }[], callback) => {
          this.busy = (async () => {
            for (const { chunk } of chunks) await this.handle(chunk);
          })();
          this.busy.then(() => {
            callback();
          }, callback);
        },
        final: (callback) => {
          try {
            this.checkEnd();
            callback();
          } catch (err) {
            callback(err instanceof Error ? err : new Error(String(err)));
          }
        },
      });

      /**
       * Waits for the sender to take our last frames and close (or at most lingerMs), then settles.
       * Closing first, with its data still unread, would reset the connection and could lose them.
       */
      const linger = (settle: () => void): void => {
        const done = (): void => {
          clearTimeout(lingerTimer);
          options.signal?.removeEventListener('abort', onAbort);
          stream.off('close', onClose);
          sink.off('finish', onPlaced);
          sink.off('error', onSinkError);
          // 'error' stays handled on the stream: a late one must not become an uncaught exception.
          settle();
        };
        if (stream.destroyed) {
          done();
          return;
        }
        stream.once('close', done);
        lingerTimer = setTimeout(() => {
          stream.destroy();
        }, this.lingerMs);
      };

      const latch = new FailureLatch((err) => {
        this.stopped = true;
        stream.unpipe(sink);
        sink.destroy();
        const refusal = err instanceof Refusal ? err : undefined;
        if (refusal !== undefined && !stream.destroyed && !stream.writableEnded) {
          // Tell the sender why, then drain until it hangs up.
          stream.write(this.session.refuse(refusal.reason, refusal.index, refusal.detail));
          stream.end();
          stream.on('data', () => undefined);
          stream.resume();
        } else {
          stream.destroy();
        }
        void this.cleanup().then(() => {
          linger(() => {
            rejectPromise(refusal?.error ?? err);
          });
        });
      });

      const onSinkError = (err: Error): void => {
        latch.fail(err);
      };
      const onError = (err: Error): void => {
        if (!placed) latch.fail(err);
      };
      const onClose = (): void => {
        if (!placed) latch.fail(TransferError.closed(options.peer));
      };
      const onAbort = (): void => {
        if (placed) stream.destroy();
        else latch.fail(TransferError.interrupted('receiver'));
      };
      // The sender's EOF arrived and every file is in place: confirm, end our side, and close.
      const onPlaced = (): void => {
        placed = true;
        stream.acknowledgeEnd();
        stream.end();
        linger(() => {
          resolvePromise({ files: this.received, bytes: this.bytes, elapsedMs: Math.round(performance.now() - this.started) });
        });
      };

      sink.on('error', onSinkError);
      sink.on('finish', onPlaced);
      stream.on('error', onError);
      stream.on('close', onClose);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.signal?.aborted === true) onAbort();
      else if (stream.destroyed) onClose();
      else stream.pipe(sink);
    });
  }

  /** One chunk from the sender: each event in order, each awaited (this is the backpressure). */
  private async handle(chunk: Buffer): Promise<void> {
    for (const event of this.session.receive(chunk)) {
      if (this.stopped) return;
      switch (event.type) {
        case 'manifest':
          await this.checkNames(event.files);
          this.totalBytes = event.files.reduce((n, f) => n + f.size, 0);
          this.options.onEvent?.({ type: 'start', files: event.files, totalBytes: this.totalBytes });
          this.stream.write(this.session.accept());
          break;
        case 'data':
          await this.write(event.index, event.data);
          break;
        case 'file-end':
          await this.place(event.index, event.sha256);
          break;
        case 'complete':
          break;
        case 'error': {
          const error = TransferError.remote(this.options.peer, event.error);
          throw new Refusal(error, 'protocol', undefined, event.error.detail);
        }
        default:
          event satisfies never;
      }
    }
  }

  /** The sender's EOF: fine only after its last file. */
  private checkEnd(): void {
    for (const event of this.session.end()) {
      if (event.type === 'error') throw new Refusal(TransferError.remote(this.options.peer, event.error), 'protocol', undefined, event.error.detail);
    }
  }

  private entry(index: number): ManifestEntry {
    const e = this.session.manifest[index];
    if (e === undefined) throw new Error(`no file ${index} in the manifest`);
    return e;
  }

  private finalPath(name: string): string {
    const path = join(this.outDir, name);
    // checkFileName already guarantees this; a second lock on the only door out of outDir.
    if (resolve(path, '..') !== this.outDir) throw new Error(`"${name}" resolves outside ${this.outDir}`);
    return path;
  }

  private async checkNames(files: readonly ManifestEntry[]): Promise<void> {
    for (const [index, file] of files.entries()) {
      const path = this.finalPath(file.name);
      let info;
      try {
        info = await lstat(path);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') continue;
        throw new Refusal(TransferError.writeFailed(path, err), 'write-failed', index, TransferError.reasonOf(err));
      }
      if (!this.force) throw new Refusal(TransferError.exists(path), 'exists', index, 'a file of that name exists');
      if (info.isDirectory()) {
        const why = new Error('a directory of that name exists');
        throw new Refusal(TransferError.writeFailed(path, why), 'write-failed', index, why.message);
      }
    }
  }

  private async openTemp(index: number): Promise<OpenFile> {
    const temp = join(this.outDir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}${TEMP_SUFFIX}`);
    try {
      const handle = await open(temp, 'wx', 0o600);
      this.temps.add(temp);
      this.current = { index, temp, handle, writer: new FileWriter(handle), hash: createHash('sha256'), written: 0 };
      return this.current;
    } catch (err) {
      throw new Refusal(TransferError.writeFailed(temp, err), 'write-failed', index, TransferError.reasonOf(err));
    }
  }

  private async write(index: number, data: Buffer): Promise<void> {
    const file = this.current ?? (await this.openTemp(index));
    try {
      await file.writer.write(data);
    } catch (err) {
      throw new Refusal(TransferError.writeFailed(this.finalPath(this.entry(index).name), err), 'write-failed', index, TransferError.reasonOf(err));
    }
    file.hash.update(data);
    file.written += data.length;
    this.bytes += data.length;
    this.options.onEvent?.({ type: 'progress', bytes: this.bytes, totalBytes: this.totalBytes });
  }

  /** Verifies file `index` and moves it to its name. */
  private async place(index: number, sha256: Uint8Array): Promise<void> {
    const entry = this.entry(index);
    const final = this.finalPath(entry.name);
    const file = this.current ?? (await this.openTemp(index));
    const digest = file.hash.digest();
    // The session counts the bytes; this checks the count against the file itself.
    if (file.written !== entry.size || !digest.equals(sha256)) {
      throw new Refusal(TransferError.hashMismatch(final), 'hash-mismatch', index, `SHA-256 here ${digest.toString('hex')}`);
    }
    try {
      // On disk before it has a name: a crash cannot leave a named file with missing blocks.
      await file.writer.finish();
      await file.handle.chmod(entry.mode);
      this.current = undefined;
      await file.handle.close();
    } catch (err) {
      throw new Refusal(TransferError.writeFailed(final, err), 'write-failed', index, TransferError.reasonOf(err));
    }
    // Stopped meanwhile (aborted, or the stream broke): cleanup deletes the temporary file instead.
    if (this.stopped) return;
    await this.moveIntoPlace(file.temp, final, index);
    this.temps.delete(file.temp);
    this.received.push({ name: entry.name, path: final, size: entry.size, mode: entry.mode, sha256: digest.toString('hex') });
    this.stream.write(this.session.fileOk(index));
    this.options.onEvent?.({ type: 'file-done', index, name: entry.name, size: entry.size });
  }

  private async moveIntoPlace(temp: string, final: string, index: number): Promise<void> {
    const failed = (err: unknown): Refusal => new Refusal(TransferError.writeFailed(final, err), 'write-failed', index, TransferError.reasonOf(err));
    const exists = (): Refusal => new Refusal(TransferError.exists(final), 'exists', index, 'a file of that name appeared during the transfer');
    if (this.force) {
      // Atomic, and replaces a symlink itself rather than writing through it.
      await rename(temp, final).catch((err: unknown) => {
        throw failed(err);
      });
      return;
    }
    try {
      // Atomic "create if absent": the name may have been taken since the manifest was checked.
      await link(temp, final);
    } catch (err) {
      if (errnoOf(err) === 'EEXIST') throw exists();
      if (!NO_LINK.has(errnoOf(err) ?? '')) throw failed(err);
      // Without hard links: check, then rename (a small window in which a new file could be replaced).
      const taken = await lstat(final).then(() => true, (e: unknown) => errnoOf(e) !== 'ENOENT');
      if (taken) throw exists();
      await rename(temp, final).catch((e: unknown) => {
        throw failed(e);
      });
      return;
    }
    await unlink(temp).catch(() => undefined);
  }

  /** Waits for the disk work in flight, then closes and deletes every temporary file. Never rejects. */
  private async cleanup(): Promise<void> {
    await this.busy.catch(() => undefined);
    const file = this.current;
    this.current = undefined;
    await file?.writer.abort();
    await file?.handle.close().catch(() => undefined);
    await Promise.all([...this.temps].map((t) => unlink(t).catch(() => undefined)));
    this.temps.clear();
  }
}
