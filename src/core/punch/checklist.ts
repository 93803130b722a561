/**
 * The checklist: candidate pairs (a local transport × a remote candidate), each with a priority (RFC 8445 section
 * 6.1.2.3), a state (section 6.1.2.6) and its own check schedule; plus the pacing of ordinary checks over all pairs.
 *
 * Pair states as Burrow uses them:
 *
 *   frozen ──(triggered check)──▶ in-progress      (pairs of a passive transport: no ordinary checks)
 *   waiting ──(first check)─────▶ in-progress ──(answer from where the check went)──▶ succeeded
 *   succeeded ──(no answer for consentTimeoutMs, session mode)──▶ failed ──(an answer again)──▶ succeeded
 *
 * "Valid" (RFC 8445's valid list) is `state === 'succeeded'`. Unlike ICE's fixed retransmission count, a pair that
 * never answers stays in-progress until the deadline: the partner's NAT may open it later (it may start later, or
 * its first probes may be what opens its filter), so it keeps being checked on the back-off. (A predicted candidate
 * of birthday probing is the exception: it gets `predictedChecks` checks and then waits, in-progress, for an answer.)
 */
import { endpointKey, type Endpoint } from '../../codec/address.js';
import type { Backoff } from '../backoff.js';
import type { TransportId } from '../machine.js';
import { pairPriority, pathOf, type LocalTransport, type RemoteCandidate } from './candidates.js';
import type { PunchPath, PunchTiming } from './types.js';

export type PairState = 'frozen' | 'waiting' | 'in-progress' | 'succeeded' | 'failed';

export interface Pair {
  readonly key: string;
  readonly transport: LocalTransport;
  readonly remote: RemoteCandidate;
  readonly priority: bigint;
  readonly path: PunchPath;
  state: PairState;
  /** Checks sent on it (ordinary, triggered, repeats). */
  checks: number;
  nextCheckAt: number;
  lastCheckAt: number;
  /** The last answer to one of our checks on it (consent freshness, RFC 7675). */
  lastAnswerAt: number;
  /** The controlling side has sent NOMINATE on it. */
  nominated: boolean;
}

export function pairKey(transport: TransportId, remote: Endpoint): string {
  return `${transport}|${endpointKey(remote)}`;
}

/** A token bucket: `perSecond` tokens a second, at most `burst` saved up. */
export class Pacer {
  private tokens: number;
  private at = -Infinity;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }

  private refill(now: number): void {
    if (this.at !== -Infinity) this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.perSecond) / 1000);
    this.at = now;
  }

  take(now: number): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** When the next token is there. */
  nextTokenAt(now: number): number {
    this.refill(now);
    return this.tokens >= 1 ? now : now + Math.ceil(((1 - this.tokens) * 1000) / this.perSecond);
  }
}

export class Checklist {
  private readonly byKey = new Map<string, Pair>();
  /** Pairs by priority, highest first (the order checks go out in). */
  private ordered: Pair[] = [];

  constructor(
    private readonly controlling: boolean,
    readonly probeBackoff: Backoff,
    /** Which kinds of path may be paired at all (relayed only, for a relay-only agent); default all. */
    private readonly admits: (path: PunchPath) => boolean = () => true,
  ) {}

  get(transport: TransportId, remote: Endpoint): Pair | undefined {
    return this.byKey.get(pairKey(transport, remote));
  }

  /** All pairs, highest priority first. */
  all(): readonly Pair[] {
    return this.ordered;
  }

  get size(): number {
    return this.byKey.size;
  }

  /**
   * Pairs `transport` with `remote` (same address family only). Pairs of a passive transport start frozen: they
   * are checked only when the partner's probe arrives on them (a triggered check).
   */
  add(transport: LocalTransport, remote: RemoteCandidate, now: number): Pair | undefined {
    if (transport.family !== (remote.endpoint.address.includes(':') ? 6 : 4)) return undefined;
    const key = pairKey(transport.id, remote.endpoint);
    const existing = this.byKey.get(key);
    if (existing) return existing;
    const path = pathOf(transport, remote);
    if (!this.admits(path)) return undefined;
    // A relay cannot reach the partner's LAN (host) addresses, and coturn tears down the whole allocation when its
    // relay socket gets an error (an unroutable private address): never check a host candidate through a relay.
    if (transport.kind === 'relay' && remote.kind === 'host') return undefined;
    const [g, d] = this.controlling ? [transport.priority, remote.priority] : [remote.priority, transport.priority];
    const pair: Pair = {
      key,
      transport,
      remote,
      priority: pairPriority(g, d),
      path,
      state: transport.passive ? 'frozen' : 'waiting',
      checks: 0,
      nextCheckAt: transport.passive ? Infinity : now,
      lastCheckAt: -Infinity,
      lastAnswerAt: -Infinity,
      nominated: false,
    };
    this.byKey.set(key, pair);
    this.ordered.push(pair);
    this.ordered.sort((a, b) => (a.priority === b.priority ? 0 : a.priority > b.priority ? -1 : 1));
    return pair;
  }

  /** Removes every pair of a transport that went away. */
  removeTransport(id: TransportId): void {
    for (const [k, p] of this.byKey) if (p.transport.id === id) this.byKey.delete(k);
    this.ordered = this.ordered.filter((p) => p.transport.id !== id);
  }

  clear(): void {
    this.byKey.clear();
    this.ordered = [];
  }

  /** Records a check on `pair` at `now`; the next ordinary check is due at `nextAt`. */
  checked(pair: Pair, now: number, nextAt: number): void {
    if (pair.state === 'waiting' || pair.state === 'frozen') pair.state = 'in-progress';
    pair.checks++;
    pair.lastCheckAt = now;
    pair.nextCheckAt = nextAt;
  }

  /** Records an answer to our check on `pair`; true when that made it valid (again). */
  answered(pair: Pair, now: number): boolean {
    pair.lastAnswerAt = now;
    if (pair.state === 'succeeded') return false;
    pair.state = 'succeeded';
    return true;
  }

  /** The best valid pair by path kind (LAN, then direct, then relay) and then priority, optionally among some. */
  bestValid(accept: (p: Pair) => boolean = () => true): Pair | undefined {
    let best: Pair | undefined;
    for (const p of this.ordered) {
      if (p.state !== 'succeeded' || !accept(p)) continue;
      if (!best || PATH_RANK[p.path] < PATH_RANK[best.path]) best = p;
    }
    return best;
  }
}

/**
 * Whether ordinary (scheduled) checks go out on `p`: while checking, every pair for the controlling side (it keeps
 * nominating) and the pairs not yet valid for the controlled side; once a path is selected (session mode), every
 * pair, on the slower schedule of `nextCheckAt`. Never a frozen pair, nor one whose checks are spent.
 */
export function wantsCheck(p: Pair, phase: 'checking' | 'connected' | 'other', controlling: boolean): boolean {
  if (p.state === 'frozen' || p.nextCheckAt === Infinity) return false;
  if (phase === 'connected') return true;
  if (phase !== 'checking') return false;
  return controlling || p.state !== 'succeeded';
}

/**
 * When the next ordinary check on `p` is due after one at `now`: the per-pair back-off while checking; consent
 * checks for valid pairs and slow retries for the others once a path is selected; never again for a predicted
 * candidate whose checks are spent (it waits for the partner's probe).
 */
export function nextCheckAt(p: Pair, now: number, phase: 'checking' | 'connected', timing: Pick<PunchTiming, 'predictedChecks' | 'consentIntervalMs' | 'upgradeCheckMs'>, backoff: Backoff): number {
  if (p.remote.kind === 'predicted' && p.state !== 'succeeded' && p.checks >= timing.predictedChecks) return Infinity;
  if (phase === 'connected') return now + (p.state === 'succeeded' ? timing.consentIntervalMs : timing.upgradeCheckMs);
  return backoff.nextAt(now, p.checks);
}

/** Path kinds in order of preference. */
export const PATH_RANK: Readonly<Record<PunchPath, number>> = { lan: 0, direct: 1, relay: 2 };
