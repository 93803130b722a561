/**
 * Fixed-memory accounting for the server's hot path. Nothing here allocates per source: unauthenticated
 * traffic must not be able to create state, so per-source limits live in a preallocated table indexed by
 * a keyed hash of the source address (sources that collide share a budget, which only makes the limit
 * stricter for them).
 */

/** Token buckets in a fixed table, one per hash slot. */
export class SourceRateLimiter {
  private readonly tokens: Float64Array;
  private readonly stamps: Float64Array;
  private readonly mask: number;

  /**
   * @param slots power of two; memory is 16 bytes a slot
   * @param ratePerSecond tokens added per second to each slot
   * @param burst bucket size
   * @param seed keys the hash so an attacker cannot aim collisions at a victim
   */
  constructor(
    slots: number,
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly seed: number,
  ) {
    if ((slots & (slots - 1)) !== 0 || slots <= 0) throw new RangeError('slots must be a power of two');
    this.tokens = new Float64Array(slots).fill(burst);
    this.stamps = new Float64Array(slots);
    this.mask = slots - 1;
  }

  /** Takes `cost` tokens from the source's bucket if it has them. */
  allow(source: string, now: number, cost = 1): boolean {
    const i = hashString(source, this.seed) & this.mask;
    const elapsed = Math.max(0, now - (this.stamps[i] ?? 0));
    const available = Math.min(this.burst, (this.tokens[i] ?? 0) + (elapsed * this.ratePerSecond) / 1000);
    this.stamps[i] = now;
    if (available < cost) {
      this.tokens[i] = available;
      return false;
    }
    this.tokens[i] = available - cost;
    return true;
  }
}

/** One global token bucket (for the STUN excess-byte budget). */
export class TokenBucket {
  private tokens: number;
  private stamp = 0;
  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }
  take(cost: number, now: number): boolean {
    this.tokens = Math.min(this.burst, this.tokens + (Math.max(0, now - this.stamp) * this.ratePerSecond) / 1000);
    this.stamp = now;
    if (this.tokens < cost) return false;
    this.tokens -= cost;
    return true;
  }
}

/** FNV-1a over UTF-16 code units, seeded. */
export function hashString(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * Replay cache for authenticated messages: remembers 64-bit message fingerprints (the first 8 bytes of
 * their MAC) for at least one timestamp window. Two fixed-capacity open-addressing tables rotate every
 * window; a message older than the window is already refused by its timestamp, so forgetting the older
 * table is safe. When a table fills up the cache refuses new messages (fails closed) rather than forget.
 */
export class ReplayCache {
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

  /**
   * Records the fingerprint. Returns 'fresh' the first time, 'replay' if seen within the window,
   * 'full' if the cache cannot take more this window.
   */
  check(fingerprint: Uint8Array, now: number): 'fresh' | 'replay' | 'full' {
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
