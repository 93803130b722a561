/**
 * The receiving side's Node driver: ReceiverSession's events onto the file system, under `--out`.
 *
 * - When the manifest arrives, every path is checked before any data moves: paths are relative safe
 *   names (the codec refuses "..", absolute paths, backslashes, control characters), an existing
 *   directory on the way must be a real directory (never a symbolic link), and without `force` no file
 *   may exist under its name. Then `confirm` may decline, and only then are directories created.
 * - Each file is written to `.burrow-<id>.part` next to its final name (mode 0600, `<id>` derived from
 *   its path), checked (GMAC, ./check.ts) on the bytes as handed to the kernel, and only when its size
 *   and check match the sender's is it given its mode, flushed to disk and moved to its name: link() (fails if the name was taken meanwhile) then
 *   unlink(), or rename() with `force`; the directory it lands in is checked to still be the one
 *   under `--out`. No partial or unverified file ever has a final name.
 * - Resume: if a transfer is interrupted (the stream breaks or is tampered with, a signal, a disk
 *   error), the file in progress keeps its `.part` with every byte that arrived verified. The next run
 *   with the same file finds it, hashes it (SHA-256), and offers the sender to resume from its end; the sender
 *   checks the prefix against its own file and sends only the rest. Other `.burrow-*.part` files in the
 *   directories of a successful transfer are reported and removed.
 * - Data arrives through a Writable that completes each chunk once it is queued for the disk (at most
 *   8 MiB waiting, ./disk.ts): that is the backpressure, all the way to the sender's disk.
 * - When the failure is ours to explain (a name exists, a write failed, declined), a FAIL frame tells
 *   the sender why first.
 */
import { createHash, type Hash } from 'node:crypto';
import { FileCheck } from './check.js';
import { constants as fsConstants } from 'node:fs';
import { chmod, link, lstat, mkdir, open, readdir, realpath, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { BurrowError } from '../errors.js';
import { parentOf, type FailReason, type ManifestEntry, type ResumeOffer } from './codec.js';
import { BufferPool, FileWriter } from './disk.js';
import { FailureLatch, type TransferEvent, type TransferredFile, type TransferStream, type TransferSummary } from './driver.js';
import { TransferError } from './errors.js';
import { ReceiverSession } from './session.js';

/** What the sender offers, for `confirm`. */
export interface Incoming {
  readonly entries: readonly ManifestEntry[];
  /** Undefined when a stream (stdin) of unknown size is among the entries. */
  readonly totalBytes: number | undefined;
  /**
   * Files of which this side already holds a prefix (a kept partial file) or, `complete`, all of it
   * under its name (from an interrupted run): the sender checks each against its own and sends only
   * the rest.
   */
  readonly resumable: readonly { readonly path: string; readonly bytes: number; readonly complete: boolean }[];
}

export interface ReceiveOptions {
  /** An existing directory; entries land under it. */
  readonly outDir: string;
  /** The sender's name, for messages. */
  readonly peer: string;
  /** Replace existing files of the same names. */
  readonly force?: boolean;
  /** Asked once the manifest passed every check; false declines and nothing is written. Default: accept. */
  readonly confirm?: (incoming: Incoming) => Promise<boolean> | boolean;
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

/** The partial file of the entry at `path` (relative): the same for every run, so a later one finds it. */
export function partNameOf(path: string): string {
  return `${TEMP_PREFIX}${createHash('sha256').update('burrow part v2\0').update(path).digest('hex').slice(0, 16)}${TEMP_SUFFIX}`;
}

interface OpenFile {
  readonly index: number;
  /** "" for a file already in place (nothing is written). */
  readonly part: string;
  readonly handle?: FileHandle;
  readonly writer?: FileWriter;
  /** The check of the bytes this run writes (FileWriter updates it as it hands them to the kernel). */
  readonly check: FileCheck;
  /** A stream cannot be resumed: its partial file is deleted on failure. */
  readonly resumable: boolean;
  /** Bytes that were already there from an interrupted run. */
  readonly offset: number;
  written: number;
}

/** Receives one transfer into `options.outDir`; resolves once every entry is verified and in place. */
export function receiveFiles(stream: TransferStream, options: ReceiveOptions): Promise<TransferSummary> {
  return new FileReceiver(stream, options).run();
}

class FileReceiver {
  private readonly session = new ReceiverSession();
  private readonly force: boolean;
  private readonly lingerMs: number;
  /** outDir with symbolic links resolved: every landing directory must resolve under it. */
  private outDir = '';
  private readonly received: TransferredFile[] = [];
  /** Kept partial files offered for resume: their length. */
  private readonly resumes = new Map<number, number>();
  /** Files already under their name with the right size (offered whole). */
  private readonly present = new Set<number>();
  /** The key of the per-file checks, from the manifest. */
  private checkKey: Uint8Array = new Uint8Array(0);
  private leftovers: string[] = [];
  private current: OpenFile | undefined;
  private bytes = 0;
  private sentBytes = 0;
  private resumedBytes = 0;
  private totalBytes: number | undefined;
  /** The disk work in progress; cleanup waits for it so no file is created behind its back. */
  private busy: Promise<void> = Promise.resolve();
  private stopped = false;
  /** When the transfer was accepted (the time before it was the prompt's). */
  private started = performance.now();

  constructor(
    private readonly stream: TransferStream,
    private readonly options: ReceiveOptions,
  ) {
    this.force = options.force ?? false;
    this.lingerMs = options.lingerMs ?? 2000;
  }

  async run(): Promise<TransferSummary> {
    this.outDir = await realpath(resolve(this.options.outDir)).catch(() => resolve(this.options.outDir));
    const { stream, options } = this;
    return new Promise<TransferSummary>((resolvePromise, rejectPromise) => {
      let lingerTimer: NodeJS.Timeout | undefined;
      /** Every entry is verified and in place: from here on the transfer can only succeed. */
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
        void this.cleanup(refusal?.reason !== 'hash-mismatch').then(() => {
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
      // The sender's EOF arrived and every entry is in place: confirm, end our side, and close.
      const onPlaced = (): void => {
        placed = true;
        stream.acknowledgeEnd();
        stream.end();
        linger(() => {
          resolvePromise({
            files: this.received,
            directories: this.session.manifest.filter((e) => e.kind === 'directory').length,
            bytes: this.received.reduce((n, f) => n + f.size, 0),
            sentBytes: this.sentBytes,
            resumedBytes: this.resumedBytes,
            elapsedMs: Math.round(performance.now() - this.started),
          });
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
          this.checkKey = event.checkKey;
          await this.prepare(event.entries);
          break;
        case 'file-start':
          await this.openPart(event.index, event.offset);
          break;
        case 'data':
          await this.write(event.data);
          break;
        case 'file-end':
          await this.place(event.index, event.size, event.check);
          break;
        case 'complete':
          await this.finish();
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

  /** The sender's EOF: fine only after its last entry. */
  private checkEnd(): void {
    for (const event of this.session.end()) {
      if (event.type === 'error') throw new Refusal(TransferError.remote(this.options.peer, event.error), 'protocol', undefined, event.error.detail);
    }
  }

  private entry(index: number): ManifestEntry {
    const e = this.session.manifest[index];
    if (e === undefined) throw new Error(`no entry ${index} in the manifest`);
    return e;
  }

  /** Where a relative manifest path lands. The codec already guarantees safe components; this is a second lock. */
  private finalPath(path: string): string {
    const full = join(this.outDir, ...path.split('/'));
    if (!full.startsWith(`${this.outDir}/`) && full !== this.outDir) throw new Error(`"${path}" resolves outside ${this.outDir}`);
    return full;
  }

  private partPath(index: number): string {
    const path = this.entry(index).path;
    return join(dirname(this.finalPath(path)), partNameOf(path));
  }

  /** The manifest arrived: check every path, find resumable partial files, ask, create directories, accept. */
  private async prepare(entries: readonly ManifestEntry[]): Promise<void> {
    const toCreate: string[] = [];
    /** Files whose name is taken by a file of the right size. */
    const present: number[] = [];
    /** Directories (relative, "" for outDir) that exist now: where partial files may be. */
    const existing = new Set<string>(['']);
    for (const [index, e] of entries.entries()) {
      const path = this.finalPath(e.path);
      let info;
      try {
        info = await lstat(path);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') {
          if (e.kind === 'directory') toCreate.push(path);
          continue;
        }
        throw new Refusal(TransferError.writeFailed(path, err), 'write-failed', index, TransferError.reasonOf(err));
      }
      if (e.kind === 'directory') {
        if (info.isDirectory()) {
          existing.add(e.path);
          continue;
        }
        const why = info.isSymbolicLink() ? 'it is a symbolic link, which burrow never writes through' : 'a file of that name exists';
        throw new Refusal(TransferError.notADirectory(path, why), 'exists', index, why);
      }
      if (info.isDirectory()) {
        const why = new Error('a directory of that name exists');
        throw new Refusal(TransferError.writeFailed(path, why), 'write-failed', index, why.message);
      }
      // A file of the same size may be this very file, placed by an earlier, interrupted run: the
      // sender checks its SHA-256 below and then sends none of it. Anything else is in the way.
      if (e.kind === 'file' && info.isFile() && info.size === e.size) present.push(index);
      else if (!this.force) throw new Refusal(TransferError.exists(path), 'exists', index, 'a file of that name exists');
    }

    // Files already in place, and partial files from an interrupted run: offered when they fit.
    const offers: ResumeOffer[] = [];
    const pool = new BufferPool(1024 * 1024, 2);
    for (const index of present) {
      const e = this.entry(index);
      const whole = await hashPrefix(this.finalPath(e.path), e.size, pool, true);
      if (whole === undefined) {
        if (!this.force) throw new Refusal(TransferError.exists(this.finalPath(e.path)), 'exists', index, 'a file of that name exists');
        continue;
      }
      this.present.add(index);
      if (whole.offset > 0) offers.push({ index, offset: whole.offset, sha256: whole.hash.digest() });
    }
    const expected = new Set<string>();
    for (const [index, e] of entries.entries()) {
      // A file already in place needs no partial file: one left next to it is a leftover.
      if (e.kind === 'directory' || this.present.has(index) || !existing.has(parentOf(e.path))) continue;
      const part = this.partPath(index);
      expected.add(part);
      if (e.kind !== 'file') continue;
      const prefix = await hashPrefix(part, e.size, pool);
      if (prefix === undefined) continue;
      this.resumes.set(index, prefix.offset);
      offers.push({ index, offset: prefix.offset, sha256: prefix.hash.digest() });
    }
    for (const dir of existing) {
      const where = dir === '' ? this.outDir : this.finalPath(dir);
      const names = await readdir(where).catch(() => [] as string[]);
      for (const name of names) if (isTemporaryName(name) && !expected.has(join(where, name))) this.leftovers.push(join(where, name));
    }

    const hasStream = entries.some((e) => e.kind === 'stream');
    this.totalBytes = hasStream ? undefined : entries.reduce((n, e) => n + e.size, 0);
    const resumable = offers.map((o) => ({ path: this.entry(o.index).path, bytes: o.offset, complete: this.present.has(o.index) }));
    const accepted = (await this.options.confirm?.({ entries, totalBytes: this.totalBytes, resumable })) ?? true;
    if (this.stopped) return;
    if (!accepted) throw new Refusal(TransferError.declined(), 'declined', undefined, 'the receiver declined the transfer');

    for (const path of toCreate) {
      try {
        await mkdir(path, { mode: 0o700 });
      } catch (err) {
        // Created meanwhile: fine if it is a real directory (checked again when files land in it).
        const info = errnoOf(err) === 'EEXIST' ? await lstat(path).catch(() => undefined) : undefined;
        if (info?.isDirectory() !== true) throw new Refusal(TransferError.writeFailed(path, err), 'write-failed', undefined, TransferError.reasonOf(err));
      }
    }
    this.stream.write(this.session.accept(offers));
    this.started = performance.now();
    this.options.onEvent?.({ type: 'start', entries, totalBytes: this.totalBytes, resumedBytes: 0 });
    this.bytes = 0;
    // Only directories: nothing to wait for.
    if (!entries.some((e) => e.kind !== 'directory')) await this.finish();
  }

  /** Entry `index` starts: a fresh partial file, the kept one continued at `offset`, or (all of it here) none. */
  private async openPart(index: number, offset: number): Promise<void> {
    const entry = this.entry(index);
    const part = this.partPath(index);
    const present = this.present.delete(index);
    const check = new FileCheck(this.checkKey, index);
    if (present) {
      if (offset === entry.size) {
        // The sender found our copy identical (SHA-256): nothing to write; FILE_END's check covers nothing.
        this.current = { index, part: '', check, resumable: false, offset, written: offset };
        this.resumedBytes += offset;
        this.bytes += offset;
        this.options.onEvent?.({ type: 'file-start', index, path: entry.path, size: entry.size, offset });
        return;
      }
      // The sender's file differs from the one of that name here.
      if (!this.force) throw new Refusal(TransferError.exists(this.finalPath(entry.path)), 'exists', index, 'a different file of that name exists');
    }
    const resume = this.resumes.get(index);
    let handle: FileHandle;
    try {
      if (offset > 0 && resume === offset) {
        handle = await open(part, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW);
        await handle.truncate(offset);
        this.resumedBytes += offset;
      } else {
        await unlink(part).catch((err: unknown) => {
          if (errnoOf(err) !== 'ENOENT') throw err;
        });
        handle = await open(part, 'wx', 0o600);
      }
    } catch (err) {
      throw new Refusal(TransferError.writeFailed(part, err), 'write-failed', index, TransferError.reasonOf(err));
    }
    this.resumes.delete(index);
    this.current = { index, part, handle, writer: new FileWriter(handle, offset, { check }), check, resumable: entry.kind === 'file', offset, written: offset };
    this.bytes += offset;
    this.options.onEvent?.({ type: 'file-start', index, path: entry.path, size: entry.kind === 'file' ? entry.size : undefined, offset });
  }

  private async write(data: Buffer): Promise<void> {
    const file = this.current;
    if (file?.writer === undefined) throw new Error('data outside an entry');
    try {
      await file.writer.write(data);
    } catch (err) {
      throw new Refusal(TransferError.writeFailed(this.finalPath(this.entry(file.index).path), err), 'write-failed', file.index, TransferError.reasonOf(err));
    }
    file.written += data.length;
    this.bytes += data.length;
    this.sentBytes += data.length;
    this.options.onEvent?.({ type: 'progress', bytes: this.bytes, totalBytes: this.totalBytes });
  }

  /** Verifies entry `index` and moves it to its name. */
  private async place(index: number, size: number, check: Uint8Array): Promise<void> {
    const entry = this.entry(index);
    const final = this.finalPath(entry.path);
    const file = this.current;
    if (file?.index !== index) throw new Error(`entry ${index} ended but was not started`);
    try {
      // Every byte handed to the kernel (and so covered by the check) before comparing.
      await file.writer?.written();
    } catch (err) {
      throw new Refusal(TransferError.writeFailed(final, err), 'write-failed', index, TransferError.reasonOf(err));
    }
    const digest = file.check.digest();
    // The session counts the bytes; this checks the count against the file itself.
    if (file.written !== size || file.check.bytes !== size - file.offset || !digest.equals(check)) {
      this.current = undefined;
      await file.writer?.abort();
      await file.handle?.close().catch(() => undefined);
      if (file.part !== '') await unlink(file.part).catch(() => undefined);
      if (file.handle === undefined) throw new Refusal(TransferError.exists(final), 'exists', index, 'a different file of that name exists');
      throw new Refusal(TransferError.hashMismatch(final), 'hash-mismatch', index, `check here ${digest.toString('hex')} over ${file.check.bytes} bytes`);
    }
    if (file.handle === undefined || file.writer === undefined) {
      // Already in place and identical: only its mode may need setting.
      this.current = undefined;
      await chmod(final, entry.mode).catch((err: unknown) => {
        throw new Refusal(TransferError.writeFailed(final, err), 'write-failed', index, TransferError.reasonOf(err));
      });
      this.received.push({ index, path: entry.path, source: final, size, mode: entry.mode, check: digest.toString('hex'), resumedFrom: file.offset });
      this.stream.write(this.session.fileOk(index));
      this.options.onEvent?.({ type: 'file-done', index, path: entry.path, size });
      return;
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
    // Stopped meanwhile (aborted, or the stream broke): cleanup keeps the partial file instead.
    if (this.stopped) return;
    await this.moveIntoPlace(file.part, final, index);
    this.received.push({ index, path: entry.path, source: final, size, mode: entry.mode, check: digest.toString('hex'), resumedFrom: file.offset });
    this.stream.write(this.session.fileOk(index));
    this.options.onEvent?.({ type: 'file-done', index, path: entry.path, size });
  }

  private async moveIntoPlace(temp: string, final: string, index: number): Promise<void> {
    const failed = (err: unknown): Refusal => new Refusal(TransferError.writeFailed(final, err), 'write-failed', index, TransferError.reasonOf(err));
    const exists = (): Refusal => new Refusal(TransferError.exists(final), 'exists', index, 'a file of that name appeared during the transfer');
    // The directory must still be the one under --out (not swapped for a symbolic link meanwhile).
    const landing = dirname(final);
    const real = await realpath(landing).catch((err: unknown) => {
      throw failed(err);
    });
    if (real !== landing) throw failed(new Error(`${landing} now resolves to ${real}; refusing to write outside the output directory`));
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

  /** Every entry is in place: directory modes (deepest first), leftovers, then DONE. */
  private async finish(): Promise<void> {
    const dirs = this.session.manifest
      .filter((e) => e.kind === 'directory')
      .sort((a, b) => b.path.split('/').length - a.path.split('/').length);
    for (const d of dirs) {
      const path = this.finalPath(d.path);
      try {
        const info = await lstat(path);
        if (!info.isDirectory()) throw new Error('it is no longer a directory');
        await chmod(path, d.mode);
      } catch (err) {
        throw new Refusal(TransferError.writeFailed(path, err), 'write-failed', undefined, TransferError.reasonOf(err));
      }
    }
    for (const path of this.leftovers) {
      const info = await lstat(path).catch(() => undefined);
      if (info?.isFile() !== true) continue;
      await unlink(path).then(
        () => this.options.onEvent?.({ type: 'leftover-removed', path, bytes: info.size }),
        () => undefined,
      );
    }
    this.leftovers = [];
    if (!this.stopped) this.stream.write(this.session.done());
  }

  /**
   * Waits for the disk work in flight, then closes the file in progress. Its partial file is kept for
   * a later run to resume (every byte in it arrived authenticated) unless `keep` is false, it is a
   * stream, or it is empty. Never rejects.
   */
  private async cleanup(keep: boolean): Promise<void> {
    await this.busy.catch(() => undefined);
    const file = this.current;
    this.current = undefined;
    if (file?.writer === undefined || file.handle === undefined) return;
    const kept = keep && file.resumable && file.written > 0;
    if (kept) await file.writer.settle();
    else await file.writer.abort();
    await file.handle.close().catch(() => undefined);
    if (!kept) await unlink(file.part).catch(() => undefined);
  }
}

/**
 * The SHA-256 of a kept partial file, if it can be resumed: a regular file (never a symbolic link),
 * not empty and not longer than the file it belongs to (`whole`: a file in place, exactly `size`).
 * Returns the hash state to continue with.
 */
async function hashPrefix(part: string, size: number, pool: BufferPool, whole = false): Promise<{ offset: number; hash: Hash } | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(part, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const info = await handle.stat();
    if (!info.isFile() || (whole ? info.size !== size : info.size === 0 || info.size > size)) return undefined;
    const hash = createHash('sha256');
    const buffer = await pool.take();
    try {
      for (let at = 0; at < info.size;) {
        const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, info.size - at), at);
        if (bytesRead === 0) return undefined;
        hash.update(buffer.subarray(0, bytesRead));
        at += bytesRead;
      }
    } finally {
      pool.give(buffer);
    }
    return { offset: info.size, hash };
  } catch {
    return undefined;
  } finally {
    await handle.close().catch(() => undefined);
  }
}
