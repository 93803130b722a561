/**
 * A server process's machine: a `ServerCore` together with the executor of its effects. The core emits `effect`
 * actions (src/server/core.ts explains why); this carries each out (an `EffectRunner`, normally against a
 * `SharedState`) and feeds the answer back in, so a driver sees only I/O actions (sends, stream writes, events).
 *
 *  - Answers that come at once (the in-memory implementations) are fed back within the same `handle` call: one
 *    input returns everything it causes, and a whole server can be driven synchronously with a fake clock.
 *  - Answers that come later (IPC to the primary of a multi-process server, Redis) are fed back when they arrive;
 *    what they cause goes to `onLater`.
 *  - The machine listens on the router for the pushes addressed to its server and feeds them in as `push` inputs.
 *
 * Still sans-IO: nothing here touches a socket or a timer; the one clock is injected.
 */
import type { ServerCore } from './core.js';
import type { Router } from './router.js';
import type { SharedState } from './shared.js';
import type { Awaitable, Effect, EffectOp, EffectResults, Guard, Push, ServerAction, ServerInput } from './types.js';
import type { ReplayVerdict } from './replay.js';

/** How an effect ended: carried out (`value`), or refused by its replay guard. */
export type EffectOutcome = { readonly value: EffectResults[EffectOp] } | { readonly refused: Exclude<ReplayVerdict, 'fresh'> };

/**
 * Carries out the core's effects. `sharedStateRunner` asks a `SharedState` in this process (in memory, or a Redis
 * client); a worker of a multi-process server ships each effect to its primary instead (src/node/server-ipc.ts),
 * which carries it out with `sharedStateRunner` — one message per effect, guard included.
 */
export interface EffectRunner {
  run(effect: Effect, guard: Guard | undefined): Awaitable<EffectOutcome>;
}

export function sharedStateRunner(shared: SharedState): EffectRunner {
  return {
    run(effect, guard) {
      if (!guard) return then(executeEffect(shared, effect), (value) => ({ value }));
      const combined = shared.guarded?.(effect, guard);
      if (combined !== undefined) return combined;
      // The replay guard first, then (only if fresh) the effect: one step for the caller.
      return then(shared.replays.checkAndInsert(guard.fingerprint, guard.now, guard.timestamp), (verdict): Awaitable<EffectOutcome> =>
        verdict === 'fresh' ? then(executeEffect(shared, effect), (value) => ({ value })) : { refused: verdict });
    },
  };
}

/** `f(value)`, at once for a plain value, after it for a promise. */
function then<T, U>(value: Awaitable<T>, f: (v: T) => Awaitable<U>): Awaitable<U> {
  return isPromiseLike(value) ? Promise.resolve(value).then(f) : f(value);
}

export interface ServerMachineOptions {
  readonly runner: EffectRunner;
  /** Where the machine listens for the pushes addressed to its server. */
  readonly router: Pick<Router, 'listen'>;
  /** The time for inputs the machine makes itself: late answers, pushes delivered from elsewhere. */
  readonly now: () => number;
  /** Actions caused by answers that arrived after `handle` returned, or by pushes delivered from elsewhere. */
  readonly onLater: (actions: ServerAction[]) => void;
}

export class ServerMachine {
  /** Settles when the machine listens for its server's pushes (at once for the in-memory router). */
  readonly ready: Promise<void>;
  private sink: ServerAction[] | undefined;
  /** The time of the input being handled (a push delivered meanwhile takes it). */
  private inputNow = 0;
  private stopListening: (() => void) | undefined;
  private closed = false;

  constructor(
    readonly core: ServerCore,
    private readonly options: ServerMachineOptions,
  ) {
    const listening = options.router.listen(core.serverId, (push) => {
      this.deliver(push);
    });
    if (isPromiseLike(listening)) {
      this.ready = Promise.resolve(listening).then((stop) => {
        if (this.closed) stop();
        else this.stopListening = stop;
      });
    } else {
      this.stopListening = listening;
      this.ready = Promise.resolve();
    }
  }

  /** Feeds `input`; returns the I/O actions it causes now (answers that come later go to `onLater`). */
  handle(input: ServerInput): ServerAction[] {
    const io: ServerAction[] = [];
    const outer = this.sink;
    const outerNow = this.inputNow;
    this.sink = io;
    this.inputNow = input.now;
    try {
      this.run(this.core.handle(input), input.now, io);
    } finally {
      this.sink = outer;
      this.inputNow = outerNow;
    }
    return io;
  }

  nextTimeoutAt(): number | undefined {
    return this.core.nextTimeoutAt();
  }

  /** Stops listening for pushes; answers that arrive afterwards are dropped. */
  close(): void {
    this.closed = true;
    this.stopListening?.();
    this.stopListening = undefined;
  }

  private deliver(push: Push): void {
    if (this.closed) return;
    const actions = this.handle({ type: 'push', push, now: this.sink ? this.inputNow : this.options.now() });
    if (this.sink) this.sink.push(...actions);
    else if (actions.length > 0) this.options.onLater(actions);
  }

  /** Carries out `actions`: I/O goes to `io`; effects are executed, and immediate answers fed back in, in order. */
  private run(actions: ServerAction[], now: number, io: ServerAction[]): void {
    if (!actions.some((a) => a.type === 'effect')) {
      // The common case (a Binding, junk): nothing to carry out.
      for (const a of actions) io.push(a);
      return;
    }
    const queue: ServerAction[][] = [actions];
    for (let i = 0; i < queue.length; i++) {
      for (const a of queue[i] ?? []) {
        if (a.type !== 'effect') {
          io.push(a);
          continue;
        }
        let outcome: Awaitable<EffectOutcome>;
        try {
          outcome = this.options.runner.run(a.effect, a.guard);
        } catch (err) {
          queue.push(this.core.handle({ type: 'effect-failed', ticket: a.ticket, reason: describe(err), now }));
          continue;
        }
        if (!isPromiseLike(outcome)) {
          queue.push(this.core.handle(answerInput(a.ticket, outcome, now)));
          continue;
        }
        const ticket = a.ticket;
        outcome.then(
          (o) => {
            this.later(answerInput(ticket, o, this.options.now()));
          },
          (err: unknown) => {
            this.later({ type: 'effect-failed', ticket, reason: describe(err), now: this.options.now() });
          },
        );
      }
    }
  }

  private later(input: ServerInput): void {
    if (this.closed) return;
    const actions = this.handle(input);
    if (actions.length > 0) this.options.onLater(actions);
  }
}

function answerInput(ticket: number, outcome: EffectOutcome, now: number): ServerInput {
  return 'refused' in outcome ? { type: 'effect-refused', ticket, verdict: outcome.refused, now } : { type: 'effect-done', ticket, result: outcome.value, now };
}

/** Carries out one effect against `shared`. */
export function executeEffect(s: SharedState, effect: Effect): Awaitable<EffectResults[EffectOp]> {
  switch (effect.op) {
    case 'register':
      return s.store.register(effect.registration, effect.now, effect.refresh === true);
    case 'lookup':
      return s.store.lookup(effect.network, effect.name, effect.now);
    case 'withdraw':
      return s.store.withdraw(effect.network, effect.name, effect.nonce, effect.owner, effect.now);
    case 'deliver':
      return s.router.deliver(effect.push);
    case 'wg-announce':
      return s.wg.announce(effect.network, effect.key, effect.facts, effect.now);
    case 'wg-lookup':
      return s.wg.lookup(effect.network, effect.keys, effect.now);
    case 'wg-endpoint':
      return s.wg.setEndpoint(effect.network, effect.key, effect.endpoint, effect.now);
  }
}

export function isPromiseLike<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
