/**
 * The core's side of its requests to the shared state: each request gets a ticket and a continuation, and waits
 * here — bounded in number and in time — until its answer arrives as an input. Continuations run inside a later
 * `handle()` call, with that call's time and output.
 */
import type { Output } from './channels.js';
import type { ReplayVerdict } from './replay.js';
import type { Effect, EffectOp, EffectResults, Guard } from './types.js';

export type EffectAnswer<K extends EffectOp> =
  | { readonly kind: 'done'; readonly value: EffectResults[K] }
  /** A guarded effect whose request was a replay (or the replay guard was full): not carried out. */
  | { readonly kind: 'refused'; readonly verdict: Exclude<ReplayVerdict, 'fresh'> }
  | { readonly kind: 'failed'; readonly reason: string };

type Resume = (answer: EffectAnswer<EffectOp>, out: Output, now: number) => void;

interface Waiting {
  readonly op: EffectOp;
  readonly deadline: number;
  readonly resume: Resume;
}

export class EffectTable {
  private nextTicket = 1;
  /** In request order; with one timeout for all, that is deadline order too. */
  private readonly waiting = new Map<number, Waiting>();

  constructor(
    private readonly max: number,
    private readonly timeoutMs: number,
  ) {}

  get size(): number {
    return this.waiting.size;
  }

  /**
   * Asks for `effect` (only if `guard` is fresh, when given); `resume` gets its answer later. Returns false, asking
   * nothing, when too many requests are in flight already.
   */
  request<K extends EffectOp>(effect: Extract<Effect, { op: K }>, guard: Guard | undefined, now: number, out: Output, resume: (answer: EffectAnswer<K>, out: Output, now: number) => void): boolean {
    if (this.waiting.size >= this.max) return false;
    const ticket = this.nextTicket;
    this.nextTicket = ticket >= 0x7fffffff ? 1 : ticket + 1;
    // The runner answers each op with its own result type (src/server/machine.ts); the table is keyed by ticket.
    this.waiting.set(ticket, { op: effect.op, deadline: now + this.timeoutMs, resume: resume as Resume });
    out.effect(ticket, effect, guard);
    return true;
  }

  /** The answer to `ticket`; returns its op, or undefined when nothing waits for it (late, after its deadline). */
  answer(ticket: number, answer: EffectAnswer<EffectOp>, out: Output, now: number): EffectOp | undefined {
    const w = this.waiting.get(ticket);
    if (!w) return undefined;
    this.waiting.delete(ticket);
    w.resume(answer, out, now);
    return w.op;
  }

  /** Fails every request past its deadline; returns their ops. */
  expire(now: number, out: Output): EffectOp[] {
    const ops: EffectOp[] = [];
    for (const [ticket, w] of this.waiting) {
      if (w.deadline > now) break;
      this.waiting.delete(ticket);
      ops.push(w.op);
      w.resume({ kind: 'failed', reason: `no answer within ${this.timeoutMs} ms` }, out, now);
    }
    return ops;
  }

  /** The earliest deadline, if anything waits. */
  nextDeadline(): number | undefined {
    for (const w of this.waiting.values()) return w.deadline;
    return undefined;
  }
}
