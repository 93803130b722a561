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
