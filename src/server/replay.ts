/**
 * The replay guard: remembers the fingerprint of every authenticated request for as long as its timestamp is
 * acceptable, and refuses a second copy. Behind an interface, because every process and server that shares
 * registrations must share it too (a replay sent to another server would pass otherwise): the in-memory
 * `ReplayCache` serves one process and, through src/node/server-ipc.ts, the workers of a multi-process server;
 * a Redis guard is one `SET key 1 NX PX <2 × window>` per request.
 */

import type { Awaitable } from './types.js';

/**
 * 'fresh' the first time; 'replay' when seen within the window; 'full' when the guard cannot remember more; 'stale'
 * when the request is older than the guard's memory itself (a shared guard that found its store emptied, e.g. a
 * Redis restarted without its data, refuses every timestamp older than that moment: it cannot tell replays from
 * fresh requests before it). A stale request is answered 438 with the server's clock, as a stale timestamp is.
 */
export type ReplayVerdict = 'fresh' | 'replay' | 'full' | 'stale';

export interface ReplayGuard {
  /**
   * Atomically: records `fingerprint` (8 bytes, the start of the request's MAC) and says whether it was new. The
   * guard must remember it for at least 2 × the timestamp window (a request is accepted while |timestamp − now| ≤
   * window, so for up to 2 × window after it is first seen). `timestamp`: the request's own; a guard that has
   * forgotten what came before some moment (a shared store found emptied) answers 'stale' for older ones.
   */
  checkAndInsert(fingerprint: Uint8Array, now: number, timestamp?: number): Awaitable<ReplayVerdict>;
}

/**
 * The in-memory replay guard: remembers 64-bit message fingerprints (the first 8 bytes of
 * their MAC) for at least one timestamp window. Two fixed-capacity open-addressing tables rotate every
 * window; a message older than the window is already refused by its timestamp, so forgetting the older
 * table is safe. When a table fills up the cache refuses new messages (fails closed) rather than forget.
 */
export class ReplayCache implements ReplayGuard {
  private current: Uint32Array;
  private previous: Uint32Array;
  private currentCount = 0;
  private previousCount = 0;
  private rotatedAt: number | undefined;
  private readonly slots: number;
  private readonly maxCount: number;

  constructor(
    capacityPerWindow: number,
    private readonly windowMs: number,
  ) {
    let slots = 1;
    while (slots < capacityPerWindow * 2) slots *= 2;
    this.slots = slots;
    this.maxCount = capacityPerWindow;
    this.current = new Uint32Array(slots * 2);
    this.previous = new Uint32Array(slots * 2);
  }

  /** Memory held, in bytes. */
  get bytes(): number {
    return (this.current.byteLength + this.previous.byteLength);
  }

  /** Fingerprints remembered in both tables. */
  get entries(): number {
    return this.currentCount + this.previousCount;
  }

  checkAndInsert(fingerprint: Uint8Array, now: number): ReplayVerdict {
    this.rotatedAt ??= now;
    if (now - this.rotatedAt >= this.windowMs) {
      // A new table rather than fill(0): the kernel hands out zeroed pages lazily, filling 8 MiB does not.
      const forgetAll = now - this.rotatedAt >= 2 * this.windowMs;
      this.previous = forgetAll ? new Uint32Array(this.slots * 2) : this.current;
      this.previousCount = forgetAll ? 0 : this.currentCount;
      this.current = new Uint32Array(this.slots * 2);
      this.currentCount = 0;
      this.rotatedAt = now;
    }
    const hi = readU32(fingerprint, 0);
    const lo = (readU32(fingerprint, 4) | 1) >>> 0; // never all-zero: zero marks an empty slot
    if (this.contains(this.previous, hi, lo) || this.contains(this.current, hi, lo)) return 'replay';
    if (this.currentCount >= this.maxCount) return 'full';
    let i = (hi ^ lo) & (this.slots - 1);
    for (;;) {
      if (this.current[i * 2 + 1] === 0) {
        this.current[i * 2] = hi;
        this.current[i * 2 + 1] = lo;
        this.currentCount++;
        return 'fresh';
      }
      i = (i + 1) & (this.slots - 1);
    }
  }

  private contains(table: Uint32Array, hi: number, lo: number): boolean {
    let i = (hi ^ lo) & (this.slots - 1);
    for (;;) {
      const l = table[i * 2 + 1];
      if (l === 0) return false;
      if (l === lo && table[i * 2] === hi) return true;
      i = (i + 1) & (this.slots - 1);
    }
  }
}

function readU32(b: Uint8Array, at: number): number {
  return (((b[at] ?? 0) << 24) | ((b[at + 1] ?? 0) << 16) | ((b[at + 2] ?? 0) << 8) | (b[at + 3] ?? 0)) >>> 0;
}
