/**
 * What every process of a rendezvous server does around its `ServerMachine` (src/server/machine.ts): feeds it inputs
 * with the wall clock, carries out the actions it returns, and keeps one timer armed at `nextTimeoutAt()`. Used by
 * the single process, the primary and each worker (src/node/server.ts, src/node/cluster.ts).
 */
import { randomBytes } from 'node:crypto';
import type { ServerMachine } from '../server/machine.js';
import type { ServerAction, ServerInput } from '../server/types.js';

export class MachineRunner {
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private armScheduled = false;
  private stopped = false;

  constructor(
    private readonly machine: ServerMachine,
    private readonly execute: (actions: ServerAction[]) => void,
    /** A bug: the core threw. Reported, never fatal: one input must not take the server down. */
    private readonly onInternalError: (err: unknown) => void,
  ) {}

  /** Feeds one input and carries out what it causes. Never throws. */
  feed(input: ServerInput): void {
    try {
      this.execute(this.machine.handle(input));
    } catch (err) {
      this.onInternalError(err);
    }
    this.poke();
  }

  /** Actions that came later (answers from the shared state); carried out, then the timer is checked. */
  later(actions: ServerAction[]): void {
    try {
      this.execute(actions);
    } catch (err) {
      this.onInternalError(err);
    }
    this.poke();
  }

  /** Re-arms the timer once the current task is done (inputs arrive in bursts; once per burst is enough). */
  poke(): void {
    if (this.armScheduled || this.stopped) return;
    this.armScheduled = true;
    queueMicrotask(() => {
      this.armScheduled = false;
      this.arm();
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    if (this.stopped) return;
    const at = this.machine.nextTimeoutAt();
    if (at === undefined || at >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.feed({ type: 'timer', now: Date.now() });
    }, Math.max(0, at - Date.now()));
    this.timer.unref();
  }
}

/** Random bytes drawn 4 KiB at a time: one call into the CSPRNG per ~340 pushed introductions, not one each. */
export function pooledRandomBytes(): (n: number) => Uint8Array {
  let pool = Buffer.alloc(0);
  let at = 0;
  return (n) => {
    if (at + n > pool.length) {
      pool = randomBytes(Math.max(4096, n));
      at = 0;
    }
    at += n;
    return pool.subarray(at - n, at);
  };
}
