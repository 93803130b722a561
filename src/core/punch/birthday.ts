/**
 * Birthday-paradox probing, the pure parts (issue 11): who plays which role, the easy side's shuffled ports and its
 * paced probing, and the process-wide gate that keeps attempts rare. The agent (agent.ts) drives these; the Node
 * driver (src/node/birthday.ts) owns the hard side's sockets.
 *
 * When exactly one side's NAT maps every destination to a new random port ("hard", symmetric) and the other keeps one
 * public port ("easy"), and the easy side's NAT filters by address and port, a plain punch cannot work: the easy side
 * never learns which port the hard NAT chose for it, and it drops the hard side's packets. Instead:
 *
 * - the hard side opens M sockets (default 512) and sends one packet from each to the easy side's public address,
 *   with a low TTL (default 2) so that it opens a mapping in the hard NAT and dies in the network before it reaches
 *   the easy NAT (a packet that arrives there first would leave a conntrack entry behind that makes the easy NAT map
 *   the later probe to another port); then it tells the easy side, through the server, that the sockets are open;
 * - the easy side sends authenticated probes to the hard side's IP on distinct random ports from 1024-65535, at most
 *   `probes` (default 1,000) per attempt, at `ratePerSecond` (default 180) and at most `perWindow` (default 180) in
 *   any one-second window (the router may see a few more: the ordinary checks, and datagrams the event loop delayed); the hard NAT
 *   lets a probe in only when its port is one of the M mappings aimed at the easy side. With M = 512 and k probes the
 *   chance of a hit is 1 − C(N−M, k)/C(N, k) for N = 64,512 ports: 50% at 87 probes, 99% at 576, 99.96% at 1,000.
 * - the first authenticated probe that arrives wins: that socket answers it and checks back, the other sockets close
 *   at once, and the pair is nominated like any other direct pair.
 */
import type { NatFiltering, NatMapping } from '../../codec/messages.js';

/** The range a Linux `masquerade random` NAT allocates from (nf_nat_core.c), and most NATs stay within. */
export const BIRTHDAY_MIN_PORT = 1024;
export const BIRTHDAY_MAX_PORT = 65535;

export interface BirthdayOptions {
  /** Sockets the hard side opens per attempt (64-1024). */
  readonly sockets: number;
  /** TTL of the hard side's opening packets (1-64): low enough to die between the two NATs. */
  readonly ttl: number;
  /** Probes the easy side sends per attempt at most. */
  readonly probes: number;
  /** Probes per second the easy side aims at (spread evenly). */
  readonly ratePerSecond: number;
  /** Probes in any window of `windowMs` at most, whatever the timers do. */
  readonly perWindow: number;
  readonly windowMs: number;
  /** Between the starts of two attempts with the same peer, at least (ms). */
  readonly cooldownMs: number;
}

export const DEFAULT_BIRTHDAY: BirthdayOptions = {
  sockets: 512,
  ttl: 2,
  probes: 1000,
  ratePerSecond: 180,
  perWindow: 180,
  windowMs: 1000,
  cooldownMs: 20_000,
};

/** How long the hard side keeps its sockets open for an attempt: the easy side's probing time and 3 s to spare. */
export function hardWindowMs(o: Pick<BirthdayOptions, 'probes' | 'ratePerSecond'>): number {
  return Math.ceil((o.probes / o.ratePerSecond) * 1000) + 3000;
}

/**
 * Our role, from both NAT findings (ours from the registration probe, the partner's from NAT-MAPPING): 'hard' when
 * our mapping depends on the destination and the partner's is known not to, 'easy' the other way round; undefined
 * when a plain punch does (no hard side, or an easy side whose filter lets the hard side's first packet in: it then
 * learns the port from it) or nothing can (both hard: the relay carries the pair, and nobody sprays).
 */
export function birthdayRole(ours: { mapping: NatMapping; filtering: NatFiltering }, theirs: { mapping: NatMapping; filtering: NatFiltering }): 'hard' | 'easy' | undefined {
  const plainWorks = (f: NatFiltering): boolean => f === 'endpoint-independent' || f === 'address-dependent';
  if (ours.mapping === 'endpoint-dependent' && theirs.mapping === 'endpoint-independent') return plainWorks(theirs.filtering) ? undefined : 'hard';
  if (ours.mapping === 'endpoint-independent' && theirs.mapping === 'endpoint-dependent') return plainWorks(ours.filtering) ? undefined : 'easy';
  return undefined;
}

/** Probability that k distinct random probes hit one of m open ports among n (sampling without replacement). */
export function hitProbability(m: number, k: number, n = BIRTHDAY_MAX_PORT - BIRTHDAY_MIN_PORT + 1): number {
  let miss = 1;
  for (let j = 0; j < k; j++) miss *= (n - m - j) / (n - j);
  return 1 - miss;
}

/**
 * `count` distinct ports from [min, max] in random order: a partial Fisher–Yates shuffle over the range (a sparse
 * map of swapped slots, so 1,000 ports cost 1,000 steps, not 64,512). `random(n)` returns an integer in [0, n).
 */
export function shuffledPorts(count: number, random: (n: number) => number, min = BIRTHDAY_MIN_PORT, max = BIRTHDAY_MAX_PORT): number[] {
  const size = max - min + 1;
  const n = Math.max(0, Math.min(count, size));
  const swapped = new Map<number, number>();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const j = i + random(size - i);
    const atJ = swapped.get(j) ?? j;
    const atI = swapped.get(i) ?? i;
    swapped.set(j, atI);
    out.push(min + atJ);
  }
  return out;
}

/**
 * Paces sends at `ratePerSecond` from `start` (no catching up beyond it), and never more than `perWindow` in any
 * window of `windowMs`: a timer that fires late sends what fell due, but the sliding window holds even then.
 */
export class WindowPacer {
  private readonly times: number[] = [];
  private sent = 0;

  constructor(
    private readonly start: number,
    private readonly ratePerSecond: number,
    private readonly perWindow: number,
    private readonly windowMs: number,
  ) {}

  /** How many sends may go at `now`. */
  allowance(now: number): number {
    const byRate = Math.floor(((now - this.start) * this.ratePerSecond) / 1000) + 1 - this.sent;
    while (this.times.length > 0 && (this.times[0] ?? 0) <= now - this.windowMs) this.times.shift();
    const byWindow = this.perWindow - this.times.length;
    return Math.max(0, Math.min(byRate, byWindow));
  }

  /** Records one send at `now`. */
  record(now: number): void {
    this.sent++;
    this.times.push(now);
  }

  /** When the next send may go (after `now`). */
  nextAt(now: number): number {
    const byRate = this.start + Math.ceil((this.sent * 1000) / this.ratePerSecond);
    const oldest = this.times.length >= this.perWindow ? (this.times[this.times.length - this.perWindow] ?? now) + this.windowMs : -Infinity;
    return Math.max(now, byRate, oldest);
  }
}

/** The easy side of one attempt: distinct random ports of the hard side's IP, paced, capped. */
export class BirthdayProber {
  private readonly ports: number[];
  private readonly pacer: WindowPacer;
  private next = 0;
  private stoppedAt: number | undefined;
  readonly probed = new Set<number>();

  constructor(
    readonly attempt: number,
    readonly target: string,
    now: number,
    options: Pick<BirthdayOptions, 'probes' | 'ratePerSecond' | 'perWindow' | 'windowMs'>,
    random: (n: number) => number,
  ) {
    this.ports = shuffledPorts(options.probes, random);
    this.pacer = new WindowPacer(now, options.ratePerSecond, options.perWindow, options.windowMs);
  }

  /** Probes sent so far. */
  get sent(): number {
    return this.next;
  }

  get done(): boolean {
    return this.stoppedAt !== undefined || this.next >= this.ports.length;
  }

  /** The ports to probe now (recorded as sent). */
  due(now: number): number[] {
    if (this.done) return [];
    const n = Math.min(this.pacer.allowance(now), this.ports.length - this.next);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const port = this.ports[this.next++];
      if (port === undefined) break;
      this.pacer.record(now);
      this.probed.add(port);
      out.push(port);
    }
    return out;
  }

  nextTimeoutAt(now: number): number | undefined {
    return this.done ? undefined : this.pacer.nextAt(now);
  }

  stop(now: number): void {
    this.stoppedAt ??= now;
  }
}

/**
 * The process-wide limit on attempts: one at a time (on either side), and at least `cooldownMs` between the starts
 * of two attempts with the same pair. An attempt is named by a tag both sides derive alike (the hard side's session
 * nonce and the attempt's number), so the two sides of one attempt in one process (tests, a bench) share it.
 * Time is passed in.
 */
export class BirthdayGate {
  private active: { readonly pair: string; readonly tag: string; holders: number } | undefined;
  private readonly lastStart = new Map<string, { readonly at: number; readonly tag: string }>();

  constructor(private readonly cooldownMs = DEFAULT_BIRTHDAY.cooldownMs) {}

  /** Takes the gate for attempt `tag` of `pair`, or says when to ask again. */
  acquire(pair: string, tag: string, now: number): { readonly ok: true } | { readonly ok: false; readonly retryAt: number; readonly reason: 'busy' | 'cooldown' } {
    if (this.active?.tag === tag && this.active.pair === pair) {
      this.active.holders++;
      return { ok: true };
    }
    const last = this.lastStart.get(pair);
    if (last !== undefined && last.tag !== tag && now < last.at + this.cooldownMs) return { ok: false, retryAt: last.at + this.cooldownMs, reason: 'cooldown' };
    if (this.active !== undefined) return { ok: false, retryAt: now + 1000, reason: 'busy' };
    this.active = { pair, tag, holders: 1 };
    if (last?.tag !== tag) this.lastStart.set(pair, { at: now, tag });
    // Bounded: forget pairs whose cool-down is long over.
    if (this.lastStart.size > 1024) for (const [k, v] of this.lastStart) if (v.at + this.cooldownMs < now) this.lastStart.delete(k);
    return { ok: true };
  }

  /** One holder of attempt `tag` is done with it (no-op if that attempt does not hold the gate). */
  release(tag: string): void {
    if (this.active?.tag !== tag) return;
    this.active.holders--;
    if (this.active.holders <= 0) this.active = undefined;
  }

  get busy(): boolean {
    return this.active !== undefined;
  }
}
