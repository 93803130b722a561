/**
 * The TCP connection to the rendezvous server for pipe, send and receive, following the server list (issue 12): a
 * stream transport (STUN messages framed by their own length, RFC 8489 section 6.2.2) whose far end changes when the
 * machine addresses a REGISTER to another server of the deployment (src/core/server-list.ts decides when). The new
 * connection leaves from the same local port as the old one, because every simultaneous open leaves from that port
 * and the partner is told its public mapping.
 *
 *  - Sends to the current server go down the connection; a send to another server closes the current connection and
 *    connects there (from the same address and port), holding what is sent meanwhile until it is up.
 *  - Only the current connection is heard: messages from it are delivered as from the current server, and its close
 *    (or a refused connect) is reported once through `onClosed`; the old connection's end is not.
 *  - Sends never wait on the network: a send held for a connection still being made counts as sent at once (like a
 *    UDP datagram), so a connect that hangs cannot hold up the end of a run.
 */
import net from 'node:net';
import { endpointKey, sameEndpoint, type Endpoint } from '../codec/address.js';
import { splitStunStream } from '../codec/stun.js';
import { BurrowError } from '../errors.js';
import type { DatagramTransport, TransportHandlers } from './transport.js';

/** What is held while a connection is being made (a few REGISTERs at most; older ones are dropped first). */
const MAX_HELD = 8;

export class ServerConnection implements DatagramTransport {
  readonly description = 'the TCP connection to the server';
  private socket: net.Socket;
  private server: Endpoint;
  private pending: Uint8Array = new Uint8Array(0);
  private held: Uint8Array[] = [];
  private connecting = false;
  private handlers: TransportHandlers | undefined;
  private closed = false;
  private readonly localAddress: string;
  private readonly localPort: number;

  /** `socket`: a connected socket to `server`. Later connections leave from its local address and port. */
  constructor(socket: net.Socket, server: Endpoint) {
    this.socket = socket;
    this.server = server;
    this.localAddress = socket.localAddress ?? '0.0.0.0';
    this.localPort = socket.localPort ?? 0;
  }

  get local(): Endpoint {
    return { address: this.localAddress, port: this.localPort };
  }

  /** The server the connection goes to now. */
  get current(): Endpoint {
    return this.server;
  }

  send(to: Endpoint, data: Uint8Array, done: () => void): void {
    if (this.closed) {
      done();
      return;
    }
    if (!sameEndpoint(to, this.server)) this.reconnect(to);
    if (this.connecting) {
      if (this.held.length >= MAX_HELD) this.held.shift();
      this.held.push(data);
      done();
      return;
    }
    if (this.socket.destroyed) {
      done();
      return;
    }
    this.socket.write(data, () => {
      done();
    });
  }

  listen(handlers: TransportHandlers): void {
    this.handlers = handlers;
    this.wire(this.socket);
  }

  close(): Promise<void> {
    this.closed = true;
    this.held = [];
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('close');
    this.socket.destroy();
    return Promise.resolve();
  }

  private wire(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      if (socket !== this.socket) return;
      const split = splitStunStream(this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk);
      if ('error' in split) {
        // Not STUN framing: nothing more on this connection can be trusted to line up.
        socket.destroy();
        return;
      }
      this.pending = split.rest;
      for (const m of split.messages) this.handlers?.onDatagram(this.server, m);
    });
    socket.on('error', () => undefined); // 'close' follows, which is what the machine hears about
    socket.on('close', () => {
      if (socket !== this.socket || this.closed) return;
      this.handlers?.onClosed(`the connection to the server at ${endpointKey(this.server)} closed`);
    });
  }

  /** Leaves the current server for `to`: a new connection from the same local address and port. */
  private reconnect(to: Endpoint): void {
    const old = this.socket;
    old.removeAllListeners('data');
    old.destroy();
    this.server = to;
    this.pending = new Uint8Array(0);
    this.held = [];
    this.connecting = true;
    const socket = net.connect({ host: to.address, port: to.port, localAddress: this.localAddress, localPort: this.localPort, noDelay: true });
    this.socket = socket;
    this.wire(socket);
    socket.once('connect', () => {
      if (socket !== this.socket || this.closed) return;
      this.connecting = false;
      const held = this.held;
      this.held = [];
      for (const data of held) socket.write(data);
    });
  }
}

/**
 * The first TCP connection to one of `servers`, tried in order (each for at most `perServerMs`, the last until the
 * deadline), from `local`. Resolves with the socket and the server it reached; `onMove` hears each server given up.
 */
export async function connectFirst(
  servers: readonly Endpoint[],
  local: Endpoint,
  deadline: number,
  perServerMs: number,
  signal: AbortSignal | undefined,
  onMove: (from: Endpoint, to: Endpoint) => void,
): Promise<{ socket: net.Socket; server: Endpoint }> {
  let lastError: Error | undefined;
  for (const [i, server] of servers.entries()) {
    const last = i === servers.length - 1;
    const budget = last ? Math.min(deadline - Date.now(), 10_000) : Math.min(deadline - Date.now(), perServerMs);
    if (budget <= 0) break;
    try {
      return { socket: await openControl(server, local, budget, deadline, signal), server };
    } catch (err) {
      lastError = err instanceof Error ? err : new Error(String(err));
      // Our own port taken, or cancelled: no other server helps.
      if (err instanceof BurrowError && (err.code === 'BIND_FAILED' || err.code === 'ABORTED')) throw err;
      const next = servers[i + 1];
      if (next) onMove(server, next);
    }
  }
  throw lastError ?? BurrowError.serverUnreachable(servers.map(endpointKey).join(', '), servers.length, 0);
}

/** The TCP connection to the rendezvous server, from the local port every later attempt reuses. */
export function openControl(server: Endpoint, local: Endpoint, budgetMs: number, deadline: number, signal: AbortSignal | undefined): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: server.address, port: server.port, localAddress: local.address, localPort: local.port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      signal?.removeEventListener('abort', onAbort);
      reject(BurrowError.serverUnreachable(endpointKey(server), 1, Math.round((deadline - Date.now()) / 1000)));
    }, Math.max(1, budgetMs));
    const onAbort = (): void => {
      socket.destroy();
      clearTimeout(timer);
      reject(BurrowError.aborted());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      reject(
        err.code === 'EADDRINUSE'
          ? BurrowError.bindFailed({ transport: 'tcp', address: local.address, port: local.port, role: 'local' }, err)
          : new BurrowError('SERVER_UNREACHABLE', `cannot reach the rendezvous server at ${endpointKey(server)} over TCP (${err.code ?? err.message}): ` +
            'it may not be running, or a firewall blocks TCP to that port. Check the address, and that TCP is open as well as UDP.', { cause: err }),
      );
    });
  });
}
