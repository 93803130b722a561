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
  /** The receiver accepted the manifest: data starts. */
  | { readonly type: 'start'; readonly files: readonly ManifestEntry[]; readonly totalBytes: number }
  /** File bytes sent (or written) so far, over all files. */
  | { readonly type: 'progress'; readonly bytes: number; readonly totalBytes: number }
  /** File `index` is verified and in place on the receiving side. */
  | { readonly type: 'file-done'; readonly index: number; readonly name: string; readonly size: number };

export interface TransferredFile {
  readonly name: string;
  /** Where it was read from (sender) or now lives (receiver). */
  readonly path: string;
  readonly size: number;
  readonly mode: number;
  /** Hex SHA-256 of the contents, as both sides computed it. */
  readonly sha256: string;
}

export interface TransferSummary {
  readonly files: readonly TransferredFile[];
  readonly bytes: number;
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
