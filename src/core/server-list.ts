/**
 * Several rendezvous servers of one deployment (issue 12): which one a client talks to now, and when it moves to the
 * next. One implementation for every command: the rendezvous client (punch over UDP; pipe, send and receive over TCP)
 * and WireGuard discovery's WG-SYNC client.
 *
 * Sans-IO, time injected. The owner says when a request went to the current server (`sent`), when the server answered
 * (`answered`), and when it learnt the server is gone (`lost`: its TCP connection closed or was refused); it asks
 * `advance(now)` whether to move on. The rule:
 *  - a server that leaves every request unanswered for `failoverMs` (default 3 s) is left for the next one;
 *  - a server known gone is left at once, but never sooner than `lostGapMs` after the previous move, so a list of
 *    servers that all refuse is walked at a bounded pace rather than in a loop;
 *  - after the last server comes the first again (a server that was down may be back);
 *  - with one server there is nothing to move to: `advance` never moves.
 * Both peers need not pick the same server: the servers share their registrations (docs/protocol.md §11).
 */
import { sameEndpoint, type Endpoint } from '../codec/address.js';

/**
 * How long the current server may leave every request unanswered before we move to the next (a few of the waiting
 * refreshes; long enough for a lost datagram or two, short enough for a peer waiting for us).
 */
export const DEFAULT_FAILOVER_MS = 3000;

/** The least time between two moves caused by a server known gone (refused or closed connections). */
export const LOST_FAILOVER_GAP_MS = 1000;

export interface ServerMove {
  readonly from: Endpoint;
  readonly to: Endpoint;
}

export class ServerList {
  /** The servers in order, without repeats; the first is where we start. */
  readonly all: readonly Endpoint[];
  private index = 0;
  /** When the first request still unanswered by the current server went out. */
  private unansweredSince: number | undefined;
  /** Since when the current server is known gone (undefined: not known). */
  private lostSince: number | undefined;
  private lastMoveAt = -Infinity;

  constructor(
    servers: readonly Endpoint[],
    private readonly failoverMs = DEFAULT_FAILOVER_MS,
    private readonly lostGapMs = LOST_FAILOVER_GAP_MS,
  ) {
    const unique: Endpoint[] = [];
    for (const s of servers) if (!unique.some((u) => sameEndpoint(u, s))) unique.push(s);
    if (unique.length === 0) throw new RangeError('a server list needs at least one server');
    this.all = unique;
  }

  /** The server we talk to now. */
  get current(): Endpoint {
    return this.all[this.index] ?? (this.all[0] as Endpoint);
  }

  /** Whether there is another server to move to. */
  get several(): boolean {
    return this.all.length > 1;
  }

  /** Whether `from` is the current server. */
  isCurrent(from: Endpoint): boolean {
    return sameEndpoint(from, this.current);
  }

  /** A request went to the current server at `now` (the first unanswered one starts the failover clock). */
  sent(now: number): void {
    this.unansweredSince ??= now;
  }

  /** The current server answered (whatever it said): it is alive. */
  answered(): void {
    this.unansweredSince = undefined;
    this.lostSince = undefined;
  }

  /** The current server is known gone (its connection closed or was refused): move on as soon as allowed. */
  lost(now: number): void {
    this.lostSince ??= now;
  }

  /** When `advance` would move next, if nothing is answered before; undefined with one server or nothing pending. */
  dueAt(): number | undefined {
    if (!this.several) return undefined;
    let at = Infinity;
    if (this.unansweredSince !== undefined) at = this.unansweredSince + this.failoverMs;
    if (this.lostSince !== undefined) at = Math.min(at, Math.max(this.lostSince, this.lastMoveAt + this.lostGapMs));
    return at === Infinity ? undefined : at;
  }

  /** Moves to the next server when the current one is due to be left; returns the move, or undefined. */
  advance(now: number): ServerMove | undefined {
    const due = this.dueAt();
    if (due === undefined || now < due) return undefined;
    const from = this.current;
    this.index = (this.index + 1) % this.all.length;
    this.unansweredSince = undefined;
    this.lostSince = undefined;
    this.lastMoveAt = now;
    return { from, to: this.current };
  }
}
