/**
 * The sending side's Node driver: files, directory trees and a stream (stdin) through SenderSession
 * onto an open encrypted stream.
 *
 * - `prepareSend` turns the command line into manifest entries before anything connects: a directory
 *   becomes itself and everything under it (sorted; symbolic links and special files are skipped and
 *   reported, never followed), `-` becomes the stream.
 * - Each file is read in 1 MiB pieces into a few reused buffers, checked (GMAC, ./check.ts) as read
 *   and written as DATA frames; backpressure reaches the disk, memory stays constant.
 * - Resume: when the receiver offers to resume a file (it holds a prefix and its SHA-256), the sender
 *   hashes the same prefix of its file and, if they match, sends only the rest.
 * - `sendEntries` resolves only once the receiver confirmed every entry (verified and in place) and
 *   the stream confirmed delivery.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { access, constants, lstat, open, readdir, stat, type FileHandle } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { BurrowError } from '../errors.js';
import { FileCheck } from './check.js';
import { CHECK_KEY_BYTES, checkFileName, checkPath, describeNameProblem, MAX_DATA_BYTES, MAX_ENTRIES, type ManifestEntry, type ResumeOffer } from './codec.js';
import { BufferPool } from './disk.js';
import { deferred, FailureLatch, type TransferEvent, type TransferredFile, type TransferStream, type TransferSummary } from './driver.js';
import { TransferError } from './errors.js';
import { SenderSession, type SenderEvent } from './session.js';

/** One manifest entry and where its bytes come from. */
export type SendEntry =
  | { readonly kind: 'file'; readonly source: string; readonly path: string; readonly size: number; readonly mode: number }
  | { readonly kind: 'directory'; readonly source: string; readonly path: string; readonly mode: number }
  | { readonly kind: 'stream'; readonly stream: NodeJS.ReadableStream; readonly path: string; readonly mode: number };

export interface SkippedEntry {
  /** Where it is on disk. */
  readonly source: string;
  readonly why: string;
}

export interface PreparedSend {
  readonly entries: readonly SendEntry[];
  /** Things found inside directories that are not sent (symbolic links, sockets, unsafe names). */
  readonly skipped: readonly SkippedEntry[];
}

export interface PrepareOptions {
  /** What `-` reads. */
  readonly stdin?: NodeJS.ReadableStream;
  /** The name the receiver gives the stream; default "stdin". */
  readonly stdinName?: string;
}

export interface SendOptions {
  readonly entries: readonly SendEntry[];
  /** The receiver's name, for messages. */
  readonly peer: string;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: TransferEvent) => void;
}

const usage = (what: string, next: string): BurrowError => BurrowError.usage(what, next);

/**
 * Checks what `burrow send` was given before anything connects, and lists the entries: each argument
 * must be a readable regular file or directory (or `-`, once), and the top-level names must be distinct
 * names the receiver will accept. Throws USAGE errors.
 */
export async function prepareSend(args: readonly string[], options: PrepareOptions = {}): Promise<PreparedSend> {
  if (args.length === 0) throw usage('no FILE to send', 'give files, directories or - (stdin): burrow send FILE... --server ...');
  const entries: SendEntry[] = [];
  const skipped: SkippedEntry[] = [];
  const byName = new Map<string, string>();
  const claim = (name: string, arg: string): void => {
    const problem = checkFileName(name);
    if (problem !== undefined) throw usage(`cannot send "${arg}": its name ${describeNameProblem(problem)}`, 'rename it (or copy it under a plain name) and send that.');
    const clash = byName.get(name);
    if (clash !== undefined) throw usage(`"${clash}" and "${arg}" would both arrive as "${name}"`, 'send them in separate runs, or rename one.');
    byName.set(name, arg);
  };
  for (const arg of args) {
    if (arg === '-') {
      if (options.stdin === undefined) throw usage('- (stdin) is not available here', 'give files or directories.');
      if (entries.some((e) => e.kind === 'stream')) throw usage('- (stdin) given twice', 'give it once.');
      const name = options.stdinName ?? 'stdin';
      claim(name, '-');
      entries.push({ kind: 'stream', stream: options.stdin, path: name, mode: 0o644 });
      continue;
    }
    let info;
    try {
      info = await stat(arg);
      await access(arg, constants.R_OK | (info.isDirectory() ? constants.X_OK : 0));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file or directory' : code === 'EACCES' ? 'permission denied' : TransferError.reasonOf(err);
      throw usage(`cannot send "${arg}": ${why}`, 'check the path and that you may read it.');
    }
    // The name it has where it is: `burrow send .` sends the current directory under its own name.
    const name = basename(resolve(arg));
    if (info.isFile()) {
      claim(name, arg);
      entries.push({ kind: 'file', source: arg, path: name, size: info.size, mode: info.mode & 0o777 });
    } else if (info.isDirectory()) {
      claim(name, arg);
      entries.push({ kind: 'directory', source: arg, path: name, mode: info.mode & 0o777 });
      await walk(arg, name, entries, skipped);
    } else {
      throw usage(`cannot send "${arg}": it is not a regular file or a directory`, 'burrow send takes files, directories and - (stdin).');
    }
    if (entries.length > MAX_ENTRIES) throw usage(`more than ${MAX_ENTRIES} files and directories`, 'send them in batches, or as one archive (tar cf - DIR | burrow send - ...).');
  }
  return { entries, skipped };
}

/** Everything under `dir` (as `prefix/...`), directories before their contents, names sorted. */
async function walk(dir: string, prefix: string, entries: SendEntry[], skipped: SkippedEntry[]): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (err) {
    throw usage(`cannot read the directory "${dir}": ${TransferError.reasonOf(err)}`, 'check that you may read it.');
  }
  for (const name of names) {
    const source = join(dir, name);
    const path = `${prefix}/${name}`;
    const problem = checkPath(path);
    if (problem !== undefined) {
      skipped.push({ source, why: `its path ${describeNameProblem(problem)}` });
      continue;
    }
    let info;
    try {
      info = await lstat(source);
    } catch (err) {
      skipped.push({ source, why: TransferError.reasonOf(err) });
      continue;
    }
    if (info.isSymbolicLink()) skipped.push({ source, why: 'a symbolic link (not followed)' });
    else if (info.isDirectory()) {
      entries.push({ kind: 'directory', source, path, mode: info.mode & 0o777 });
      if (entries.length > MAX_ENTRIES) return;
      await walk(source, path, entries, skipped);
    } else if (info.isFile()) entries.push({ kind: 'file', source, path, size: info.size, mode: info.mode & 0o777 });
    else skipped.push({ source, why: 'not a regular file (a socket, FIFO or device)' });
    if (entries.length > MAX_ENTRIES) return;
  }
}

/** The manifest's view of the entries. */
export function manifestOf(entries: readonly SendEntry[]): ManifestEntry[] {
  return entries.map((e) => ({ kind: e.kind, path: e.path, size: e.kind === 'file' ? e.size : 0, mode: e.mode }));
}

/** File reads: 1 MiB pieces (one DATA frame each), a few buffers reused for the whole transfer. */
const READ_BYTES = MAX_DATA_BYTES;
const READ_BUFFERS = 4;

interface Piece {
  readonly buffer: Buffer;
  readonly bytes: number;
  readonly wanted: number;
}

/**
 * Reads `handle` from `start` to `end` in pool-sized pieces, one read ahead of the one being used.
 * `use` gets each piece and calls `release` once the buffer may be reused. Resolves with the bytes
 * read (fewer than asked if the file shrank).
 */
async function readPieces(
  handle: FileHandle,
  where: string,
  start: number,
  end: number,
  pool: BufferPool,
  latch: FailureLatch,
  use: (data: Buffer, release: () => void) => Promise<void> | undefined,
): Promise<number> {
  let position = start;
  const readNext = async (): Promise<Piece | undefined> => {
    if (position >= end) return undefined;
    const at = position;
    const wanted = Math.min(pool.bufferBytes, end - at);
    position += wanted;
    const buffer = await pool.take();
    try {
      const { bytesRead } = await handle.read(buffer, 0, wanted, at);
      return { buffer, bytes: bytesRead, wanted };
    } catch (err) {
      pool.give(buffer);
      throw TransferError.readFailed(where, err);
    }
  };
  let count = 0;
  let next = readNext();
  try {
    for (;;) {
      const piece = await latch.race(next);
      if (piece === undefined) break;
      count += piece.bytes;
      if (piece.bytes < piece.wanted) {
        pool.give(piece.buffer);
        break; // the file shrank: the caller reports it
      }
      next = readNext();
      const wait = use(piece.buffer.subarray(0, piece.bytes), () => {
        pool.give(piece.buffer);
      });
      if (wait !== undefined) await latch.race(wait);
    }
  } finally {
    // A read still in flight (the loop ended early) must finish before the handle closes.
    await next.then((p) => {
      if (p !== undefined) pool.give(p.buffer);
    }, () => undefined);
  }
  return count;
}

async function openForReading(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (err) {
    throw TransferError.readFailed(path, err);
  }
}

/** Sends the entries over `stream` and resolves once every one is verified and in place on the other side. */
export async function sendEntries(stream: TransferStream, options: SendOptions): Promise<TransferSummary> {
  const { entries, peer, signal, onEvent } = options;
  const manifest = manifestOf(entries);
  const checkKey = randomBytes(CHECK_KEY_BYTES);
  const session = new SenderSession(manifest, checkKey);
  const hasStream = entries.some((e) => e.kind === 'stream');
  const fileBytes = entries.reduce((n, e) => n + (e.kind === 'file' ? e.size : 0), 0);
  const latch = new FailureLatch(() => {
    // Without an error: this driver reports the failure itself, and 'error' could outlive our listener.
    stream.destroy();
  });
  const accepted = deferred<readonly ResumeOffer[]>();
  const complete = deferred();
  const peerEnded = deferred();
  const delivered = deferred();
  const transferred: TransferredFile[] = [];

  const handle = (events: SenderEvent[]): void => {
    for (const e of events) {
      switch (e.type) {
        case 'accepted':
          accepted.resolve(e.offers);
          break;
        case 'file-ok': {
          const entry = entries[e.index];
          const done = transferred.find((t) => t.index === e.index);
          if (entry !== undefined && done !== undefined) onEvent?.({ type: 'file-done', index: e.index, path: entry.path, size: done.size });
          break;
        }
        case 'complete':
          complete.resolve();
          break;
        case 'refused':
          latch.fail(TransferError.refused(peer, e.reason, e.index === undefined ? undefined : entries[e.index]?.path, e.detail));
          break;
        case 'error':
          latch.fail(TransferError.remote(peer, e.error));
          break;
        default:
          e satisfies never;
      }
    }
  };
  const onData = (chunk: Buffer): void => {
    handle(session.receive(chunk));
  };
  const onEnd = (): void => {
    handle(session.end());
    stream.acknowledgeEnd();
    peerEnded.resolve();
  };
  const onFinish = (): void => {
    delivered.resolve();
  };
  const onError = (err: Error): void => {
    latch.fail(err);
  };
  const onClose = (): void => {
    if (!(complete.done && peerEnded.done && delivered.done)) latch.fail(TransferError.closed(peer));
  };
  const onAbort = (): void => {
    latch.fail(TransferError.interrupted('sender'));
  };

  /** Writes frames; resolves at once unless the stream wants the writer to wait for 'drain'. */
  const send = (...pieces: Buffer[]): Promise<void> | undefined => {
    stream.cork();
    let ok = true;
    for (const p of pieces) ok = stream.write(p);
    stream.uncork();
    return ok ? undefined : once(stream, 'drain').then(() => undefined);
  };

  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('finish', onFinish);
  stream.on('error', onError);
  stream.on('close', onClose);
  signal?.addEventListener('abort', onAbort, { once: true });
  const pool = new BufferPool(READ_BYTES, READ_BUFFERS);
  try {
    if (signal?.aborted === true) onAbort();
    if (stream.destroyed) onClose();
    if (latch.error !== undefined) throw latch.error;
    stream.write(session.manifest());
    const offers = await latch.race(accepted.promise);
    // The transfer's time starts once the receiver accepted (a person may have been asked).
    const started = performance.now();

    // Resume: the receiver holds a prefix of some files; check ours against its SHA-256 first.
    const resumeAt = new Map<number, number>();
    for (const offer of offers) {
      const entry = entries[offer.index];
      if (entry?.kind !== 'file') continue;
      const hash = createHash('sha256');
      const handleForPrefix = await openForReading(entry.source);
      let count: number;
      try {
        count = await readPieces(handleForPrefix, entry.source, 0, offer.offset, pool, latch, (data, release) => {
          hash.update(data);
          release();
          return undefined;
        });
      } finally {
        await handleForPrefix.close().catch(() => undefined);
      }
      if (count === offer.offset && hash.digest().equals(offer.sha256)) resumeAt.set(offer.index, offer.offset);
    }
    const resumedBytes = [...resumeAt.values()].reduce((n, offset) => n + offset, 0);
    const totalBytes = hasStream ? undefined : fileBytes;
    onEvent?.({ type: 'start', entries: manifest, totalBytes, resumedBytes });

    let done = resumedBytes;
    let sentBytes = 0;
    const progress = (n: number): void => {
      done += n;
      sentBytes += n;
      onEvent?.({ type: 'progress', bytes: done, totalBytes });
    };
    for (const [index, entry] of entries.entries()) {
      if (entry.kind === 'directory') continue;
      const offset = resumeAt.get(index) ?? 0;
      // Covers what this run sends; an offered prefix was compared by SHA-256 above.
      const check = new FileCheck(checkKey, index);
      stream.write(session.fileStart(index, offset));
      onEvent?.({ type: 'file-start', index, path: entry.path, size: entry.kind === 'file' ? entry.size : undefined, offset });
      let size: number;
      if (entry.kind === 'file') {
        const file = await openForReading(entry.source);
        let count: number;
        try {
          count = await readPieces(file, entry.source, offset, entry.size, pool, latch, (data, release) => {
            check.update(data);
            progress(data.length);
            // The stream seals (encrypts) the piece before it calls back: then the buffer may be reused.
            stream.cork();
            stream.write(session.data(data.length));
            const ok = stream.write(data, release);
            stream.uncork();
            return ok ? undefined : once(stream, 'drain').then(() => undefined);
          });
        } finally {
          await file.close().catch(() => undefined);
        }
        // A file that grew, shrank or was replaced since the manifest would not be what we announced.
        const now = await latch.race(stat(entry.source).catch((err: unknown) => {
          throw TransferError.readFailed(entry.source, err);
        }));
        if (offset + count !== entry.size || now.size !== entry.size) throw TransferError.changed(entry.source);
        size = entry.size;
      } else {
        size = 0;
        const chunks = (entry.stream as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
        try {
          for (;;) {
            const next = await latch.race(chunks.next());
            if (next.done === true) break;
            const data = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
            for (let at = 0; at < data.length; at += MAX_DATA_BYTES) {
              const part = data.subarray(at, Math.min(data.length, at + MAX_DATA_BYTES));
              check.update(part);
              size += part.length;
              progress(part.length);
              const wait = send(session.data(part.length), part);
              if (wait !== undefined) await latch.race(wait);
            }
          }
        } catch (err) {
          // A failure of the transfer itself surfaces here as a BurrowError; anything else is stdin's.
          throw err instanceof BurrowError ? err : TransferError.readFailed('stdin', err);
        } finally {
          void chunks.return?.();
        }
      }
      const digest = check.digest();
      transferred.push({ index, path: entry.path, source: entry.kind === 'stream' ? '-' : entry.source, size, mode: entry.mode, check: digest.toString('hex'), resumedFrom: offset });
      stream.write(session.fileEnd(index, size, digest));
    }
    stream.end();
    await latch.race(Promise.all([complete.promise, peerEnded.promise, delivered.promise]));
    const bytes = transferred.reduce((n, t) => n + t.size, 0);
    return {
      files: transferred,
      directories: entries.filter((e) => e.kind === 'directory').length,
      bytes,
      sentBytes,
      resumedBytes,
      elapsedMs: Math.round(performance.now() - started),
    };
  } catch (err) {
    latch.fail(err instanceof Error ? err : new Error(String(err)));
    throw latch.error ?? err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    stream.off('data', onData);
    stream.off('end', onEnd);
    stream.off('finish', onFinish);
    stream.off('close', onClose);
    // 'error' stays handled: a late one (the stream is torn down) must not become an uncaught exception.
  }
}
