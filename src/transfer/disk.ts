/**
 * The disk side of a transfer, shaped for throughput: the receiver's background file writer and the
 * sender's reusable read buffers. Both keep memory bounded (a few MiB per transfer).
 */
import { constants as fsConstants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** Bytes queued for the disk before `write` makes the receiver wait (its only buffer of file data). */
const WRITE_HIGH_WATER = 8 * 1024 * 1024;
/**
 * Written bytes after which a background fdatasync starts. The receiver flushes each file before it
 * gives it its name; syncing as it goes overlaps the disk with the network instead of writing the
 * whole file at that moment (the kernel itself would wait up to 30 s, or 10 % of RAM, to start).
 */
const SYNC_EVERY = 64 * 1024 * 1024;

/** Bytes gathered in the aligned buffer per direct write (see FileWriter). */
const DIRECT_BYTES = 4 * 1024 * 1024;
/** O_DIRECT alignment of buffer address, length and file offset that any Linux block device accepts. */
const DIRECT_ALIGN = 4096;

export interface FileWriterOptions {
  /** Try O_DIRECT for the bulk of the file (default true; Linux only, falls back by itself). */
  readonly direct?: boolean;
  /**
   * Sees every byte in file order exactly as it is handed to the kernel (the aligned buffer just
   * before its pwrite, a buffered piece just before its writev): the receiver's end-to-end check.
   */
  readonly check?: { update(data: Uint8Array): void };
}

/**
 * Writes one file sequentially in the background, so decrypting the next chunks overlaps the disk.
 * `write` waits only while WRITE_HIGH_WATER bytes are queued, and then only for the batch in flight:
 * that is the backpressure, all the way to the sender.
 *
 * Direct I/O: on Linux the file is reopened through /proc/self/fd with O_DIRECT and the data is
 * copied into one page-aligned 4 MiB buffer (WebAssembly memory, which is mapped page-aligned) and
 * written from there, 4 MiB per pwrite. This skips the page cache: no kernel copy into freshly
 * allocated page-cache pages (measured on this project's VMs at 1.5–3 s of system time per GiB when
 * those pages are new to the guest, against 0.15 s direct), no writeback afterwards, and the final
 * fdatasync has almost nothing left to flush. Whatever does not fill an aligned block (an unaligned
 * resume offset's head, the file's tail) goes through the ordinary descriptor. Where O_DIRECT is not
 * available (another OS, a file system without it, a refused alignment) the writer falls back to
 * buffered writev() batches with a background fdatasync every SYNC_EVERY bytes.
 */
export class FileWriter {
  private queue: Buffer[] = [];
  private queued = 0;
  private running: Promise<void> | undefined;
  private syncing: Promise<void> | undefined;
  private sinceSync = 0;
  private failure: Error | undefined;
  /** Resolves when the batch in flight is written (or failed). */
  private batchDone: (() => void) | undefined;
  private batchWritten: Promise<void> = Promise.resolve();

  /** The file offset the next queued byte goes to. */
  private position: number;
  /** 'try' until the first aligned block is due; then 'direct' or, for good, 'buffered'. */
  private directState: 'try' | 'direct' | 'buffered';
  private directHandle: FileHandle | undefined;
  /** The aligned buffer: bytes [0, filled) belong at file offset `position`. */
  private aligned: Buffer | undefined;
  private filled = 0;
  private aborted = false;
  private readonly check: { update(data: Uint8Array): void } | undefined;

  /** Writes from byte `start` of the file on (a resumed file continues where its prefix ends). */
  constructor(
    private readonly handle: FileHandle,
    start = 0,
    options: FileWriterOptions = {},
  ) {
    this.position = start;
    this.check = options.check;
    this.directState = options.direct === false || process.platform !== 'linux' || !('O_DIRECT' in fsConstants) ? 'buffered' : 'try';
  }

  /** How the bulk of the data is written: 'direct' (O_DIRECT), 'buffered', or not decided yet ('try'). */
  get mode(): 'try' | 'direct' | 'buffered' {
    return this.directState;
  }

  /** Queues `data` (which must not change afterwards); waits only when the queue is full. */
  async write(data: Buffer): Promise<void> {
    this.throwIfFailed();
    if (data.length === 0) return;
    this.queue.push(data);
    this.queued += data.length;
    this.running ??= this.drain();
    while (this.queued >= WRITE_HIGH_WATER) {
      await this.batchWritten;
      this.throwIfFailed();
    }
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /** Everything queued handed to the kernel (not yet flushed to the device); rejects with the first error. */
  async written(): Promise<void> {
    await this.running;
    await this.syncing;
    this.throwIfFailed();
    await this.writeTail();
    this.throwIfFailed();
  }

  /** Everything queued written and on the storage device (fdatasync); rejects with the first error. */
  async finish(): Promise<void> {
    await this.running;
    await this.syncing;
    this.throwIfFailed();
    await this.writeTail();
    this.throwIfFailed();
    await this.handle.datasync();
  }

  /** Writes what is queued (no fdatasync) and waits for it; never rejects. Keeps a partial file whole. */
  async settle(): Promise<void> {
    await this.running?.catch(() => undefined);
    await this.syncing?.catch(() => undefined);
    await this.writeTail().catch(() => undefined);
  }

  /** Waits for the I/O in flight and drops the rest; never rejects. */
  async abort(): Promise<void> {
    this.aborted = true;
    this.queue = [];
    this.queued = 0;
    await this.running?.catch(() => undefined);
    await this.syncing?.catch(() => undefined);
    this.filled = 0;
    await this.closeDirect();
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0 && this.failure === undefined) {
        const batch = this.queue;
        const bytes = this.queued;
        this.queue = [];
        this.batchWritten = new Promise((resolve) => {
          this.batchDone = resolve;
        });
        try {
          if (this.directState === 'buffered') await this.writeBuffered(batch, bytes);
          else await this.writeAligned(batch);
        } finally {
          this.queued -= bytes;
          this.batchDone?.();
        }
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.running = undefined;
    }
  }

  private async writeBuffered(batch: Buffer[], bytes: number): Promise<void> {
    for (const piece of batch) this.check?.update(piece);
    await writeAll(this.handle, batch, bytes, this.position);
    this.position += bytes;
    this.sinceSync += bytes;
    if (this.sinceSync >= SYNC_EVERY && this.syncing === undefined) {
      this.sinceSync = 0;
      this.syncing = this.handle.datasync().then(
        () => {
          this.syncing = undefined;
        },
        (err: unknown) => {
          this.syncing = undefined;
          this.fail(err);
        },
      );
    }
  }

  /** Copies `batch` into the aligned buffer, writing it out each time it is full. */
  private async writeAligned(batch: Buffer[]): Promise<void> {
    for (const [i, piece] of batch.entries()) {
      if (this.aborted) return;
      let at = 0;
      // An unaligned start (a resumed prefix): its head goes through the ordinary descriptor.
      if (this.filled === 0 && this.position % DIRECT_ALIGN !== 0) {
        const head = Math.min(piece.length, DIRECT_ALIGN - (this.position % DIRECT_ALIGN));
        this.check?.update(piece.subarray(0, head));
        await writeAll(this.handle, [piece.subarray(0, head)], head, this.position);
        this.position += head;
        at = head;
      }
      while (at < piece.length) {
        this.aligned ??= Buffer.from(new WebAssembly.Memory({ initial: DIRECT_BYTES / 65536 }).buffer);
        const n = piece.copy(this.aligned, this.filled, at);
        this.filled += n;
        at += n;
        if (this.filled === DIRECT_BYTES) await this.flushAligned(DIRECT_BYTES);
        if (this.directState === 'buffered') {
          // Fallen back: the rest of this batch goes the ordinary way.
          const rest = [piece.subarray(at), ...batch.slice(i + 1)].filter((b) => b.length > 0);
          await this.writeBuffered(rest, rest.reduce((n, b) => n + b.length, 0));
          return;
        }
      }
    }
  }

  /** Writes the first `bytes` (a multiple of DIRECT_ALIGN) of the aligned buffer at `position`. */
  private async flushAligned(bytes: number): Promise<void> {
    const aligned = this.aligned;
    if (aligned === undefined || bytes === 0) return;
    this.check?.update(aligned.subarray(0, bytes));
    let done = 0;
    if (this.directState === 'try') {
      try {
        this.directHandle = await open(`/proc/self/fd/${this.handle.fd}`, fsConstants.O_WRONLY | fsConstants.O_DIRECT);
        this.directState = 'direct';
      } catch {
        this.directState = 'buffered';
      }
    }
    if (this.directHandle !== undefined) {
      try {
        while (done < bytes) {
          const { bytesWritten } = await this.directHandle.write(aligned, done, bytes - done, this.position + done);
          if (bytesWritten === 0 || bytesWritten % DIRECT_ALIGN !== 0) {
            done += bytesWritten;
            break;
          }
          done += bytesWritten;
        }
      } catch (err) {
        // EINVAL: this file system or device refuses the alignment. Anything else is a real failure.
        if (errnoOf(err) !== 'EINVAL') throw err;
        this.directState = 'buffered';
        await this.closeDirect();
      }
    }
    // Whatever direct I/O did not take (fallback, or a short write) goes the ordinary way.
    if (done < bytes) await writeAll(this.handle, [aligned.subarray(done, bytes)], bytes - done, this.position + done);
    const left = this.filled - bytes;
    if (left > 0) aligned.copy(aligned, 0, bytes, this.filled);
    this.filled = left;
    this.position += bytes;
  }

  /** The aligned buffer's last bytes (less than a block is never written direct) and the direct descriptor closed. */
  private async writeTail(): Promise<void> {
    try {
      const whole = this.directState === 'direct' ? this.filled - (this.filled % DIRECT_ALIGN) : 0;
      await this.flushAligned(whole);
      if (this.filled > 0 && this.aligned !== undefined) {
        this.check?.update(this.aligned.subarray(0, this.filled));
        await writeAll(this.handle, [this.aligned.subarray(0, this.filled)], this.filled, this.position);
        this.position += this.filled;
        this.filled = 0;
      }
    } finally {
      await this.closeDirect();
    }
  }

  private async closeDirect(): Promise<void> {
    const direct = this.directHandle;
    this.directHandle = undefined;
    await direct?.close().catch(() => undefined);
  }

  private fail(err: unknown): void {
    this.failure ??= err instanceof Error ? err : new Error(String(err));
    this.queue = [];
    this.queued = 0;
  }
}

function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/** writev() at `position` until every byte is written (it may write fewer, and takes at most IOV_MAX buffers). */
async function writeAll(handle: FileHandle, buffers: Buffer[], bytes: number, position: number): Promise<void> {
  let rest = buffers;
  let left = bytes;
  let at = position;
  while (left > 0) {
    const { bytesWritten } = await handle.writev(rest.length > 1024 ? rest.slice(0, 1024) : rest, at);
    if (bytesWritten === 0) throw new Error('the file system wrote nothing (writev returned 0)');
    left -= bytesWritten;
    at += bytesWritten;
    let skip = bytesWritten;
    let drop = 0;
    while (skip > 0 && drop < rest.length) {
      const first = rest[drop] ?? Buffer.alloc(0);
      if (first.length <= skip) {
        skip -= first.length;
        drop++;
      } else {
        break;
      }
    }
    rest = rest.slice(drop);
    if (skip > 0 && rest[0] !== undefined) rest = [rest[0].subarray(skip), ...rest.slice(1)];
  }
}

/**
 * A few equal buffers handed out and given back, so that reading a file of any size reuses the same
 * memory instead of allocating (and page-faulting) a fresh buffer per read.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: ((b: Buffer) => void)[] = [];
  private made = 0;

  constructor(
    readonly bufferBytes: number,
    private readonly count: number,
  ) {}

  /** A buffer, at once if one is free (or may still be made), else once one is given back. */
  take(): Promise<Buffer> {
    const b = this.free.pop();
    if (b !== undefined) return Promise.resolve(b);
    if (this.made < this.count) {
      this.made++;
      return Promise.resolve(Buffer.allocUnsafeSlow(this.bufferBytes));
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  give(b: Buffer): void {
    const next = this.waiting.shift();
    if (next !== undefined) next(b);
    else this.free.push(b);
  }
}
