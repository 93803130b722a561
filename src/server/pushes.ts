/**
 * Introductions pushed but not yet acknowledged, kept by the server that sent them (the recipient's owner). A push
 * is acknowledged by the recipient's next REGISTER (whose answer carries the introduction anyway); until then it is
 * re-sent with back-off, so that one lost datagram does not cost a waiting peer a whole refresh period.
 *
 * The acknowledging REGISTER may reach another process or server than the one holding the push, so before each
 * re-send the holder looks the recipient up in the shared store: a newer `version` (or another session, or none)
 * means acknowledged or gone. A REGISTER that does reach the holder acknowledges at once (`acknowledge`).
 *
 * At most one push per recipient, at most `max` in all (the oldest go first). Due times live in a binary heap,
 * so finding the next one costs O(log n) however many wait.
 */
import type { Push } from './types.js';

/** An unacknowledged INTRODUCE is sent at most this many times, the n-th 100·2^(n-2) ms after the previous one. */
export const PUSH_TRIES = 5;
export const PUSH_BACKOFF_MS = 100;

export interface PendingPush {
  readonly key: string;
  readonly push: Push;
  /** When it is next due; Infinity while its recipient is being looked up. */
  nextAt: number;
  tries: number;
}

export function pushKey(network: string, name: string): string {
  return `${network}\u0000${name}`;
}

export class PushTable {
  private readonly pending = new Map<string, PendingPush>();
  private readonly heap: { at: number; entry: PendingPush }[] = [];

  constructor(private readonly max: number) {}

  get size(): number {
    return this.pending.size;
  }

  /** `push` has just been sent for the first time. */
  sent(push: Push, now: number): void {
    const key = pushKey(push.network, push.recipient);
    this.pending.delete(key);
    while (this.pending.size >= this.max) {
      const oldest = this.pending.keys().next();
      if (oldest.done) break;
      this.pending.delete(oldest.value);
    }
    const entry: PendingPush = { key, push, nextAt: now + PUSH_BACKOFF_MS, tries: 1 };
    this.pending.set(key, entry);
    this.schedule(entry);
  }

  /** The recipient registered again here: its push is acknowledged. */
  acknowledge(network: string, name: string): void {
    this.pending.delete(pushKey(network, name));
  }

  /**
   * The pushes due at `now` that still have tries left, each now waiting for its recipient to be looked up
   * (`resend` or `drop` next); those out of tries are forgotten.
   */
  due(now: number): PendingPush[] {
    const out: PendingPush[] = [];
    for (;;) {
      const top = this.heap[0];
      if (!top || top.at > now) break;
      this.pop();
      const entry = top.entry;
      if (this.pending.get(entry.key) !== entry || entry.nextAt !== top.at) continue; // acknowledged, replaced or rescheduled
      if (entry.tries >= PUSH_TRIES) {
        this.pending.delete(entry.key);
        continue;
      }
      entry.nextAt = Infinity;
      out.push(entry);
    }
    return out;
  }

  /** `entry` was sent again at `now`. */
  resent(entry: PendingPush, now: number): void {
    if (this.pending.get(entry.key) !== entry) return;
    entry.tries++;
    entry.nextAt = now + PUSH_BACKOFF_MS * 2 ** (entry.tries - 1);
    this.schedule(entry);
  }

  drop(entry: PendingPush): void {
    if (this.pending.get(entry.key) === entry) this.pending.delete(entry.key);
  }

  /** When the next push is due, if any is. */
  nextAt(): number | undefined {
    while (this.heap.length > 0) {
      const top = this.heap[0];
      if (top && this.pending.get(top.entry.key) === top.entry && top.entry.nextAt === top.at) return top.at;
      this.pop();
    }
    return undefined;
  }

  // A binary min-heap on `at`; entries that moved or went are skipped when they surface.

  private schedule(entry: PendingPush): void {
    const h = this.heap;
    h.push({ at: entry.nextAt, entry });
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = h[parent];
      const c = h[i];
      if (!p || !c || p.at <= c.at) break;
      h[parent] = c;
      h[i] = p;
      i = parent;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop();
    if (!last || h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if ((h[l]?.at ?? Infinity) < (h[m]?.at ?? Infinity)) m = l;
      if ((h[r]?.at ?? Infinity) < (h[m]?.at ?? Infinity)) m = r;
      if (m === i) break;
      const a = h[i];
      const b = h[m];
      if (!a || !b) break;
      h[i] = b;
      h[m] = a;
      i = m;
    }
  }
}
