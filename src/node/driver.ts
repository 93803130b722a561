/**
 * `runMachine()`: the one driver loop for every sans-IO client machine (src/core/machine.ts): the punch agent, the
 * STUN client, the TCP punch. It feeds the machine inputs (start, datagrams from each transport, the timer, transport
 * closures, and whatever its caller learns asynchronously), executes the actions it returns, owns the one timer,
 * honours the AbortSignal, and settles exactly once: it waits until every datagram the machine sent has left (a CLOSE
 * to the partner, an outcome report to the server), then closes the transports, then resolves or rejects. A caller
 * that hands the local port to another program can do so the moment the promise settles.
 *
 * Machine-specific actions (the TCP punch's `connect`, say) go to `onAction`; their outcomes come back through
 * `feed`.
 */
import type { ClientMachine, DriverAction, DriverInput, TransportId } from '../core/machine.js';
import { BurrowError } from '../errors.js';
import type { DatagramTransport } from './transport.js';

export interface RunOptions<I, X, R, E> {
  /** The transports the machine names in its `send` actions, by id. Closed when the run settles. */
  readonly transports: Readonly<Record<TransportId, DatagramTransport>>;
  readonly signal?: AbortSignal | undefined;
  readonly onEvent?: ((event: E) => void) | undefined;
  /** The machine's own actions (anything but send, event, done and fail); `run` feeds their outcomes back. */
  readonly onAction?: ((action: X, run: MachineRun<R, I | DriverInput>) => void) | undefined;
  /** The clock; default Date.now. */
  readonly now?: () => number;
}

export interface MachineRun<R, I> {
  /** Settles once the machine is done or failed (or the signal aborted, or a transport failed). */
  readonly result: Promise<R>;
  /** Feeds an input learnt outside the loop (an asynchronous outcome); ignored once settled. */
  feed(input: I): void;
  /** Adds a transport at run time (a relay allocation); tell the machine with an input of its own. */
  attach(id: TransportId, transport: DatagramTransport): void;
  /** Closes and forgets a transport the machine retired itself (a birthday socket that lost). */
  detach(id: TransportId): void;
  /** Ends the run with `error` (something the driver learnt that no retry can mend). */
  fail(error: unknown): void;
  readonly settled: boolean;
}

type Outcome<R> = { readonly ok: true; readonly value: R } | { readonly ok: false; readonly error: unknown };

const DRIVER_ACTIONS = new Set(['send', 'event', 'done', 'fail']);

export function runMachine<I extends { readonly type: string }, X extends { readonly type: string }, R, E>(
  machine: ClientMachine<I | DriverInput, DriverAction<R, E> | X>,
  options: RunOptions<I, X, R, E>,
): MachineRun<R, I | DriverInput> {
  const clock = options.now ?? Date.now;
  const transports = new Map<TransportId, DatagramTransport>();
  let timer: NodeJS.Timeout | undefined;
  let settled = false;
  let inFlight = 0;
  let closing: (() => void) | undefined;
  let resolveRun: (value: R) => void = () => undefined;
  let rejectRun: (error: unknown) => void = () => undefined;
  const result = new Promise<R>((resolve, reject) => {
    resolveRun = resolve;
    rejectRun = reject;
  });

  const settle = (outcome: Outcome<R>): void => {
    if (settled) return;
    settled = true;
    if (timer) clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    const finish = (): void => {
      // Last attached first: a relay allocation sends its deallocation through the socket it shares before that closes.
      const closeAll = async (): Promise<void> => {
        for (const t of [...transports.values()].reverse()) await t.close();
      };
      void closeAll().then(() => {
        if (outcome.ok) resolveRun(outcome.value);
        else rejectRun(outcome.error);
      });
    };
    // Close only after the last datagrams (a CLOSE to the partner, the outcome report) have left.
    if (inFlight === 0) finish();
    else closing = finish;
  };

  const sent = (): void => {
    inFlight--;
    if (inFlight === 0 && closing) {
      const close = closing;
      closing = undefined;
      close();
    }
  };

  const execute = (actions: readonly (DriverAction<R, E> | X)[]): void => {
    for (const action of actions) {
      if (!DRIVER_ACTIONS.has(action.type)) {
        options.onAction?.(action as X, run);
        continue;
      }
      const a = action as DriverAction<R, E>;
      switch (a.type) {
        case 'send': {
          const t = transports.get(a.transport);
          if (!t) break; // a transport that went away: like a lost datagram
          inFlight++;
          t.send(a.to, a.data, sent);
          break;
        }
        case 'event':
          options.onEvent?.(a.event);
          break;
        case 'done':
          settle({ ok: true, value: a.result });
          break;
        case 'fail':
          settle({ ok: false, error: a.error });
          break;
        default: {
          const never: never = a;
          throw new Error(`unknown action ${String(never)}`);
        }
      }
    }
    if (settled) return;
    if (timer) clearTimeout(timer);
    timer = undefined;
    const at = machine.nextTimeoutAt();
    if (at !== undefined) {
      timer = setTimeout(() => {
        feed({ type: 'timer', now: clock() });
      }, Math.max(0, at - clock()));
    }
  };

  const feed = (input: I | DriverInput): void => {
    if (settled) return;
    let actions: (DriverAction<R, E> | X)[];
    try {
      actions = machine.handle(input);
    } catch (err) {
      // A machine never throws on bad input; this is a bug, and it must not escape a socket handler.
      settle({ ok: false, error: err });
      return;
    }
    execute(actions);
  };

  const attach = (id: TransportId, t: DatagramTransport): void => {
    transports.set(id, t);
    t.listen({
      onDatagram: (from, data) => {
        feed({ type: 'datagram', transport: id, from, data, now: clock() });
      },
      onError: (err) => {
        settle({ ok: false, error: BurrowError.socket(`${t.description} failed`, err) });
      },
      onClosed: (reason) => {
        feed({ type: 'transport-closed', transport: id, reason, now: clock() });
      },
    });
    if (settled && !closing) void t.close();
  };

  // Cancelled: the machine says its last words first (a punch withdraws its registration), then fails; the driver sends
  // them before it closes the transports. A machine that does not end on `abort` is ended here.
  const onAbort = (): void => {
    feed({ type: 'abort', now: clock() });
    settle({ ok: false, error: BurrowError.aborted() });
  };

  const detach = (id: TransportId): void => {
    const t = transports.get(id);
    if (!t) return;
    transports.delete(id);
    void t.close();
  };

  const run: MachineRun<R, I | DriverInput> = {
    result,
    feed,
    attach,
    detach,
    fail: (error) => {
      settle({ ok: false, error });
    },
    get settled() {
      return settled;
    },
  };
  for (const [id, t] of Object.entries(options.transports)) attach(id, t);
  if (options.signal?.aborted) settle({ ok: false, error: BurrowError.aborted() });
  else {
    options.signal?.addEventListener('abort', onAbort, { once: true });
    feed({ type: 'start', now: clock() });
  }
  return run;
}
