/**
 * The disk side of a transfer, shaped for throughput: the receiver's background file writer and the
 * sender's reusable read buffers. Both keep memory bounded (a few MiB per transfer).
 */
import type { FileHandle } from 'node:fs/promises';

/** Bytes queued for the disk before `write` makes the receiver wait (its only buffer of file data). */
const WRITE_HIGH_WATER = 8 * 1024 * 1024;
/**
 * Written bytes after which a background fdatasync starts. The receiver flushes each file before it
 * gives it its name; syncing as it goes overlaps the disk with the network instead of writing the
 * whole file at that moment (the kernel itself would wait up to 30 s, or 10 % of RAM, to start).
 */
const SYNC_EVERY = 64 * 1024 * 1024;

/**
 * Writes one file sequentially in the background, several queued buffers per writev(), so decrypting
 * the next chunks overlaps the disk. `write` waits only while WRITE_HIGH_WATER bytes are queued, and
 * then only for the batch in flight: that is the backpressure, all the way to the sender.
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

  /** Writes from byte `start` of the file on (a resumed file continues where its prefix ends). */
  constructor(
    private readonly handle: FileHandle,
    start = 0,
  ) {
    this.position = start;
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

  /** Everything queued written and on the storage device (fdatasync); rejects with the first error. */
  async finish(): Promise<void> {
    await this.running;
    await this.syncing;
    this.throwIfFailed();
    await this.handle.datasync();
  }

  /** Writes what is queued (no fdatasync) and waits for it; never rejects. Keeps a partial file whole. */
  async settle(): Promise<void> {
    await this.running?.catch(() => undefined);
    await this.syncing?.catch(() => undefined);
  }

  /** Waits for the I/O in flight and drops the rest; never rejects. */
  async abort(): Promise<void> {
    this.queue = [];
    this.queued = 0;
    await this.running?.catch(() => undefined);
    await this.syncing?.catch(() => undefined);
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
          await writeAll(this.handle, batch, bytes, this.position);
          this.position += bytes;
        } finally {
          this.queued -= bytes;
          this.batchDone?.();
        }
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
    } catch (err) {
      this.fail(err);
    } finally {
      this.running = undefined;
    }
  }

  private fail(err: unknown): void {
    this.failure ??= err instanceof Error ? err : new Error(String(err));
    this.queue = [];
    this.queued = 0;
  }
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
