/**
 * Nomination: which pair becomes the path. Two strategies, as pion/ice's `controllingSelector` and
 * `controlledSelector` (selection.go), with Burrow's aggressive nomination.
 *
 * Controlling (the side whose name sorts first): every check on a *nominatable* pair carries NOMINATE. A pair is
 * nominatable once the acceptance wait for its kind of path has passed since checks began (pion's
 * `isNominatable` with per-type `*AcceptanceMinWait`), and while no pair of a better kind is valid:
 *
 *   | path   | wait                                                        | why                                   |
 *   |--------|-------------------------------------------------------------|---------------------------------------|
 *   | lan    | 0                                                           | the best path there is                |
 *   | direct | 0, or `lanGraceMs` (25 ms) when both sides share a NAT and  | behind one NAT, give the LAN a head   |
 *   |        | LAN pairs exist                                             | start (NATs rarely hairpin)           |
 *   | relay  | `relayWaitMs` (500 ms, at most 1 s)                         | a direct path usually validates within|
 *   |        |                                                             | a few round trips; a relay costs      |
 *
 * The first nominated pair the controlled side accepts wins; in session mode a better pair that validates later is
 * nominated in turn (an upgrade), and both sides move to it once it is accepted.
 *
 * Controlled: accepts the first nominated pair that is valid for it; a nomination on a pair it has not validated yet
 * is remembered and accepted the moment its own check on that pair is answered (RFC 8445 section 7.3.1.5).
 */
import { PATH_RANK, type Pair } from './checklist.js';
import type { PunchPath, PunchTiming } from './types.js';

/** How long after checks begin a path of this kind may be nominated. */
export function acceptanceWait(path: PunchPath, timing: Pick<PunchTiming, 'lanGraceMs' | 'relayWaitMs'>, lanPreferred: boolean): number {
  switch (path) {
    case 'lan':
      return 0;
    case 'direct':
      return lanPreferred ? timing.lanGraceMs : 0;
    case 'relay':
      return timing.relayWaitMs;
    default: {
      const never: never = path;
      throw new Error(`unknown path ${String(never)}`);
    }
  }
}

export interface NominationContext {
  readonly checkStartedAt: number;
  /** Both sides behind one public address, with LAN pairs to try. */
  readonly lanPreferred: boolean;
  readonly pairs: readonly Pair[];
}

export class ControllingSelector {
  constructor(private readonly timing: Pick<PunchTiming, 'lanGraceMs' | 'relayWaitMs'>) {}

  /** Whether a check on `pair` at `now` carries NOMINATE. */
  nominates(pair: Pair, now: number, ctx: NominationContext): boolean {
    if (now < ctx.checkStartedAt + acceptanceWait(pair.path, this.timing, ctx.lanPreferred)) return false;
    const rank = PATH_RANK[pair.path];
    for (const q of ctx.pairs) if (q.state === 'succeeded' && PATH_RANK[q.path] < rank) return false;
    return true;
  }

  /** The next instant after `now` at which an acceptance wait ends (so the timer can nominate right then). */
  nextWaitEnd(now: number, ctx: NominationContext): number | undefined {
    let next: number | undefined;
    for (const path of ['direct', 'relay'] as const) {
      const end = ctx.checkStartedAt + acceptanceWait(path, this.timing, ctx.lanPreferred);
      if (end > now && ctx.pairs.some((p) => p.path === path) && (next === undefined || end < next)) next = end;
    }
    return next;
  }
}

export class ControlledSelector {
  /** The key of a pair the partner nominated before we validated it. */
  private pending: string | undefined;

  /** The partner nominated `pair`: accept it now if valid for us, else remember it. */
  onNominated(pair: Pair): 'accept' | 'pending' {
    if (pair.state === 'succeeded') return 'accept';
    this.pending = pair.key;
    return 'pending';
  }

  /** Our check on `pair` was answered: accept it if the partner nominated it meanwhile. */
  onValidated(pair: Pair): boolean {
    if (this.pending !== pair.key) return false;
    this.pending = undefined;
    return true;
  }

  reset(): void {
    this.pending = undefined;
  }
}
