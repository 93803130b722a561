/**
 * A multi-process rendezvous server (`burrow serve --workers N`, `startServer({ workers: N })`).
 *
 * Node 20's dgram cannot set SO_REUSEPORT, so the processes share one socket instead: the primary binds
 * the main UDP port and hands the socket to N forked workers (child_process handle passing), then closes
 * its own copy, so only the workers read it; the kernel gives each datagram to one of them.
 *
 * - Stateless traffic, STUN Binding, is answered by whichever worker reads it.
 * - Stateful traffic, REGISTER, must meet in one place so that partners find each other and the replay
 *   cache sees every message: a worker rate-limits and frames it (ServerCore with
 *   `forwardRegistrations`), then forwards it over IPC to the primary, whose ServerCore owns every
 *   registration. The primary's answers and INTRODUCE pushes go back over IPC to a worker, which sends
 *   them through the shared socket (same address and port, so NATs and clients cannot tell).
 * - The per-source rate limit and the STUN excess budget are split among the processes that apply them
 *   (see `splitLimits`), so the server as a whole never exceeds them.
 * - The alternate port and TCP rendezvous stay in the primary (little traffic, and TCP is stateful).
 *
 * Lifecycle: `close()` asks every worker to stop and waits for it (SIGKILL after 5 s); a worker also
 * stops when its IPC channel closes (the primary died). A worker that exits on its own is reported
 * through `onUnexpectedExit`; the server then stops as a whole (fail-stop, so a supervisor restarts it)
 * rather than run on with part of its capacity.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import type dgram from 'node:dgram';
import { fileURLToPath } from 'node:url';
import type { Endpoint, Family } from '../codec/address.js';
import { BurrowError } from '../errors.js';
import { ServerCore, type ServerLimits, type ServerSocketId, type ServerStats } from '../server/core.js';
import { endpointOf, sendUdpNoCallback, type BoundSocket } from './udp.js';

const WORKER_ENTRY = fileURLToPath(new URL('./server-worker.js', import.meta.url));
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const STATS_INTERVAL_MS = 1_000;

interface Datagram {
  readonly address: string;
  readonly port: number;
  readonly data: Uint8Array;
}

type ToWorker =
  | { readonly type: 'init'; readonly family: Family; readonly dualStack: boolean; readonly local: Endpoint; readonly limits: ServerLimits }
  | { readonly type: 'send'; readonly batch: readonly Datagram[] }
  | { readonly type: 'close' };

type FromWorker =
  | { readonly type: 'ready' }
  | { readonly type: 'forward'; readonly socket: ServerSocketId; readonly batch: readonly Datagram[] }
  | { readonly type: 'stats'; readonly stats: ServerStats };

/**
 * Limits for each of `processes` processes that apply them, so that their sum is the configured limit.
 * Bursts keep at least one token so that a source can always be heard.
 */
export function splitLimits(limits: ServerLimits, processes: number): ServerLimits {
  return {
    ...limits,
    perSourceRate: limits.perSourceRate / processes,
    perSourceBurst: Math.max(1, Math.floor(limits.perSourceBurst / processes)),
    stunExcessBytesPerSecond: limits.stunExcessBytesPerSecond / processes,
    stunExcessBurst: Math.floor(limits.stunExcessBurst / processes),
  };
}

export interface WorkerPoolOptions {
  readonly count: number;
  /** The bound main socket; the pool hands it to the workers. */
  readonly main: BoundSocket;
  /** Each worker's share of the limits (see `splitLimits`). */
  readonly limits: ServerLimits;
  /** A REGISTER a worker read, for the primary's ServerCore. */
  readonly onForward: (socket: ServerSocketId, from: Endpoint, data: Uint8Array) => void;
  /** A worker exited without being asked to. */
  readonly onUnexpectedExit: (pid: number, code: number | null, signal: NodeJS.Signals | null) => void;
}

export interface WorkerPool {
  readonly pids: readonly number[];
  /** Sends a datagram through the shared main socket (via a worker; batched per event-loop turn). */
  send(to: Endpoint, data: Uint8Array): void;
  /** The workers' counters as last reported (every second, and when they stop). */
  stats(): readonly ServerStats[];
  close(): Promise<void>;
}

interface Worker {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  stats: ServerStats | undefined;
  queue: Datagram[];
}

export async function startWorkerPool(options: WorkerPoolOptions): Promise<WorkerPool> {
  const workers: Worker[] = [];
  let closing = false;
  const stopAll = async (): Promise<void> => {
    closing = true;
    await Promise.all(workers.map(async (w) => {
      if (w.child.exitCode === null && w.child.signalCode === null) {
        if (w.child.connected) w.child.send({ type: 'close' } satisfies ToWorker);
        else w.child.kill('SIGTERM');
      }
      const timer = setTimeout(() => w.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await w.exited;
      clearTimeout(timer);
    }));
  };
  try {
    const ready: Promise<void>[] = [];
    for (let i = 0; i < options.count; i++) {
      const child = fork(WORKER_ENTRY, [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const exited = new Promise<void>((resolve) => child.once('close', (code, signal) => {
        if (!closing) options.onUnexpectedExit(child.pid ?? -1, code, signal);
        resolve();
      }));
      const worker: Worker = { child, exited, stats: undefined, queue: [] };
      workers.push(worker);
      ready.push(new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new BurrowError('SOCKET', 'a server worker did not start within 10 s')); }, START_TIMEOUT_MS);
        child.on('message', (m: FromWorker) => {
          switch (m.type) {
            case 'ready':
              clearTimeout(timer);
              resolve();
              break;
            case 'forward':
              for (const d of m.batch) options.onForward(m.socket, { address: d.address, port: d.port }, d.data);
              break;
            case 'stats':
              worker.stats = m.stats;
              break;
          }
        });
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new BurrowError('SOCKET', `a server worker exited during start-up (code ${String(code)})`));
        });
        child.once('error', (err) => {
          clearTimeout(timer);
          reject(new BurrowError('SOCKET', `cannot start a server worker: ${err.message}`, { cause: err }));
        });
      }));
      const init: ToWorker = { type: 'init', family: options.main.family, dualStack: options.main.dualStack, local: options.main.local, limits: options.limits };
      child.send(init, options.main.socket);
    }
    await Promise.all(ready);
  } catch (err) {
    await stopAll();
    throw err;
  }

  let next = 0;
  let flushScheduled = false;
  const flush = (): void => {
    flushScheduled = false;
    for (const w of workers) {
      if (w.queue.length === 0) continue;
      const batch = w.queue;
      w.queue = [];
      if (w.child.connected) w.child.send({ type: 'send', batch } satisfies ToWorker);
    }
  };
  return {
    pids: workers.map((w) => w.child.pid ?? -1),
    send(to, data) {
      const live = workers.filter((w) => w.child.connected);
      const w = live[next++ % Math.max(1, live.length)];
      if (!w) return;
      w.queue.push({ address: to.address, port: to.port, data });
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    },
    stats: () => workers.flatMap((w) => (w.stats ? [w.stats] : [])),
    close: stopAll,
  };
}

/** Sums counters (the primary's and every worker's). */
export function sumStats(all: readonly ServerStats[]): ServerStats {
  const total = { ...all[0] } as Record<keyof ServerStats, number>;
  for (const s of all.slice(1)) {
    for (const k of Object.keys(total) as (keyof ServerStats)[]) total[k] += s[k];
  }
  return total;
}

/** The worker's side; src/node/server-worker.ts runs it in a forked process. */
export function runServerWorker(): void {
  const send = process.send?.bind(process);
  if (!send) throw new Error('a server worker must be started by startServer({ workers })');
  // Ctrl-C in a terminal signals the whole process group; the primary decides when workers stop.
  process.on('SIGINT', () => undefined);
  process.on('SIGHUP', () => undefined);
  let bound: BoundSocket | undefined;
  let core: ServerCore | undefined;
  let forwards: Datagram[] = [];
  let flushScheduled = false;
  const flush = (): void => {
    flushScheduled = false;
    if (forwards.length === 0 || !process.connected) return;
    send({ type: 'forward', socket: 'main', batch: forwards } satisfies FromWorker);
    forwards = [];
  };
  const report = (): void => {
    if (core && process.connected) send({ type: 'stats', stats: core.stats } satisfies FromWorker);
  };
  const statsTimer = setInterval(report, STATS_INTERVAL_MS);
  statsTimer.unref();
  const stop = (): void => {
    clearInterval(statsTimer);
    report();
    const s = bound?.socket;
    bound = undefined;
    if (!s) {
      process.disconnect();
      return;
    }
    s.close(() => {
      if (process.connected) process.disconnect();
    });
  };
  process.on('disconnect', () => {
    clearInterval(statsTimer);
    bound?.socket.close();
    bound = undefined;
  });
  process.on('message', (m: ToWorker, handle: unknown) => {
    switch (m.type) {
      case 'init': {
        const s = handle as dgram.Socket;
        const b: BoundSocket = { socket: s, family: m.family, dualStack: m.dualStack, local: m.local };
        const c = new ServerCore({ networks: [], limits: m.limits, seed: randomInt(0, 2 ** 31), randomBytes: (n) => randomBytes(n), forwardRegistrations: true });
        bound = b;
        core = c;
        s.on('error', () => undefined);
        s.on('message', (data, rinfo) => {
          try {
            for (const a of c.handleDatagram('main', endpointOf(rinfo), data, Date.now())) {
              switch (a.type) {
                case 'send':
                  sendUdpNoCallback(b, a.to, a.data);
                  break;
                case 'forward':
                  forwards.push({ address: a.from.address, port: a.from.port, data: a.data });
                  if (!flushScheduled) {
                    flushScheduled = true;
                    setImmediate(flush);
                  }
                  break;
                case 'send-stream':
                case 'close-stream':
                case 'event':
                  break; // a worker has no streams, and Binding and forwarding raise no events
              }
            }
          } catch {
            // The core never throws on input; this guard keeps even a bug from taking the worker down.
          }
        });
        send({ type: 'ready' } satisfies FromWorker);
        break;
      }
      case 'send': {
        const b = bound;
        if (b) for (const d of m.batch) sendUdpNoCallback(b, { address: d.address, port: d.port }, d.data);
        break;
      }
      case 'close':
        stop();
        break;
    }
  });
}
