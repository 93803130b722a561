/**
 * `startServer()`: the Node driver around ServerCore. It owns the UDP sockets (the main port and the
 * alternate port used for NAT mapping tests) and the expiry timer; everything else is in the core.
 */
import { randomBytes, randomInt } from 'node:crypto';
import net from 'node:net';
import { splitStunStream } from '../codec/stun.js';
import { DEFAULT_PORT } from '../codec/messages.js';
import { normaliseAddress, parseHostPort, type Endpoint } from '../codec/address.js';
import { deriveNetworkKeys } from '../crypto/keys.js';
import { BurrowError } from '../errors.js';
import { DEFAULT_LIMITS, ServerCore, type ServerAction, type ServerEvent, type ServerLimits, type ServerSocketId, type ServerState, type ServerStats } from '../server/core.js';
import type { RegistrationStore } from '../server/store.js';
import type { MetricsEndpoint, MetricsOptions } from './metrics.js';
import { splitLimits, startWorkerPool, sumStats, type WorkerPool } from './cluster.js';
import { bindUdp, closeUdp, endpointOf, sendUdpNoCallback, type BoundSocket } from './udp.js';

export interface ServerOptions {
  /** `HOST:PORT` to listen on (UDP); default `[::]:3478`, dual-stack, falling back to 0.0.0.0. */
  readonly listen?: string;
  /** Accepted network secrets; clients must use one of them. */
  readonly secrets: readonly (string | Uint8Array)[];
  /** Second UDP port for NAT mapping tests: a number, `0` for any free port, or `false` for none. Default: main port + 1. */
  readonly alternatePort?: number | false;
  readonly limits?: Partial<ServerLimits>;
  readonly store?: RegistrationStore;
  readonly onEvent?: (event: ServerEvent) => void;
  readonly signal?: AbortSignal;
  /** Also listen on TCP at the same address and port (TCP rendezvous for `burrow pipe`); default true. */
  readonly tcp?: boolean;
  /** Bounds for TCP rendezvous connections. */
  readonly maxTcpConnections?: number;
  readonly tcpIdleMs?: number;
  /** Also serve Prometheus metrics over HTTP (`GET /metrics`) on their own address; see docs/metrics.md. */
  readonly metrics?: MetricsOptions;
  /**
   * Processes that answer UDP on the main port (default 1: this process does everything). With N > 1,
   * N forked workers share the socket and answer STUN Binding; registrations are forwarded to this
   * process, which owns them all (src/node/cluster.ts). Per-source limits are divided among the processes.
   */
  readonly workers?: number;
}

export interface RendezvousServer {
  readonly address: Endpoint;
  /** The TCP rendezvous listener, when enabled. */
  readonly tcpAddress: Endpoint | undefined;
  readonly alternateAddress: Endpoint | undefined;
  /** The metrics listener, when enabled. */
  readonly metricsAddress: Endpoint | undefined;
  readonly stats: Readonly<ServerStats>;
  readonly registrations: number;
  /** Process ids of the worker processes (empty without `workers`). */
  readonly workerPids: readonly number[];
  /** Sizes of the server's tables (registrations, pending pushes, replay cache). */
  readonly state: ServerState;
  /** Replaces the accepted secrets (used on SIGHUP). */
  setSecrets(secrets: readonly (string | Uint8Array)[]): void;
  close(): Promise<void>;
}

function keysOf(secrets: readonly (string | Uint8Array)[]) {
  if (secrets.length === 0) throw BurrowError.invalidOption('secrets', 'the server needs at least one secret');
  return secrets.map((s) => deriveNetworkKeys(typeof s === 'string' ? Buffer.from(s, 'utf8') : s));
}

/**
 * The server's receive buffer: large, so that a flood of junk (dropped cheaply, but only once read) does not crowd
 * legitimate datagrams out of the kernel's queue during a stall. The kernel caps it at net.core.rmem_max.
 */
const SERVER_RECV_BUFFER = 4 << 20;

async function bindListen(host: string, port: number, role: 'main' | 'alternate'): Promise<BoundSocket> {
  try {
    return await bindUdp(host, port, { dualStack: host === '::', recvBufferSize: SERVER_RECV_BUFFER });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (host === '::' && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL')) return bindUdp('0.0.0.0', port, { recvBufferSize: SERVER_RECV_BUFFER });
    throw BurrowError.bindFailed({ transport: 'udp', address: host, port, role }, err);
  }
}

/** Random bytes drawn 4 KiB at a time: one call into the CSPRNG per ~340 pushed introductions, not one each. */
function pooledRandomBytes(): (n: number) => Uint8Array {
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

export async function startServer(options: ServerOptions): Promise<RendezvousServer> {
  options.signal?.throwIfAborted();
  const parsed = parseHostPort(options.listen ?? `[::]:${DEFAULT_PORT}`, DEFAULT_PORT);
  if (!parsed.ok) throw BurrowError.invalidOption('listen', `not HOST:PORT (${parsed.reason})`, options.listen ?? '');
  const host = parsed.host === '' ? '::' : normaliseAddress(parsed.host);
  if (!host) throw BurrowError.invalidOption('listen', `host "${parsed.host}" is not an IP address`, options.listen ?? '');
  const networks = keysOf(options.secrets);
  // Loaded only when asked for, so a server without metrics never loads prom-client.
  const metricsModule = options.metrics ? await import('./metrics.js') : undefined;
  if (options.metrics) metricsModule?.parseMetricsListen(options.metrics.listen);
  const workers = options.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) throw BurrowError.invalidOption('workers', 'must be a whole number from 1 to 256', String(workers));
  const main = await bindListen(host, parsed.port, 'main');
  let alternate: BoundSocket | undefined;
  if (options.alternatePort !== false) {
    const altPort = options.alternatePort ?? (parsed.port === 0 ? 0 : parsed.port + 1);
    try {
      alternate = await bindListen(main.dualStack ? '::' : main.local.address, altPort, 'alternate');
    } catch (err) {
      await closeUdp(main.socket);
      throw err;
    }
  }
  // With workers, every process that rate-limits (each worker, and this one for the alternate port and
  // TCP) gets an equal share of the limits, so that together they never exceed them.
  const limits = workers > 1 ? splitLimits({ ...DEFAULT_LIMITS, ...options.limits }, workers + 1) : options.limits;
  const core = new ServerCore({
    networks,
    ...(alternate ? { alternate: alternate.local } : {}),
    ...(limits ? { limits } : {}),
    ...(options.store ? { store: options.store } : {}),
    seed: randomInt(0, 2 ** 31),
    randomBytes: pooledRandomBytes(),
  });
  const sockets: Record<ServerSocketId, BoundSocket | undefined> = { main, alternate };
  const streams = new Map<number, net.Socket>();
  let pool: WorkerPool | undefined;
  const execute = (actions: ServerAction[]): void => {
    for (const a of actions) {
      switch (a.type) {
        case 'send': {
          if (a.socket === 'main' && pool) {
            pool.send(a.to, a.data);
            break;
          }
          const s = sockets[a.socket];
          if (s) sendUdpNoCallback(s, a.to, a.data);
          break;
        }
        case 'forward':
          break; // only workers forward
        case 'send-stream': {
          const s = streams.get(a.conn);
          // A client that does not read its answers does not get to grow our buffers.
          if (s && s.writableLength > 64 * 1024) s.destroy();
          else s?.write(a.data);
          break;
        }
        case 'close-stream':
          streams.get(a.conn)?.destroy();
          break;
        case 'event':
          options.onEvent?.(a.event);
          break;
      }
    }
  };
  let tcpServer: net.Server | undefined;
  if (options.tcp !== false) {
    try {
      tcpServer = await listenTcp(main.dualStack ? '::' : main.local.address, main.local.port, {
        maxConnections: options.maxTcpConnections ?? 10_000,
        idleMs: options.tcpIdleMs ?? 120_000,
        core,
        streams,
        execute,
      });
    } catch (err) {
      await Promise.all([closeUdp(main.socket), alternate ? closeUdp(alternate.socket) : Promise.resolve()]);
      throw err;
    }
  }
  let close: () => Promise<void> = () => Promise.resolve();
  if (workers > 1) {
    try {
      pool = await startWorkerPool({
        count: workers,
        main,
        limits: core.limits,
        onForward: (socket, from, data) => {
          try {
            execute(core.handleForwarded(socket, from, data, Date.now()));
          } catch (err) {
            options.onEvent?.({ type: 'rejected', from, reason: `internal error: ${String(err)}` });
          }
        },
        onUnexpectedExit: (pid, code, signal) => {
          options.onEvent?.({ type: 'worker-exited', pid, code, signal });
          void close();
        },
      });
    } catch (err) {
      await Promise.all([closeUdp(main.socket), alternate ? closeUdp(alternate.socket) : Promise.resolve(), new Promise<void>((r) => {
        if (tcpServer) tcpServer.close(() => { r(); });
        else r();
      })]);
      throw err;
    }
    // The workers read the main socket now; this process keeps no copy (it would read datagrams too).
    await closeUdp(main.socket);
    sockets.main = undefined;
  }
  for (const id of ['main', 'alternate'] as const) {
    const s = sockets[id];
    if (!s) continue;
    s.socket.on('message', (data, rinfo) => {
      // The core never throws on input; this guard keeps even a bug from taking the server down.
      try {
        execute(core.handleDatagram(id, endpointOf(rinfo), data, Date.now()));
      } catch (err) {
        options.onEvent?.({ type: 'rejected', from: endpointOf(rinfo), reason: `internal error: ${String(err)}` });
      }
    });
    // Unconnected UDP sockets report ICMP errors here on some systems; they are not fatal.
    s.socket.on('error', () => undefined);
  }
  const sweep = setInterval(() => {
    execute(core.handleTimer(Date.now()));
  }, core.timerIntervalMs);
  sweep.unref();
  let metrics: MetricsEndpoint | undefined;
  let closed: Promise<void> | undefined;
  close = (): Promise<void> => {
    closed ??= (async () => {
      clearInterval(sweep);
      options.signal?.removeEventListener('abort', onAbort);
      for (const s of streams.values()) s.destroy();
      await Promise.all([
        metrics?.close(),
        pool?.close(),
        sockets.main ? closeUdp(sockets.main.socket) : Promise.resolve(),
        alternate ? closeUdp(alternate.socket) : Promise.resolve(),
        new Promise<void>((resolve) => {
          if (tcpServer) tcpServer.close(() => { resolve(); });
          else resolve();
        }),
      ]);
    })();
    return closed;
  };
  const onAbort = (): void => {
    void close();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.metrics && metricsModule) {
    try {
      metrics = await metricsModule.startServerMetrics(options.metrics, {
        // With workers, their counters (sent to this process about once a second) are added in.
        get stats() {
          return pool ? sumStats([core.stats, ...pool.stats()]) : core.stats;
        },
        get registrations() {
          return core.store.size;
        },
        get tcpConnections() {
          return streams.size;
        },
        // Held by this process only (with workers, WireGuard traffic is forwarded here).
        wireguard: {
          get interfaces() {
            return core.wg.peerCount;
          },
          stats: core.wg.stats,
        },
        get networks() {
          return core.networkCount;
        },
      });
    } catch (err) {
      await close();
      throw err;
    }
  }
  const tcpBound = tcpServer?.address();
  return {
    address: main.local,
    tcpAddress: tcpBound && typeof tcpBound === 'object' ? { address: normaliseAddress(tcpBound.address) ?? tcpBound.address, port: tcpBound.port } : undefined,
    alternateAddress: alternate?.local,
    metricsAddress: metrics?.address,
    get stats() {
      return pool ? sumStats([core.stats, ...pool.stats()]) : core.stats;
    },
    get registrations() {
      return core.store.size;
    },
    workerPids: pool?.pids ?? [],
    get state() {
      return core.state;
    },
    setSecrets(secrets) {
      core.setNetworks(keysOf(secrets));
    },
    close,
  };
}


/** TCP rendezvous connections one source address may hold at once. */
const MAX_TCP_PER_SOURCE = 64;
/** Time a new TCP connection has to send its first whole message. */
const TCP_FIRST_MESSAGE_MS = 10_000;

interface TcpContext {
  readonly maxConnections: number;
  readonly idleMs: number;
  readonly core: ServerCore;
  readonly streams: Map<number, net.Socket>;
  readonly execute: (actions: ServerAction[]) => void;
}

/**
 * The TCP rendezvous listener: STUN messages framed by their length (RFC 8489 section 6.2.2). Bounded:
 * a connection limit, an idle timeout, and at most one partial message buffered per connection.
 */
async function listenTcp(host: string, port: number, ctx: TcpContext): Promise<net.Server> {
  let nextId = 1;
  const perSource = new Map<string, number>();
  const server = net.createServer({ allowHalfOpen: false }, (socket) => {
    const from = endpointOf({ address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 });
    const count = perSource.get(from.address) ?? 0;
    if (count >= MAX_TCP_PER_SOURCE) {
      socket.destroy();
      return;
    }
    perSource.set(from.address, count + 1);
    const id = nextId++;
    ctx.streams.set(id, socket);
    let pending: Uint8Array = new Uint8Array(0);
    socket.setNoDelay(true);
    // A connection must send a whole message soon; after that it may idle (it waits for its partner).
    socket.setTimeout(TCP_FIRST_MESSAGE_MS, () => socket.destroy());
    let heard = false;
    socket.on('data', (chunk: Buffer) => {
      const joined = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
      const split = splitStunStream(joined);
      if ('error' in split) {
        socket.destroy();
        return;
      }
      pending = split.rest;
      if (!heard && split.messages.length > 0) {
        heard = true;
        socket.setTimeout(ctx.idleMs);
      }
      for (const m of split.messages) {
        try {
          ctx.execute(ctx.core.handleStreamMessage(id, from, m, Date.now()));
        } catch {
          socket.destroy();
          return;
        }
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      ctx.streams.delete(id);
      ctx.core.handleStreamClosed(id);
      const left = (perSource.get(from.address) ?? 1) - 1;
      if (left <= 0) perSource.delete(from.address);
      else perSource.set(from.address, left);
    });
  });
  server.maxConnections = ctx.maxConnections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(BurrowError.bindFailed({ transport: 'tcp', address: host, port, role: 'tcp' }, err));
    });
    server.listen({ host, port, ipv6Only: false }, () => {
      server.removeAllListeners('error');
      server.on('error', () => undefined);
      resolve();
    });
  });
  return server;
}
