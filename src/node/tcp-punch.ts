/**
 * `connectStream()`: a TCP path to the partner by simultaneous open, then the encrypted stream over it. The
 * decisions (when to connect where, retries, which side takes the LAN) are the sans-IO TCP punch's
 * (src/core/tcp-punch.ts, theory there); this driver opens the connection to the server (a stream transport), the
 * LAN listener, the connect attempts and the stream handshakes, and reports their outcomes back.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { sameEndpoint, type Endpoint } from '../codec/address.js';
import { DEFAULT_PORT, type PeerMode } from '../codec/messages.js';
import type { PunchEvent, PunchResult } from '../core/punch/index.js';
import type { DriverInput } from '../core/machine.js';
import { DEFAULT_FAILOVER_MS } from '../core/server-list.js';
import { TcpPunchMachine, type TcpIoAction, type TcpPunchInput, type TcpPunchOutcome, type TcpWinner } from '../core/tcp-punch.js';
import { deriveNetworkKeys, type NetworkKeys } from '../crypto/keys.js';
import { BurrowError, isBurrowError } from '../errors.js';
import { hostCandidates } from './candidates.js';
import { runMachine, type MachineRun } from './driver.js';
import { secretBytes, validateNames } from './punch.js';
import { connectReusingReads, SecureStream, StreamVersionError } from './secure-stream.js';
import { connectFirst, ServerConnection } from './server-connection.js';
import { endpointOf, parseLocal, resolveServers } from './udp.js';

export interface StreamConnectOptions {
  readonly server: string;
  readonly secret: string | Uint8Array;
  readonly name: string;
  readonly peer: string;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: PunchEvent) => void;
  /** Local `[ADDR:]PORT`; default any address, a free port. */
  readonly local?: string;
  /**
   * What this side runs (default `pipe`; `send` and `receive` pair with each other), told to the partner; an
   * incompatible partner ends both sides with MODE_MISMATCH instead of a stream the other cannot read.
   */
  readonly purpose?: PeerMode;
}

export interface StreamConnection {
  readonly stream: SecureStream;
  readonly result: PunchResult;
}

type Run = MachineRun<TcpPunchOutcome, TcpPunchInput | DriverInput>;

/** The id of the stream transport to the server, as the machine names it. */
const SERVER = 'server';

export async function connectStream(options: StreamConnectOptions): Promise<StreamConnection> {
  validateNames(options.name, options.peer, options.timeoutMs);
  options.signal?.throwIfAborted();
  // Several servers (HOST:PORT,HOST:PORT): the first that takes the connection, then the next when it stops answering.
  const servers = await resolveServers(options.server, DEFAULT_PORT, 'server');
  const family = servers[0]?.address.includes(':') === true ? 6 : 4;
  const local = parseLocal(options.local, family);
  const keys = deriveNetworkKeys(secretBytes(options.secret));
  const timeoutMs = options.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;

  const listener = await listenLan(local.address);
  let control: net.Socket;
  let server: Endpoint;
  try {
    ({ socket: control, server } = await connectFirst(servers, local, deadline, DEFAULT_FAILOVER_MS, options.signal, (from, to) => {
      options.onEvent?.({ type: 'failover', from, to });
    }));
  } catch (err) {
    listener.close();
    throw err;
  }
  // The others in list order after the one reached, moved to when it stops answering (src/core/server-list.ts).
  const at = servers.findIndex((s) => sameEndpoint(s, server));
  const fallbacks = [...servers.slice(at + 1), ...servers.slice(0, at)];
  const lanPort = (listener.address() as net.AddressInfo).port;
  const machine = new TcpPunchMachine({
    name: options.name,
    peer: options.peer,
    keys,
    server,
    ...(fallbacks.length > 0 ? { fallbacks } : {}),
    serverTransport: SERVER,
    localAddress: local.address,
    localPort: control.localPort ?? 0,
    lanHosts: hostCandidates({ address: local.address, port: lanPort }, family, server),
    timeoutMs: Math.max(1, deadline - Date.now()),
    sessionNonce: randomBytes(16),
    randomBytes: (n) => randomBytes(n),
    ...(options.purpose !== undefined ? { purpose: options.purpose } : {}),
  });

  /** Connections being handshaken or handshaken, by the machine's name for them. */
  const sockets = new Map<string, net.Socket>();
  const streams = new Map<string, SecureStream>();
  const keyOf = (w: TcpWinner): string => ('attempt' in w ? `a${w.attempt}` : `c${w.conn}`);
  let nextConn = 1;
  const io = new ConnectIo(options, keys, local.address, sockets, streams, keyOf);
  const run = runMachine<TcpPunchInput, TcpIoAction, TcpPunchOutcome, PunchEvent>(machine, {
    transports: { [SERVER]: new ServerConnection(control, server, local.address) },
    signal: options.signal,
    onEvent: options.onEvent,
    onAction: (a, r) => {
      io.execute(a, r);
    },
  });
  listener.on('connection', (socket: net.Socket) => {
    socket.on('error', () => undefined);
    if (run.settled) {
      socket.destroy();
      return;
    }
    const conn = nextConn++;
    sockets.set(keyOf({ conn }), socket);
    run.feed({ type: 'incoming', conn, from: endpointOf({ address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 }), now: Date.now() });
  });

  const release = (keep?: string): void => {
    listener.close();
    for (const [k, s] of streams) if (k !== keep) s.destroy();
    for (const [k, s] of sockets) if (k !== keep) s.destroy();
  };
  try {
    const outcome = await run.result;
    const key = keyOf(outcome.winner);
    const stream = streams.get(key);
    release(key);
    if (!stream) throw BurrowError.socket('the winning TCP connection vanished', key);
    return { stream, result: outcome.result };
  } catch (err) {
    release();
    throw err;
  }
}

/** Executes the TCP punch's own actions: connects, abandons, handshakes. */
class ConnectIo {
  constructor(
    private readonly options: StreamConnectOptions,
    private readonly keys: NetworkKeys,
    private readonly localAddress: string,
    private readonly sockets: Map<string, net.Socket>,
    private readonly streams: Map<string, SecureStream>,
    private readonly keyOf: (w: TcpWinner) => string,
  ) {}

  execute(a: TcpIoAction, run: Run): void {
    switch (a.type) {
      case 'connect':
        this.connect(a.attempt, a.target, a.fromPort, a.context, run);
        return;
      case 'abandon':
        this.drop(this.keyOf({ attempt: a.attempt }));
        return;
      case 'secure-incoming': {
        const socket = this.sockets.get(this.keyOf({ conn: a.conn }));
        if (socket) {
          this.secure(socket, { conn: a.conn }, a.context, run, (detail) => {
            this.drop(this.keyOf({ conn: a.conn }));
            run.feed({ type: 'incoming-failed', conn: a.conn, detail, now: Date.now() });
          });
        }
        return;
      }
      case 'reject-incoming':
        this.drop(this.keyOf({ conn: a.conn }));
        return;
      default: {
        const never: never = a;
        throw new Error(`unknown action ${String(never)}`);
      }
    }
  }

  private drop(key: string): void {
    this.sockets.get(key)?.destroy();
    this.sockets.delete(key);
  }

  private connect(attempt: number, target: Endpoint, fromPort: number, context: Uint8Array, run: Run): void {
    const key = this.keyOf({ attempt });
    // The stream reads straight from the socket's reused buffer (no allocation per 64 KiB read).
    const socket = connectReusingReads({ host: target.address, port: target.port, localAddress: this.localAddress, localPort: fromPort, allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: 15_000 });
    this.sockets.set(key, socket);
    let failed = false;
    const fail = (why: 'refused' | 'handshake', detail: string): void => {
      if (failed) return;
      failed = true;
      this.drop(key);
      run.feed({ type: 'attempt-failed', attempt, why, detail, now: Date.now() });
    };
    socket.once('error', (err: NodeJS.ErrnoException) => {
      fail('refused', err.code ?? err.message);
    });
    socket.once('connect', () => {
      if (run.settled) return;
      run.feed({ type: 'attempt-connected', attempt, now: Date.now() });
      this.secure(socket, { attempt }, context, run, (detail) => {
        fail('handshake', detail);
      });
    });
  }

  /** Runs the stream handshake on a connected socket; the machine decides whether it wins. */
  private secure(socket: net.Socket, via: TcpWinner, context: Uint8Array, run: Run, onFailure: (detail: string) => void): void {
    const { options } = this;
    SecureStream.open(socket, { name: options.name, peer: options.peer, authKey: this.keys.streamAuth, context, timeoutMs: 5000, ...(options.signal ? { signal: options.signal } : {}) }).then(
      (stream) => {
        if (run.settled) {
          stream.destroy();
          return;
        }
        this.streams.set(this.keyOf(via), stream);
        run.feed({ type: 'secured', winner: via, localPort: socket.localPort ?? 0, now: Date.now() });
      },
      (err: unknown) => {
        // Our partner (its HELLO authenticated) on an incompatible release: retrying cannot help.
        if (err instanceof StreamVersionError) {
          run.fail(err);
          return;
        }
        // A handshake that fails authentication is someone else, not our partner: keep trying.
        onFailure(isBurrowError(err) ? err.message : String(err));
      },
    );
  }
}

/** The LAN listener (see src/core/tcp-punch.ts, step 3): any address of ours, a free port. */
function listenLan(address: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: 15_000 });
    server.once('error', reject);
    server.listen({ host: address, port: 0 }, () => {
      server.off('error', reject);
      server.on('error', () => undefined);
      resolve(server);
    });
  });
}
