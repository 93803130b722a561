/**
 * Retransmission schedules, pure. One shape for every retrying machine: the REGISTER retransmissions, the per-pair
 * probe schedule, the STUN client's RTO doubling (RFC 8489 section 6.2.1), the NAT probe, the TCP connect retries.
 */

export class Backoff {
  /** `steps[i]` is the wait after the (i+1)-th attempt; the last step repeats. */
  constructor(readonly steps: readonly number[]) {
    if (steps.length === 0 || steps.some((s) => !Number.isFinite(s) || s < 0)) throw new RangeError('a back-off needs at least one non-negative step');
  }

  /** RTO-style doubling: initial, 2·initial, 4·initial ... capped at `maxMs` (which then repeats). */
  static exponential(initialMs: number, maxMs: number): Backoff {
    const steps: number[] = [];
    for (let d = initialMs; d < maxMs; d *= 2) steps.push(d);
    steps.push(maxMs);
    return new Backoff(steps);
  }

  /** A fixed interval. */
  static constant(ms: number): Backoff {
    return new Backoff([ms]);
  }

  /** The wait after attempt number `sent` (1 = the first attempt). */
  delayAfter(sent: number): number {
    const i = Math.min(Math.max(sent, 1), this.steps.length) - 1;
    return this.steps[i] ?? 0;
  }

  /** When attempt `sent + 1` is due, if attempt `sent` went out at `now`. */
  nextAt(now: number, sent: number): number {
    return now + this.delayAfter(sent);
  }
}
