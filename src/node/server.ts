/**
 * `startServer()`: the Node driver around the server machine (src/server/machine.ts). It owns the sockets (the
 * main UDP port, the alternate port used for NAT mapping tests, the TCP rendezvous listener), one timer, and the
 * in-memory shared state; every decision is the core's. With `workers`, src/node/cluster.ts runs the main port in
 * worker processes.
 */
import { randomBytes, randomInt } from 'node:crypto';
import net from 'node:net';
import { splitStunStream } from '../codec/stun.js';
import { DEFAULT_PORT } from '../codec/messages.js';
import { normaliseAddress, parseHostPort, type Endpoint } from '../codec/address.js';
import { deriveNetworkKeys } from '../crypto/keys.js';
import { generateKeyPair } from '../crypto/wireguard.js';
import { BurrowError } from '../errors.js';
import { DEFAULT_LIMITS, ServerCore, type ServerLimits } from '../server/core.js';
import { ServerMachine, sharedStateRunner } from '../server/machine.js';
import { MemorySharedState, type SharedState } from '../server/shared.js';
import type { RedisSharedState } from './redis/shared-state.js';
import { sumStats, type ServerState, type ServerStats } from '../server/stats.js';
import type { Rfc5780Sockets } from '../server/config.js';
import type { ServerAction, ServerEvent, ServerInput, ServerSocketId } from '../server/types.js';
import { chooseBackend, openDatagramPort, type DatagramPort, type UdpBackend } from './datagram-port.js';
import type { MetricsEndpoint, MetricsOptions } from './metrics.js';
import { splitLimits, startWorkerPool, type MainPortSpec, type WorkerPool } from './cluster.js';
import { MachineRunner, pooledRandomBytes } from './server-runtime.js';
import { bindUdp, closeUdp, endpointOf, sendUdpNoCallback, type BoundSocket } from './udp.js';
import { RelayCore, type RelayEvent } from '../server/relay/core.js';
import { DEFAULT_TURN_TTL_SECONDS, type RelayLimits, type RelayPolicy } from '../server/relay/config.js';
import { RelayDriver } from './relay.js';
import { StreamRelayDriver } from './stream-relay.js';
import { StreamRelayCore } from '../server/relay/stream.js';

export interface ServerOptions {
  /** `HOST:PORT` to listen on (UDP); default `[::]:3478`, dual-stack, falling back to 0.0.0.0. */
  readonly listen?: string;
  /** Accepted network secrets; clients must use one of them. */
  readonly secrets: readonly (string | Uint8Array)[];
  /** Second UDP port for NAT mapping tests: a number, `0` for any free port, or `false` for none. Default: main port + 1. */
  readonly alternatePort?: number | false;
  /**
   * A second IP address of this host (an IP literal of --listen's family). With it the server listens on 2 IPs × 2
   * ports and answers RFC 5780 behaviour-discovery requests in full (CHANGE-REQUEST, OTHER-ADDRESS,
   * RESPONSE-ORIGIN); it needs a specific --listen address, the alternate port, and one process (no `workers`).
   */
  readonly alternateAddress?: string;
  readonly limits?: Partial<ServerLimits>;
  /**
   * The state this server shares with others (registrations, replay guard, push router, WireGuard registry,
   * WG-PROOF-KEY); default: in this process's memory. A shared implementation (Redis) makes several servers one.
   * Not with `workers` (their processes reach the primary's in-memory state).
   */
  readonly shared?: SharedState;
  /**
   * Share state with other servers through Redis (src/node/redis/shared-state.ts): `url` is
   * redis://HOST:PORT[/DB], `prefix` starts every key (default "burrow"). An unreachable Redis fails the start at once.
   * Not with `shared`. With `workers`, each worker connects to Redis itself and is a server of its own id
   * (`<serverId>.w<pid>`) sharing the port; this process keeps TCP, the alternate port and WireGuard handshakes.
   */
  readonly redis?: { readonly url: string; readonly prefix?: string; readonly onStatus?: (status: 'down' | 'up', detail: string) => void };
  /** This server's id among those sharing state; default random. Pushes for its peers are routed to it by id. */
  readonly serverId?: string;
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
   * Processes that serve the main UDP port (default 1: this process does everything). With N > 1, N forked workers
   * each handle Binding, REGISTER, outcome reports and WG-SYNC against the shared state this process holds
   * (src/node/cluster.ts). Per-source limits are divided among the processes.
   */
  readonly workers?: number;
  /**
   * The main UDP socket: 'native' (the batched burrow_udp addon), 'dgram' (Node's), or 'auto' (the addon when it is
   * built, the default; the environment variable BURROW_UDP_BACKEND overrides the default). See
   * src/node/datagram-port.ts.
   */
  readonly udpBackend?: UdpBackend;
  /** The relay (docs/protocol.md, "Relay"); default: the built-in relay with its default bounds. */
  readonly relay?: RelayServerOptions;
}

export interface RelayServerOptions {
  /**
   * `builtin` (default): this server relays (TURN on its main port). `none`: no relay (`--no-relay`). `turn`: pairs
   * are sent to a TURN fleet (coturn) with minted TURN REST credentials, and the built-in relay is off. With
   * `workers` > 1 the built-in relay is not available (a worker cannot see another's allocations): `builtin` then
   * offers no relay; use `turn`.
   */
  readonly policy?: { readonly kind: 'builtin' } | { readonly kind: 'none' } | { readonly kind: 'turn'; readonly url: string; readonly secret: Uint8Array; readonly ttlSeconds?: number };
  readonly limits?: Partial<RelayLimits>;
  /** Relayed ports `[low, high]`; default: ports the kernel picks. */
  readonly ports?: readonly [number, number];
  /** The address advertised as relayed address (a server behind a 1:1 NAT); default the bound one. */
  readonly externalAddress?: string;
  readonly onEvent?: (event: RelayEvent) => void;
  /**
   * Answer the 401/438 challenge to an unauthenticated request even when it is shorter than the answer (standard TURN
   * clients such as turnutils_uclient or browsers send a bare Allocate), within the per-source request rate. Off by
   * default: burrow's own client pads its first Allocate, and unauthenticated traffic never gets more bytes back.
   */
  readonly openChallenge?: boolean;
}

export interface RendezvousServer {
  readonly address: Endpoint;
  /** The TCP rendezvous listener, when enabled. */
  readonly tcpAddress: Endpoint | undefined;
  readonly alternateAddress: Endpoint | undefined;
  /** The RFC 5780 sockets (2 IPs × 2 ports) when started with `alternateAddress`. */
  readonly rfc5780: Rfc5780Sockets | undefined;
  /** The metrics listener, when enabled. */
  readonly metricsAddress: Endpoint | undefined;
  /** This server's id in the shared state. */
  readonly serverId: string;
  /** Which main UDP socket is in use. */
  readonly udpBackend: 'native' | 'dgram';
  readonly stats: Readonly<ServerStats>;
  readonly registrations: number;
  /** Process ids of the worker processes (empty without `workers`). */
  readonly workerPids: readonly number[];
  /** Each worker's counters as last reported (about once a second, and when it stops). */
  readonly workerStats: readonly { readonly pid: number; readonly stats: Readonly<ServerStats> }[];
  /** Sizes of the server's tables (registrations, pending pushes, replay cache, WireGuard). */
  readonly state: ServerState;
  /** The built-in relay in this process, if it runs here (undefined with workers). */
  readonly relay: { readonly sessions: number; readonly stats: Readonly<import('../server/relay/core.js').RelayStats> } | undefined;
  /** The stream relay (TCP splice), when the TCP listener runs. */
  readonly streamRelay: { readonly sessions: number; readonly stats: Readonly<import('../server/relay/stream.js').StreamRelayStats> } | undefined;
  /** Replaces the accepted secrets (used on SIGHUP). */
  setSecrets(secrets: readonly (string | Uint8Array)[]): void;
  close(): Promise<void>;
}

function secretBytes(secrets: readonly (string | Uint8Array)[]): Uint8Array[] {
  if (secrets.length === 0) throw BurrowError.invalidOption('secrets', 'the server needs at least one secret');
  return secrets.map((s) => (typeof s === 'string' ? Buffer.from(s, 'utf8') : s));
}

/**
 * The server's receive buffer: large, so that a flood of junk (dropped cheaply, but only once read) does not crowd
 * legitimate datagrams out of the kernel's queue during a stall. The kernel caps it at net.core.rmem_max.
 */
const SERVER_RECV_BUFFER = 4 << 20;

/** Binds `bind(host)`, falling back from the dual-stack wildcard to 0.0.0.0 where IPv6 is off. */
async function bindWithFallback<T>(host: string, port: number, role: 'main' | 'alternate' | 'other-address', bind: (host: string) => Promise<T>): Promise<T> {
  try {
    return await bind(host);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (host === '::' && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL')) {
      try {
        return await bind('0.0.0.0');
      } catch (err2) {
        throw BurrowError.bindFailed({ transport: 'udp', address: '0.0.0.0', port, role }, err2);
      }
    }
    throw BurrowError.bindFailed({ transport: 'udp', address: host, port, role }, err);
  }
}

function bindListen(host: string, port: number, role: 'main' | 'alternate' | 'other-address'): Promise<BoundSocket> {
  return bindWithFallback(host, port, role, (h) => bindUdp(h, port, { dualStack: h === '::', recvBufferSize: SERVER_RECV_BUFFER }));
}

export async function startServer(options: ServerOptions): Promise<RendezvousServer> {
  options.signal?.throwIfAborted();
  const parsed = parseHostPort(options.listen ?? `[::]:${DEFAULT_PORT}`, DEFAULT_PORT);
  if (!parsed.ok) throw BurrowError.invalidOption('listen', `not HOST:PORT (${parsed.reason})`, options.listen ?? '');
  const host = parsed.host === '' ? '::' : normaliseAddress(parsed.host);
  if (!host) throw BurrowError.invalidOption('listen', `host "${parsed.host}" is not an IP address`, options.listen ?? '');
  let secrets = secretBytes(options.secrets);
  const networks = secrets.map((s) => deriveNetworkKeys(s));
  // Loaded only when asked for, so a server without metrics never loads prom-client.
  const metricsModule = options.metrics ? await import('./metrics.js') : undefined;
  if (options.metrics) metricsModule?.parseMetricsListen(options.metrics.listen);
  const workers = options.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) throw BurrowError.invalidOption('workers', 'must be a whole number from 1 to 256', String(workers));
  if (workers > 1 && options.shared) throw BurrowError.invalidOption('workers', 'a custom shared state cannot be combined with workers yet: each worker would need its own connection to it', String(workers));
  const backend = chooseBackend(options.udpBackend);
  const limits: ServerLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const serverId = options.serverId ?? randomBytes(8).toString('hex');
  const otherIp = options.alternateAddress === undefined ? undefined : checkAlternateAddress(options.alternateAddress, host, options.alternatePort, workers);
  const startedAt = Date.now();

  // The main port. Single process: this process reads it. Workers: native sockets are bound again by each worker
  // (SO_REUSEPORT; this one only learns the port, and closes once they listen); a dgram socket is handed over.
  const closers: (() => Promise<void>)[] = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(closers.splice(0).map((c) => c()));
  };
  let main: DatagramPort | undefined;
  let mainDgram: BoundSocket | undefined;
  let mainLocal: Endpoint;
  let mainSpec: MainPortSpec | undefined;
  if (backend === 'dgram' && workers > 1) {
    mainDgram = await bindListen(host, parsed.port, 'main');
    const bound = mainDgram;
    closers.push(() => closeUdp(bound.socket));
    mainLocal = bound.local;
    mainSpec = { kind: 'dgram', family: bound.family, dualStack: bound.dualStack, local: bound.local };
  } else {
    const port = await bindWithFallback(host, parsed.port, 'main', (h) => openDatagramPort(backend, { address: h, port: parsed.port, dualStack: h === '::', recvBufferSize: SERVER_RECV_BUFFER, reusePort: workers > 1 }));
    main = port;
    closers.push(() => port.close());
    mainLocal = port.local;
    if (workers > 1) mainSpec = { kind: 'native', address: port.local.address, port: port.local.port, dualStack: port.dualStack, recvBufferSize: SERVER_RECV_BUFFER };
  }
  const mainDualStack = main?.dualStack ?? mainDgram?.dualStack ?? false;
  let alternate: BoundSocket | undefined;
  if (options.alternatePort !== false) {
    const altPort = options.alternatePort ?? (parsed.port === 0 ? 0 : parsed.port + 1);
    try {
      alternate = await bindListen(mainDualStack ? '::' : mainLocal.address, altPort, 'alternate');
    } catch (err) {
      await closeAll();
      throw err;
    }
    const alt = alternate;
    closers.push(() => closeUdp(alt.socket));
  }
  // RFC 5780: the second IP on the main port and on the alternate port.
  const others: Partial<Record<'other-ip' | 'other-ip-port', BoundSocket>> = {};
  let rfc5780: Rfc5780Sockets | undefined;
  if (otherIp !== undefined && alternate) {
    try {
      others['other-ip'] = await bindListen(otherIp, mainLocal.port, 'other-address');
      others['other-ip-port'] = await bindListen(otherIp, alternate.local.port, 'other-address');
    } catch (err) {
      for (const o of Object.values(others)) await closeUdp(o.socket);
      await closeAll();
      throw err;
    }
    for (const o of Object.values(others)) closers.push(() => closeUdp(o.socket));
    rfc5780 = { main: mainLocal, alternate: alternate.local, 'other-ip': others['other-ip'].local, 'other-ip-port': others['other-ip-port'].local };
  }

  let redis: RedisSharedState | undefined;
  if (options.redis) {
    const { RedisSharedState: Redis } = await import('./redis/shared-state.js');
    try {
      redis = await Redis.connect({ url: options.redis.url, ...(options.redis.prefix !== undefined ? { prefix: options.redis.prefix } : {}), secrets, timestampWindowMs: limits.timestampWindowMs, ...(options.redis.onStatus ? { onStatus: options.redis.onStatus } : {}) });
    } catch (err) {
      await closeAll();
      throw err;
    }
    const r = redis;
    closers.push(() => {
      r.close();
      return Promise.resolve();
    });
  }
  const memory = options.shared || redis ? undefined : new MemorySharedState({ limits, proofKey: generateKeyPair() });
  const shared: SharedState = options.shared ?? redis ?? (memory as SharedState);
  // With workers, every process that rate-limits (each worker, and this one for the alternate port and TCP) gets
  // an equal share of the limits, so that together they never exceed them.
  const processLimits = workers > 1 ? splitLimits(limits, workers + 1) : limits;
  const requested = options.relay?.policy ?? { kind: 'builtin' as const };
  const policy: RelayPolicy = requested.kind === 'turn'
    ? { kind: 'turn', url: requested.url, secret: requested.secret, ttlSeconds: requested.ttlSeconds ?? DEFAULT_TURN_TTL_SECONDS }
    : requested.kind === 'builtin' && workers > 1 ? { kind: 'none' } : requested;
  let core: ServerCore;
  let machine: ServerMachine;
  try {
    const proofKey = await shared.proofKey();
    core = new ServerCore({
      networks,
      serverId,
      proofKey,
      ...(alternate ? { alternate: alternate.local } : {}),
      ...(rfc5780 ? { rfc5780 } : {}),
      limits: processLimits,
      // A REGISTER captured before this start is refused after it (its replay guard may have forgotten it).
      notBefore: startedAt,
      seed: randomInt(0, 2 ** 31),
      randomBytes: pooledRandomBytes(),
      relay: policy,
    });
    machine = new ServerMachine(core, { runner: sharedStateRunner(shared), router: shared.router, now: Date.now, onLater: (actions) => { runner.later(actions); } });
    await machine.ready;
  } catch (err) {
    await closeAll();
    throw err;
  }
  const streams = new Map<number, net.Socket>();
  let pool: WorkerPool | undefined;
  const execute = (actions: ServerAction[]): void => {
    for (const a of actions) {
      switch (a.type) {
        case 'send':
          if (a.socket === 'alternate') {
            if (alternate) sendUdpNoCallback(alternate, a.to, a.data);
          } else if (a.socket === 'other-ip' || a.socket === 'other-ip-port') {
            const o = others[a.socket];
            if (o) sendUdpNoCallback(o, a.to, a.data);
          } else if (pool) {
            pool.send(a.to, a.data);
          } else {
            main?.send(a.to, a.data);
          }
          break;
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
        case 'to-wg-responder':
        case 'effect':
          break; // this process has the responder, and its machine carries out effects itself
      }
    }
  };
  const runner = new MachineRunner(machine, execute, (err) => {
    options.onEvent?.({ type: 'rejected', from: { address: '0.0.0.0', port: 0 }, reason: `internal error: ${String(err)}` });
  });
  const feed = (input: ServerInput): void => {
    runner.feed(input);
  };
  closers.push(() => {
    runner.stop();
    machine.close();
    return Promise.resolve();
  });

  let tcpServer: net.Server | undefined;
  // The stream relay shares the TCP listener; it answers 403 when the built-in relay is off.
  const streamRelay = options.tcp !== false ? new StreamRelayDriver({ enabled: policy.kind === 'builtin', networks, ...(options.relay?.limits ? { limits: options.relay.limits } : {}) }) : undefined;
  if (streamRelay) {
    const sr = streamRelay;
    closers.push(() => {
      sr.close();
      return Promise.resolve();
    });
  }
  if (options.tcp !== false) {
    try {
      tcpServer = await listenTcp(mainDualStack ? '::' : mainLocal.address, mainLocal.port, {
        ...(streamRelay ? { streamRelay } : {}),
        maxConnections: options.maxTcpConnections ?? 10_000,
        idleMs: options.tcpIdleMs ?? 120_000,
        feed,
        streams,
      });
    } catch (err) {
      await closeAll();
      throw err;
    }
    const t = tcpServer;
    closers.push(() => new Promise<void>((resolve) => {
      for (const s of streams.values()) s.destroy();
      t.close(() => { resolve(); });
    }));
  }
  let close: () => Promise<void> = () => Promise.resolve();
  if (workers > 1 && mainSpec) {
    try {
      pool = await startWorkerPool({
        count: workers,
        serverId,
        secrets,
        shared,
        main: mainSpec,
        mainHandle: mainDgram,
        alternate: alternate?.local,
        limits: processLimits,
        relay: policy,
        ...(options.redis ? { redis: { url: options.redis.url, prefix: options.redis.prefix } } : {}),
        onWireGuard: (socket, from, data) => {
          feed({ type: 'wg-datagram', socket, from, data, now: Date.now() });
        },
        onEvent: (e) => options.onEvent?.(e),
        onUnexpectedExit: (pid, code, signal) => {
          options.onEvent?.({ type: 'worker-exited', pid, code, signal });
          void close();
        },
      });
    } catch (err) {
      await closeAll();
      throw err;
    }
    const p = pool;
    closers.push(() => p.close());
    // The workers read the main port now; this process keeps no socket on it (it would be given datagrams too).
    if (main) await main.close();
    if (mainDgram) await closeUdp(mainDgram.socket);
    main = undefined;
  }
  // The built-in relay reads the main port with the rendezvous: TURN methods and ChannelData go to it (it also
  // answers them when it is off: 403).
  let relay: RelayDriver | undefined;
  if (main) {
    const port = main;
    relay = new RelayDriver({
      enabled: policy.kind === 'builtin',
      networks,
      ...(options.relay?.limits ? { limits: options.relay.limits } : {}),
      ...(options.relay?.ports ? { ports: options.relay.ports } : {}),
      ...(options.relay?.externalAddress ? { externalAddress: options.relay.externalAddress } : {}),
      ...(options.relay?.openChallenge === true ? { openChallenge: true } : {}),
      listenHost: host,
      sendToClient: (to, data) => {
        port.send(to, data);
      },
      lookup: (network, name, now) => shared.store.lookup(network, name, now),
      ...(options.relay?.onEvent ? { onEvent: options.relay.onEvent } : {}),
    });
    const r = relay;
    closers.push(() => {
      r.close();
      return Promise.resolve();
    });
    port.start((from, data) => {
      if (RelayCore.claims(data)) {
        core.stats.datagramsIn++;
        core.stats.bytesIn += data.length;
        r.fromClient(from, data);
      } else feed({ type: 'datagram', socket: 'main', from, data, now: Date.now() });
    });
  }
  if (alternate) {
    alternate.socket.on('message', (data, rinfo) => {
      feed({ type: 'datagram', socket: 'alternate', from: endpointOf(rinfo), data, now: Date.now() });
    });
    // Unconnected UDP sockets report ICMP errors here on some systems; they are not fatal.
    alternate.socket.on('error', () => undefined);
  }
  for (const [id, o] of Object.entries(others) as [ServerSocketId, BoundSocket][]) {
    o.socket.on('message', (data, rinfo) => {
      feed({ type: 'datagram', socket: id, from: endpointOf(rinfo), data, now: Date.now() });
    });
    o.socket.on('error', () => undefined);
  }
  // The in-memory shared state expires its entries lazily; this keeps the counts honest when traffic is quiet.
  const sweep = memory ? setInterval(() => { memory.sweep(Date.now()); }, 1000) : undefined;
  sweep?.unref();
  let metrics: MetricsEndpoint | undefined;
  let closed: Promise<void> | undefined;
  const stats = (): ServerStats => {
    const total = sumStats([core.stats, ...(pool?.reports().map((r) => r.stats) ?? [])]);
    total.expirations = memory?.store.expirations ?? 0;
    if (relay) {
      total.unauthBytesIn += relay.core.stats.unauthBytesIn;
      total.malformed += relay.core.stats.malformed;
      total.unauthBytesOut += relay.core.stats.unauthBytesOut;
    }
    return total;
  };
  const state = (): ServerState => {
    const reports = pool?.reports() ?? [];
    const own = core.state;
    return {
      registrations: memory?.store.size ?? 0,
      pendingPushes: own.pendingPushes + reports.reduce((n, r) => n + (r.state?.pendingPushes ?? 0), 0),
      tcpConnections: own.tcpConnections,
      replayEntries: memory?.replays.entries ?? 0,
      replayBytes: memory?.replays.bytes ?? 0,
      wgInterfaces: memory?.wg.size ?? 0,
      wgSessions: own.wgSessions,
      pendingEffects: own.pendingEffects + reports.reduce((n, r) => n + (r.state?.pendingEffects ?? 0), 0),
    };
  };
  close = (): Promise<void> => {
    closed ??= (async () => {
      if (sweep) clearInterval(sweep);
      options.signal?.removeEventListener('abort', onAbort);
      await Promise.all([metrics?.close(), closeAll()]);
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
          return stats();
        },
        get registrations() {
          return memory?.store.size ?? 0;
        },
        get tcpConnections() {
          return streams.size;
        },
        // The responder runs in this process (with workers, WireGuard packets are passed here).
        wireguard: {
          get interfaces() {
            return memory?.wg.size ?? 0;
          },
          stats: core.wg?.stats ?? { initiations: 0, confirmations: 0, keepalives: 0, rejected: 0, endpointChanges: 0 },
        },
        get networks() {
          return core.networkCount;
        },
        ...(relay ? { relay: relayMetrics(relay, streamRelay) } : {}),
      });
    } catch (err) {
      await close();
      throw err;
    }
  }
  const tcpBound = tcpServer?.address();
  return {
    address: mainLocal,
    tcpAddress: tcpBound && typeof tcpBound === 'object' ? { address: normaliseAddress(tcpBound.address) ?? tcpBound.address, port: tcpBound.port } : undefined,
    alternateAddress: alternate?.local,
    rfc5780,
    metricsAddress: metrics?.address,
    serverId,
    udpBackend: backend,
    get stats() {
      return stats();
    },
    get registrations() {
      return memory?.store.size ?? 0;
    },
    workerPids: pool?.pids ?? [],
    get workerStats() {
      return pool?.reports().map((r) => ({ pid: r.pid, stats: r.stats })) ?? [];
    },
    get state() {
      return state();
    },
    relay: relay ? { get sessions() { return relay.sessions; }, stats: relay.core.stats } : undefined,
    streamRelay: streamRelay ? { get sessions() { return streamRelay.sessions; }, stats: streamRelay.core.stats } : undefined,
    setSecrets(next) {
      secrets = secretBytes(next);
      core.setNetworks(secrets.map((s) => deriveNetworkKeys(s)));
      relay?.setNetworks(secrets.map((s) => deriveNetworkKeys(s)));
      streamRelay?.setNetworks(secrets.map((s) => deriveNetworkKeys(s)));
      pool?.setSecrets(secrets);
    },
    close,
  };
}

function relayMetrics(relay: RelayDriver, stream: StreamRelayDriver | undefined): import('./metrics.js').RelayMetricsSource {
  return {
    get udpSessions() {
      return relay.sessions;
    },
    udp: relay.core.stats,
    get streamSessions() {
      return stream?.sessions ?? 0;
    },
    stream: stream?.core.stats ?? { sessionsTotal: 0, bytesRelayed: 0, refused: {} },
  };
}

/** Checks `alternateAddress` against the rest of the configuration; returns it normalised. */
function checkAlternateAddress(text: string, host: string, alternatePort: number | false | undefined, workers: number): string {
  const other = normaliseAddress(text);
  const why = (reason: string): BurrowError => BurrowError.invalidOption('alternateAddress', reason, text);
  if (!other) throw why('not an IP address (give a second address of this host, e.g. 203.0.113.2)');
  if (host === '::' || host === '0.0.0.0') throw why('a second IP address needs a specific listen address (e.g. --listen 203.0.113.1:3478): answers must name the address they leave from');
  if (other.includes(':') !== host.includes(':')) throw why(`it must be of the same family as the listen address ${host}`);
  if (other === host) throw why('it must differ from the listen address');
  if (alternatePort === false) throw why('RFC 5780 needs 2 IPs × 2 ports: drop --no-alt-port');
  if (workers > 1) throw why('it cannot be combined with workers yet (the four RFC 5780 sockets live in one process)');
  return other;
}

/** TCP rendezvous connections one source address may hold at once. */
const MAX_TCP_PER_SOURCE = 64;
/** Time a new TCP connection has to send its first whole message. */
const TCP_FIRST_MESSAGE_MS = 10_000;

interface TcpContext {
  /** Takes over connections whose first message is a stream relay request. */
  readonly streamRelay?: StreamRelayDriver;
  readonly maxConnections: number;
  readonly idleMs: number;
  readonly feed: (input: ServerInput) => void;
  readonly streams: Map<number, net.Socket>;
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
      const first = split.messages[0];
      if (!heard && ctx.streamRelay && first && StreamRelayCore.claims(first)) {
        // A stream relay connection: no longer the rendezvous core's.
        socket.removeAllListeners('data');
        ctx.streams.delete(id);
        ctx.streamRelay.handOver(socket, from, split.messages, split.rest);
        return;
      }
      if (!heard && split.messages.length > 0) {
        heard = true;
        socket.setTimeout(ctx.idleMs);
      }
      // Each message is kept by the core until its requests are answered: a copy, never a view of a reused buffer.
      for (const m of split.messages) ctx.feed({ type: 'stream-message', conn: id, from, data: m, now: Date.now() });
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      ctx.streams.delete(id);
      ctx.feed({ type: 'stream-closed', conn: id, now: Date.now() });
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
