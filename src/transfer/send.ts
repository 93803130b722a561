/**
 * The sending side's Node driver: files from disk through SenderSession onto an open stream.
 *
 * Each file streams from disk to the stream through pipeline(), so backpressure reaches the disk and
 * memory stays constant; its SHA-256 is computed on the way. `sendFiles` resolves only once the
 * receiver confirmed every file (verified and renamed into place) and the stream confirmed delivery.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { access, constants, open, stat, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { BurrowError } from '../errors.js';
import { checkFileName, describeNameProblem, MAX_FILES } from './codec.js';
import { BufferPool } from './disk.js';
import { deferred, FailureLatch, type TransferEvent, type TransferredFile, type TransferStream, type TransferSummary } from './driver.js';
import { TransferError } from './errors.js';
import { SenderSession, type SenderEvent } from './session.js';

export interface SendFile {
  /** Where to read it. */
  readonly path: string;
  /** The name the receiver gets (the basename). */
  readonly name: string;
  readonly size: number;
  /** Permission bits (mode & 0o777). */
  readonly mode: number;
}

export interface SendOptions {
  readonly files: readonly SendFile[];
  /** The receiver's name, for messages. */
  readonly peer: string;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: TransferEvent) => void;
}

/**
 * Checks the paths given to `burrow send` before anything connects: each must be a readable regular
 * file, and their basenames must be distinct names the receiver will accept. Throws USAGE errors.
 */
export async function prepareFiles(paths: readonly string[]): Promise<SendFile[]> {
  if (paths.length === 0) throw BurrowError.usage('no FILE to send', 'give one or more files: burrow send FILE... --server ...');
  if (paths.length > MAX_FILES) throw BurrowError.usage(`${paths.length} files given; one transfer takes at most ${MAX_FILES}`, 'send them in batches, or as one archive (tar).');
  const files: SendFile[] = [];
  const byName = new Map<string, string>();
  for (const path of paths) {
    let info;
    try {
      info = await stat(path);
      await access(path, constants.R_OK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : TransferError.reasonOf(err);
      throw BurrowError.usage(`cannot send "${path}": ${why}`, 'check the path and that you may read it.');
    }
    if (!info.isFile()) {
      const what = info.isDirectory() ? 'a directory' : 'not a regular file';
      throw BurrowError.usage(`cannot send "${path}": it is ${what}`, 'burrow send takes regular files; pack a directory first (e.g. tar -cf dir.tar dir).');
    }
    const name = basename(path);
    const problem = checkFileName(name);
    if (problem !== undefined) throw BurrowError.usage(`cannot send "${path}": its name ${describeNameProblem(problem)}`, 'rename it (or copy it under a plain name) and send that.');
    const clash = byName.get(name);
    if (clash !== undefined) throw BurrowError.usage(`"${clash}" and "${path}" would both arrive as "${name}"`, 'send them in separate runs, or rename one.');
    byName.set(name, path);
    files.push({ path, name, size: info.size, mode: info.mode & 0o777 });
  }
  return files;
}

/** File reads: 1 MiB pieces (one record each), a few buffers reused for the whole transfer. */
const READ_BYTES = 1024 * 1024;
const READ_BUFFERS = 4;

/**
 * Writes file `file`'s `size` bytes to `stream`, reading one piece ahead of the one being sealed;
 * `onPiece` sees each piece first (the hash). Resolves with the bytes read (fewer if the file shrank).
 */
async function streamFile(file: SendFile, stream: TransferStream, pool: BufferPool, onPiece: (piece: Buffer) => void, latch: FailureLatch): Promise<number> {
  if (file.size === 0) return 0;
  let handle: FileHandle;
  try {
    handle = await open(file.path, 'r');
  } catch (err) {
    throw TransferError.readFailed(file.path, err);
  }
  try {
    let position = 0;
    const readNext = async (): Promise<{ buffer: Buffer; bytes: number; wanted: number } | undefined> => {
      if (position >= file.size) return undefined;
      const at = position;
      const wanted = Math.min(pool.bufferBytes, file.size - at);
      position += wanted;
      const buffer = await pool.take();
      try {
        const { bytesRead } = await handle.read(buffer, 0, wanted, at);
        return { buffer, bytes: bytesRead, wanted };
      } catch (err) {
        pool.give(buffer);
        throw TransferError.readFailed(file.path, err);
      }
    };
    let count = 0;
    let next = readNext();
    for (;;) {
      const piece = await latch.race(next);
      if (piece === undefined) break;
      count += piece.bytes;
      if (piece.bytes < piece.wanted) {
        pool.give(piece.buffer);
        break; // the file shrank: the caller reports it
      }
      next = readNext();
      const data = piece.buffer.subarray(0, piece.bytes);
      onPiece(data);
      // The stream seals (encrypts) the piece before it calls back: then the buffer may be reused.
      const ok = stream.write(data, () => {
        pool.give(piece.buffer);
      });
      if (!ok) await latch.race(once(stream, 'drain'));
    }
    // A read still in flight (the loop ended early) must not outlive the handle.
    await next.then((p) => {
      if (p !== undefined) pool.give(p.buffer);
    }, () => undefined);
    return count;
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** Sends `files` over `stream` and resolves once every one is verified and in place on the other side. */
export async function sendFiles(stream: TransferStream, options: SendOptions): Promise<TransferSummary> {
  const started = performance.now();
  const { files, peer, signal, onEvent } = options;
  const session = new SenderSession(files.map(({ name, size, mode }) => ({ name, size, mode })));
  const totalBytes = files.reduce((n, f) => n + f.size, 0);
  const latch = new FailureLatch(() => {
    // Without an error: this driver reports the failure itself, and 'error' could outlive our listener.
    stream.destroy();
  });
  const accepted = deferred();
  const complete = deferred();
  const peerEnded = deferred();
  const delivered = deferred();
  const hashes: string[] = [];

  const handle = (events: SenderEvent[]): void => {
    for (const e of events) {
      switch (e.type) {
        case 'accepted':
          accepted.resolve();
          break;
        case 'file-ok': {
          const f = files[e.index];
          if (f !== undefined) onEvent?.({ type: 'file-done', index: e.index, name: f.name, size: f.size });
          break;
        }
        case 'complete':
          complete.resolve();
          break;
        case 'refused':
          latch.fail(TransferError.refused(peer, e.reason, e.index === undefined ? undefined : files[e.index]?.name, e.detail));
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

  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('finish', onFinish);
  stream.on('error', onError);
  stream.on('close', onClose);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (signal?.aborted === true) onAbort();
    if (stream.destroyed) onClose();
    if (latch.error !== undefined) throw latch.error;
    stream.write(session.manifest());
    await latch.race(accepted.promise);
    onEvent?.({ type: 'start', files: files.map(({ name, size, mode }) => ({ name, size, mode })), totalBytes });
    let sent = 0;
    const pool = new BufferPool(READ_BYTES, READ_BUFFERS);
    for (const [index, file] of files.entries()) {
      const hash = createHash('sha256');
      const count = await latch.race(
        streamFile(file, stream, pool, (piece) => {
          hash.update(piece);
          sent += piece.length;
          onEvent?.({ type: 'progress', bytes: sent, totalBytes });
        }, latch),
      );
      // A file that grew, shrank or was replaced since the manifest would not be what we announced.
      const now = await latch.race(stat(file.path).catch((err: unknown) => {
        throw TransferError.readFailed(file.path, err);
      }));
      if (count !== file.size || now.size !== file.size) throw TransferError.changed(file.path);
      const digest = hash.digest();
      hashes.push(digest.toString('hex'));
      stream.write(session.fileEnd(index, digest));
    }
    stream.end();
    await latch.race(Promise.all([complete.promise, peerEnded.promise, delivered.promise]));
    const summary: TransferredFile[] = files.map((f, i) => ({ name: f.name, path: f.path, size: f.size, mode: f.mode, sha256: hashes[i] ?? '' }));
    return { files: summary, bytes: totalBytes, elapsedMs: Math.round(performance.now() - started) };
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
