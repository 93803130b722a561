/**
 * `connectStream()`: a TCP path to the partner by simultaneous open, or through the stream relay of the server that
 * introduced the pair, then the encrypted stream over it. The decisions (when to connect where, retries, which side
 * takes the LAN, when to fall back to the relay and which connection wins) are the sans-IO TCP punch's
 * (src/core/tcp-punch.ts, theory there); this driver opens the connection to the server (a stream transport), the
 * LAN listener, the connect attempts, the stream relay connection and the stream handshakes, and reports their
 * outcomes back. The stream handshake runs end to end over the relay too: the server only copies ciphertext.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { endpointKey, sameEndpoint, type Endpoint } from '../codec/address.js';
import { DEFAULT_PORT, type PeerMode } from '../codec/messages.js';
import type { PunchEvent, PunchResult } from '../core/punch/index.js';
import type { DriverInput } from '../core/machine.js';
import { DEFAULT_FAILOVER_MS } from '../core/server-list.js';
import { TcpPunchMachine, type StreamRelayMode, type TcpIoAction, type TcpPunchInput, type TcpPunchOutcome, type TcpWinner } from '../core/tcp-punch.js';
import { deriveNetworkKeys, type NetworkKeys } from '../crypto/keys.js';
import { BurrowError, isBurrowError } from '../errors.js';
import { hostCandidates } from './candidates.js';
import { runMachine, type MachineRun } from './driver.js';
import { secretBytes, validateNames } from './punch.js';
import { connectReusingReads, SecureStream, StreamVersionError } from './secure-stream.js';
import { connectFirst, ServerConnection } from './server-connection.js';
import { connectStreamRelay, StreamRelayError } from './stream-relay-client.js';
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
  /**
   * 'auto' (the default): when TCP simultaneous open has found no path 3 s after the introduction, fall back to the
   * stream relay of the server that introduced the pair (direct attempts go on meanwhile; a direct connection that
   * completes first still wins); 'never': direct paths only (NO_PATH as before); 'only': the relay only, no direct
   * attempt (the partner learns no address of ours from us).
   */
  readonly relay?: StreamRelayMode;
  /** Called when the stream relay is opened (`server`: `HOST:PORT`), for progress lines. */
  readonly onRelay?: (server: string) => void;
}

/** The relay a relayed stream goes through. */
export interface StreamRelayInfo {
  /** Always the rendezvous server's built-in relay: TURN servers carry datagrams only. */
  readonly kind: 'builtin';
  /** The server, `HOST:PORT` (its TCP port): the one that introduced the pair. */
  readonly server: string;
}

/** The path of a stream: direct or LAN, or `path: 'relay'` with `relay` (then remote is the server's address). */
export interface StreamResult extends PunchResult {
  readonly relay?: StreamRelayInfo;
}

export interface StreamConnection {
  readonly stream: SecureStream;
  readonly result: StreamResult;
}

type Run = MachineRun<TcpPunchOutcome, TcpPunchInput | DriverInput>;

/**
 * A relayed stream sends an empty record after this long without one, so that the server's stream relay (idle timeout
 * `--relay-idle`, 60 s by default) never ends a quiet session (a prompt, an idle ssh).
 */
export const RELAY_KEEPALIVE_MS = 20_000;

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
    // Relay 'only' tells the partner no address of ours beyond what the server sees.
    lanHosts: options.relay === 'only' ? [] : hostCandidates({ address: local.address, port: lanPort }, family, server),
    ...(options.relay !== undefined ? { relay: options.relay } : {}),
    timeoutMs: Math.max(1, deadline - Date.now()),
    sessionNonce: randomBytes(16),
    randomBytes: (n) => randomBytes(n),
    ...(options.purpose !== undefined ? { purpose: options.purpose } : {}),
  });

  /** Connections being handshaken or handshaken, by the machine's name for them. */
  const sockets = new Map<string, net.Socket>();
  const streams = new Map<string, SecureStream>();
  const keyOf = (w: TcpWinner): string => ('attempt' in w ? `a${w.attempt}` : 'conn' in w ? `c${w.conn}` : 'relay');
  let nextConn = 1;
  // Ends a stream relay connection still waiting at the server when the run settles.
  const relayAbort = new AbortController();
  const io = new ConnectIo(options, keys, local.address, sockets, streams, keyOf, relayAbort.signal, deadline);
  const run = runMachine<TcpPunchInput, TcpIoAction, TcpPunchOutcome, PunchEvent>(machine, {
    transports: { [SERVER]: new ServerConnection(control, server) },
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
    relayAbort.abort();
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
    if (outcome.relay) stream.keepAlive(RELAY_KEEPALIVE_MS);
    const result: StreamResult = outcome.relay ? { ...outcome.result, relay: { kind: 'builtin', server: endpointKey(outcome.relay.server) } } : outcome.result;
    return { stream, result };
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
    private readonly relaySignal: AbortSignal,
    private readonly deadline: number,
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
      case 'relay-connect':
        this.relay(a.server, a.context, run);
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

  /** Opens the server's stream relay for this pair, then runs the stream handshake over the spliced connection. */
  private relay(server: Endpoint, context: Uint8Array, run: Run): void {
    const { options } = this;
    const key = this.keyOf({ relay: true });
    options.onRelay?.(endpointKey(server));
    connectStreamRelay({
      server,
      keys: this.keys,
      name: options.name,
      peer: options.peer,
      localAddress: this.localAddress,
      timeoutMs: Math.max(1, this.deadline - Date.now()),
      signal: this.relaySignal,
    }).then(
      (socket) => {
        if (run.settled) {
          socket.destroy();
          return;
        }
        this.sockets.set(key, socket);
        run.feed({ type: 'relay-spliced', now: Date.now() });
        this.secure(socket, { relay: true }, context, run, (detail) => {
          this.drop(key);
          run.feed({ type: 'relay-failed', code: undefined, detail, handshake: true, now: Date.now() });
        });
      },
      (err: unknown) => {
        if (run.settled) return;
        const code = err instanceof StreamRelayError ? err.code : undefined;
        run.feed({ type: 'relay-failed', code, detail: err instanceof Error ? err.message : String(err), now: Date.now() });
      },
    );
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
