/**
 * A server process's machine: a `ServerCore` together with the `SharedState` it asks, and the executor between
 * them. The core emits `effect` actions (src/server/core.ts explains why); this carries each out against the
 * shared state and feeds the answer back in, so a driver sees only I/O actions (sends, stream writes, events).
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
import type { SharedState } from './shared.js';
import type { Awaitable, Effect, EffectOp, EffectResults, Push, ServerAction, ServerInput } from './types.js';

export interface ServerMachineOptions {
  readonly shared: SharedState;
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
    const listening = options.shared.router.listen(core.serverId, (push) => {
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

  get shared(): SharedState {
    return this.options.shared;
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
        let result: Awaitable<EffectResults[EffectOp]>;
        try {
          result = executeEffect(this.options.shared, a.effect);
        } catch (err) {
          queue.push(this.core.handle({ type: 'effect-failed', ticket: a.ticket, reason: describe(err), now }));
          continue;
        }
        if (!isPromiseLike(result)) {
          queue.push(this.core.handle({ type: 'effect-done', ticket: a.ticket, result, now }));
          continue;
        }
        const ticket = a.ticket;
        result.then(
          (value) => {
            this.later({ type: 'effect-done', ticket, result: value, now: this.options.now() });
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

/** Carries out one effect against `shared` (also used by the primary of a multi-process server for its workers). */
export function executeEffect(s: SharedState, effect: Effect): Awaitable<EffectResults[EffectOp]> {
  switch (effect.op) {
    case 'replay':
      return s.replays.checkAndInsert(effect.fingerprint, effect.now);
    case 'register':
      return s.store.register(effect.registration, effect.now);
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
