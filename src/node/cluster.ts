/**
 * A multi-process rendezvous server (`burrow serve --workers N`, `startServer({ workers: N })`).
 *
 * Every worker is a whole server core: it reads the main UDP port, rate-limits, authenticates, answers Binding and
 * REGISTER, and pushes introductions — against the shared state (registrations, replay guard, router, WireGuard
 * registry, proof key), which the primary holds in memory and serves over IPC (src/node/server-ipc.ts). That is the
 * same interface a Redis store implements; with Redis, the workers would talk to it directly instead.
 *
 * How the workers share the main port:
 *  - native backend (the burrow_udp addon): each worker binds its own socket to the same address and port with
 *    SO_REUSEPORT, and the kernel spreads senders among them by a hash of their address and port;
 *  - dgram backend (no addon): Node 20's dgram cannot set SO_REUSEPORT, so the primary binds the socket and hands it
 *    to the workers (child_process handle passing); the kernel gives each datagram to whichever worker reads first.
 * Either way, a push or answer sent by any worker leaves from the same address and port.
 *
 * The primary keeps what is bound to one process: TCP rendezvous connections, the alternate port, and the
 * WireGuard handshake responder (its sessions hold keys and counters; the workers pass it WireGuard-shaped
 * datagrams, a few per interface per minute). Its own UDP sends on the main port go out through a worker.
 *
 * Limits: the per-source rate limit is split among the processes that apply it (`splitLimits`), so the server as a
 * whole never exceeds it.
 *
 * Lifecycle: `close()` asks every worker to stop and waits for it (SIGKILL after 5 s); a worker also stops when its
 * IPC channel closes (the primary died). A worker that exits on its own is reported through `onUnexpectedExit`; the
 * server then stops as a whole (fail-stop, so a supervisor restarts it) rather than run on with part of its
 * capacity.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import type dgram from 'node:dgram';
import { fileURLToPath } from 'node:url';
import type { Endpoint, Family } from '../codec/address.js';
import { deriveNetworkKeys } from '../crypto/keys.js';
import { BurrowError } from '../errors.js';
import type { CoreState } from '../server/core.js';
import { ServerCore } from '../server/core.js';
import type { RelayPolicy } from '../server/relay/config.js';
import type { ServerLimits } from '../server/config.js';
import { ServerMachine, sharedStateRunner, type EffectRunner } from '../server/machine.js';
import type { Router } from '../server/router.js';
import type { SharedState } from '../server/shared.js';
import { emptyStats, type ServerStats } from '../server/stats.js';
import type { ServerAction, ServerEvent, ServerSocketId } from '../server/types.js';
import { dgramPort, openDatagramPort, type DatagramPort } from './datagram-port.js';
import { exportPrivateKey, importKeyPair, IpcEffects, post, serveEffects } from './server-ipc.js';
import { MachineRunner, pooledRandomBytes } from './server-runtime.js';
import type { BoundSocket } from './udp.js';

const WORKER_ENTRY = fileURLToPath(new URL('./server-worker.js', import.meta.url));
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const STATS_INTERVAL_MS = 1_000;
/** Events a worker passes to the primary per event-loop turn; beyond it they are dropped (a flood of rejections). */
const MAX_EVENTS_PER_TURN = 256;

interface Datagram {
  readonly address: string;
  readonly port: number;
  readonly data: Uint8Array;
}

/** How a worker gets the main port. */
export type MainPortSpec =
  | { readonly kind: 'native'; readonly address: string; readonly port: number; readonly dualStack: boolean; readonly recvBufferSize: number }
  | { readonly kind: 'dgram'; readonly family: Family; readonly dualStack: boolean; readonly local: Endpoint };

type ToWorker =
  | {
      readonly type: 'init';
      readonly serverId: string;
      readonly secrets: readonly Uint8Array[];
      readonly proofKey: Uint8Array;
      readonly limits: ServerLimits;
      readonly alternate: Endpoint | undefined;
      readonly main: MainPortSpec;
      readonly relay: RelayPolicy | undefined;
      /** With Redis: the worker opens its own connection and is a server of its own over it (see `redis` below). */
      readonly redis: { readonly url: string; readonly prefix: string | undefined } | undefined;
    }
  | { readonly type: 'answers'; readonly batch: string }
  | { readonly type: 'send'; readonly batch: readonly Datagram[] }
  | { readonly type: 'networks'; readonly secrets: readonly Uint8Array[] }
  | { readonly type: 'close' };

type FromWorker =
  | { readonly type: 'ready' }
  | { readonly type: 'calls'; readonly batch: string }
  | { readonly type: 'wg'; readonly batch: readonly Datagram[] }
  | { readonly type: 'events'; readonly batch: readonly ServerEvent[] }
  | { readonly type: 'stats'; readonly stats: ServerStats; readonly state: CoreState };

/**
 * Limits for each of `processes` processes that apply them, so that their sum is the configured limit.
 * Bursts keep at least one token so that a source can always be heard.
 */
export function splitLimits(limits: ServerLimits, processes: number): ServerLimits {
  return {
    ...limits,
    perSourceRate: limits.perSourceRate / processes,
    perSourceBurst: Math.max(1, Math.floor(limits.perSourceBurst / processes)),
  };
}

export interface WorkerPoolOptions {
  readonly count: number;
  readonly serverId: string;
  readonly secrets: readonly Uint8Array[];
  /** The shared state the workers use, served from this process. */
  readonly shared: SharedState;
  /** The main port: bound here (dgram: handed over; native: the workers bind it again with SO_REUSEPORT). */
  readonly main: MainPortSpec;
  readonly mainHandle: BoundSocket | undefined;
  readonly alternate: Endpoint | undefined;
  /** Each worker's share of the limits (see `splitLimits`). */
  readonly limits: ServerLimits;
  /** The relay introductions offer (the built-in relay does not run in workers). */
  readonly relay?: RelayPolicy;
  /**
   * With Redis: each worker connects to it itself and runs as a server of its own id (`<serverId>.w<pid>`), owning the
   * UDP registrations it takes; pushes for them are PUBLISHed to that worker, which sends from the shared port. The
   * IPC link then carries only WireGuard packets, events and counters. One design for one machine and for many.
   */
  readonly redis?: { readonly url: string; readonly prefix: string | undefined };
  /** A WireGuard-shaped datagram a worker read, for this process's responder. */
  readonly onWireGuard: (socket: ServerSocketId, from: Endpoint, data: Uint8Array) => void;
  readonly onEvent: (event: ServerEvent) => void;
  /** A worker exited without being asked to. */
  readonly onUnexpectedExit: (pid: number, code: number | null, signal: NodeJS.Signals | null) => void;
}

export interface WorkerPool {
  readonly pids: readonly number[];
  /** Sends a datagram through the main port (via a worker; batched per event-loop turn). */
  send(to: Endpoint, data: Uint8Array): void;
  /** Passes new secrets to every worker (SIGHUP). */
  setSecrets(secrets: readonly Uint8Array[]): void;
  /** The workers' counters and table sizes as last reported (every second, and when they stop). */
  reports(): readonly { readonly pid: number; readonly stats: ServerStats; readonly state: CoreState | undefined }[];
  close(): Promise<void>;
}

interface Worker {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  stats: ServerStats;
  state: CoreState | undefined;
  queue: Datagram[];
}

export async function startWorkerPool(options: WorkerPoolOptions): Promise<WorkerPool> {
  const workers: Worker[] = [];
  let closing = false;
  const stopAll = async (): Promise<void> => {
    closing = true;
    await Promise.all(workers.map(async (w) => {
      if (w.child.exitCode === null && w.child.signalCode === null) {
        if (w.child.connected) post(w.child, { type: 'close' } satisfies ToWorker);
        else w.child.kill('SIGTERM');
      }
      const timer = setTimeout(() => w.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await w.exited;
      clearTimeout(timer);
    }));
  };
  const proofKey = exportPrivateKey(await options.shared.proofKey());
  const runner = sharedStateRunner(options.shared);
  try {
    const ready: Promise<void>[] = [];
    for (let i = 0; i < options.count; i++) {
      const child = fork(WORKER_ENTRY, [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const exited = new Promise<void>((resolve) => child.once('close', (code, signal) => {
        if (!closing) options.onUnexpectedExit(child.pid ?? -1, code, signal);
        resolve();
      }));
      // Write errors on a dying worker's channel (EPIPE) are not fatal: its exit is handled above.
      child.on('error', () => undefined);
      const worker: Worker = { child, exited, stats: emptyStats(), state: undefined, queue: [] };
      workers.push(worker);
      const serve = serveEffects(runner, (batch) => { post(child, { type: 'answers', batch } satisfies ToWorker); });
      ready.push(new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new BurrowError('SOCKET', 'a server worker did not start within 10 s')); }, START_TIMEOUT_MS);
        child.on('message', (m: FromWorker) => {
          switch (m.type) {
            case 'ready':
              clearTimeout(timer);
              resolve();
              break;
            case 'calls':
              serve(m.batch);
              break;
            case 'wg':
              for (const d of m.batch) options.onWireGuard('main', { address: d.address, port: d.port }, d.data);
              break;
            case 'events':
              for (const e of m.batch) options.onEvent(e);
              break;
            case 'stats':
              worker.stats = m.stats;
              worker.state = m.state;
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
      const init: ToWorker = { type: 'init', serverId: options.serverId, secrets: options.secrets, proofKey, limits: options.limits, alternate: options.alternate, main: options.main, redis: options.redis, relay: options.relay };
      if (options.main.kind === 'dgram' && options.mainHandle) child.send(init, options.mainHandle.socket);
      else child.send(init);
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
      post(w.child, { type: 'send', batch } satisfies ToWorker);
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
    setSecrets(secrets) {
      for (const w of workers) post(w.child, { type: 'networks', secrets } satisfies ToWorker);
    },
    reports: () => workers.map((w) => ({ pid: w.child.pid ?? -1, stats: w.stats, state: w.state })),
    close: stopAll,
  };
}

/** The worker's side; src/node/server-worker.ts runs it in a forked process. */
export function runServerWorker(): void {
  const toPrimary = process.send?.bind(process);
  if (!toPrimary) throw new Error('a server worker must be started by startServer({ workers })');
  const send = (message: FromWorker): void => {
    // A primary that died meanwhile is noticed by 'disconnect'; a failed write is not an error here.
    if (process.connected) toPrimary(message, undefined, undefined, () => undefined);
  };
  // Ctrl-C in a terminal signals the whole process group; the primary decides when workers stop.
  process.on('SIGINT', () => undefined);
  process.on('SIGHUP', () => undefined);
  let port: DatagramPort | undefined;
  let core: ServerCore | undefined;
  let machine: ServerMachine | undefined;
  let link: IpcEffects | undefined;
  let redisState: { close(): void } | undefined;
  let runner: MachineRunner | undefined;
  let wgQueue: Datagram[] = [];
  let events: ServerEvent[] = [];
  let flushScheduled = false;
  const flush = (): void => {
    flushScheduled = false;
    if (!process.connected) return;
    if (wgQueue.length > 0) send({ type: 'wg', batch: wgQueue } satisfies FromWorker);
    if (events.length > 0) send({ type: 'events', batch: events } satisfies FromWorker);
    wgQueue = [];
    events = [];
  };
  const scheduleFlush = (): void => {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(flush);
  };
  const execute = (actions: ServerAction[]): void => {
    for (const a of actions) {
      switch (a.type) {
        case 'send':
          port?.send(a.to, a.data); // a worker has the main port only
          break;
        case 'to-wg-responder':
          wgQueue.push({ address: a.from.address, port: a.from.port, data: a.data });
          scheduleFlush();
          break;
        case 'event':
          if (events.length < MAX_EVENTS_PER_TURN) events.push(a.event.type === 'registered' ? { ...a.event, worker: process.pid } : a.event);
          scheduleFlush();
          break;
        case 'send-stream':
        case 'close-stream':
        case 'effect':
          break; // a worker has no TCP connections, and its machine carries out effects itself
      }
    }
  };
  const report = (): void => {
    if (core && process.connected) send({ type: 'stats', stats: core.stats, state: core.state } satisfies FromWorker);
  };
  const statsTimer = setInterval(report, STATS_INTERVAL_MS);
  statsTimer.unref();
  const shutdown = (): void => {
    clearInterval(statsTimer);
    runner?.stop();
    machine?.close();
    link?.fail('the server is stopping');
    redisState?.close();
    redisState = undefined;
  };
  const stop = (): void => {
    report();
    flush();
    shutdown();
    const p = port;
    port = undefined;
    void (p ? p.close() : Promise.resolve()).then(() => {
      if (process.connected) process.disconnect();
    });
  };
  process.on('disconnect', () => {
    shutdown();
    void port?.close();
    port = undefined;
  });
  process.on('message', (m: ToWorker, handle: unknown) => {
    switch (m.type) {
      case 'init':
        void start(m, handle as dgram.Socket | undefined).then(
          () => { send({ type: 'ready' } satisfies FromWorker); },
          (err: unknown) => {
            process.stderr.write(`burrow server worker: ${err instanceof Error ? err.message : String(err)}\n`);
            process.exit(1);
          },
        );
        break;
      case 'answers':
        link?.answer(m.batch);
        break;
      case 'send':
        if (port) for (const d of m.batch) port.send({ address: d.address, port: d.port }, d.data);
        break;
      case 'networks':
        core?.setNetworks(m.secrets.map((s) => deriveNetworkKeys(s)));
        break;
      case 'close':
        stop();
        break;
    }
  });

  async function start(init: Extract<ToWorker, { type: 'init' }>, handle: dgram.Socket | undefined): Promise<void> {
    const proofKey = importKeyPair(init.proofKey);
    let effects: EffectRunner;
    let router: Pick<Router, 'listen'>;
    let serverId = init.serverId;
    if (init.redis) {
      const { RedisSharedState } = await import('./redis/shared-state.js');
      const shared = await RedisSharedState.connect({ url: init.redis.url, ...(init.redis.prefix !== undefined ? { prefix: init.redis.prefix } : {}), secrets: init.secrets, timestampWindowMs: init.limits.timestampWindowMs });
      redisState = shared;
      effects = sharedStateRunner(shared);
      router = shared.router;
      serverId = `${init.serverId}.w${process.pid}`;
    } else {
      const ipc = new IpcEffects((batch) => { send({ type: 'calls', batch }); }, init.serverId);
      link = ipc;
      effects = ipc;
      router = ipc;
    }
    core = new ServerCore({
      networks: init.secrets.map((s) => deriveNetworkKeys(s)),
      serverId,
      proofKey,
      ...(init.alternate ? { alternate: init.alternate } : {}),
      limits: init.limits,
      wgResponder: false,
      // A request captured before this process started may have been seen by a guard that has forgotten it since.
      notBefore: Date.now(),
      seed: randomInt(0, 2 ** 31),
      randomBytes: pooledRandomBytes(),
      ...(init.relay ? { relay: init.relay } : {}),
    });
    machine = new ServerMachine(core, { runner: effects, router, now: Date.now, onLater: (actions) => { runner?.later(actions); } });
    await machine.ready;
    const r = new MachineRunner(machine, execute, (err) => {
      execute([{ type: 'event', event: { type: 'rejected', from: { address: '0.0.0.0', port: 0 }, reason: `internal error: ${String(err)}` } }]);
    });
    runner = r;
    const main = init.main;
    if (main.kind === 'native') {
      port = await openDatagramPort('native', { address: main.address, port: main.port, dualStack: main.dualStack, recvBufferSize: main.recvBufferSize, reusePort: true });
    } else {
      if (!handle) throw new Error('no socket handed over');
      port = dgramPort({ socket: handle, family: main.family, dualStack: main.dualStack, local: main.local });
    }
    port.start((from, data) => {
      r.feed({ type: 'datagram', socket: 'main', from, data, now: Date.now() });
    });
  }
}
