/** What the two Node drivers (./send.ts, ./receive.ts) share: the stream they need and what they report. */
import type { Duplex } from 'node:stream';
import type { ManifestEntry } from './codec.js';

/**
 * An open SecureStream, or anything with its contract: 'finish' only once the peer confirmed delivery,
 * and `acknowledgeEnd()` to confirm the peer's EOF once everything read has been handled.
 */
export type TransferStream = Duplex & { acknowledgeEnd(): void };

/** Progress for a reporter; the library itself prints nothing. */
export type TransferEvent =
  /**
   * Data starts (the receiver accepted). `totalBytes` is undefined when a stream (stdin) of unknown
   * size is among the entries; `resumedBytes` are already on the receiving side and not sent again.
   */
  | { readonly type: 'start'; readonly entries: readonly ManifestEntry[]; readonly totalBytes: number | undefined; readonly resumedBytes: number }
  /** Entry `index` starts (at `offset` when resumed); `size` is undefined for a stream. */
  | { readonly type: 'file-start'; readonly index: number; readonly path: string; readonly size: number | undefined; readonly offset: number }
  /** Bytes done so far over all entries, resumed bytes included. */
  | { readonly type: 'progress'; readonly bytes: number; readonly totalBytes: number | undefined }
  /** Entry `index` is verified and in place on the receiving side. */
  | { readonly type: 'file-done'; readonly index: number; readonly path: string; readonly size: number }
  /** Receiver: a partial file left by an earlier, interrupted transfer that this one did not resume. */
  | { readonly type: 'leftover-removed'; readonly path: string; readonly bytes: number };

export interface TransferredFile {
  /** Its index in the manifest. */
  readonly index: number;
  /** Relative path ("/"-separated), as in the manifest. */
  readonly path: string;
  /** Where it was read from (sender; "-" for stdin) or now lives (receiver). */
  readonly source: string;
  readonly size: number;
  readonly mode: number;
  /**
   * Hex GMAC (./check.ts) of the bytes sent in this run, as both sides computed it: the sender as it
   * read them, the receiver as it wrote them (equal, or the file is not placed). Keyed per transfer.
   */
  readonly check: string;
  /** Bytes that were already on the receiving side from an interrupted run (0: sent whole). */
  readonly resumedFrom: number;
}

export interface TransferSummary {
  /** Files and streams, in manifest order. */
  readonly files: readonly TransferredFile[];
  readonly directories: number;
  /** Size of all files and streams. */
  readonly bytes: number;
  /** Bytes that crossed the network in this run (bytes − resumedBytes). */
  readonly sentBytes: number;
  readonly resumedBytes: number;
  /** From the receiver's acceptance to the end (not the time spent asking). */
  readonly elapsedMs: number;
}

/** First failure wins: later ones (the echoes of tearing things down) are dropped. */
export class FailureLatch {
  private first: Error | undefined;
  private rejectFailed: ((err: Error) => void) | undefined;
  /** Rejects with the first failure; never resolves. */
  readonly failed: Promise<never>;

  constructor(private readonly onFirst: (err: Error) => void) {
    this.failed = new Promise<never>((_, reject) => {
      this.rejectFailed = reject;
    });
    // Always observed through race(); this keeps an unraced failure from being "unhandled".
    this.failed.catch(() => undefined);
  }

  get error(): Error | undefined {
    return this.first;
  }

  fail(err: Error): void {
    if (this.first !== undefined) return;
    this.first = err;
    this.rejectFailed?.(err);
    this.onFirst(err);
  }

  /** `p`, unless a failure comes first. */
  race<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.failed]);
  }
}

export interface Deferred<T> {
  readonly promise: Promise<T>;
  readonly resolve: (value: T) => void;
  done: boolean;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  const d: Deferred<T> = {
    promise,
    resolve: (value) => {
      d.done = true;
      resolve(value);
    },
    done: false,
  };
  return d;
}
