/**
 * Datagram transports: what the driver (driver.ts) sends through and receives from on a machine's behalf. One
 * interface for a UDP socket (`UdpTransport`), a TCP connection to the rendezvous server carrying STUN-framed
 * messages (`StreamTransport`), and later a relay allocation (a TURN client: Send/Data indications or ChannelData
 * over its own socket to the TURN server) or a birthday socket. A machine never sees the difference: it names the
 * transport by id and gets `{ from, data }` back from it.
 */
import type net from 'node:net';
import type { Endpoint } from '../codec/address.js';
import { splitStunStream } from '../codec/stun.js';
import { bindUdp, closeUdp, endpointOf, sendUdp, type BoundSocket } from './udp.js';

export interface DatagramTransport {
  /** A short name for errors: "the UDP socket", "the TCP connection to the server", "the relay allocation". */
  readonly description: string;
  /** The local address it is bound to (a relay allocation: the socket it reaches the relay from). */
  readonly local: Endpoint;
  /** Sends one datagram; never throws (a failure is like a lost datagram). `done` runs once it has left. */
  send(to: Endpoint, data: Uint8Array, done: () => void): void;
  /**
   * Starts delivering: `onDatagram` for every datagram (or framed message), `onError` when the transport fails
   * (fatal), `onClosed` when the far end closed it. Called once.
   */
  listen(handlers: TransportHandlers): void;
  /** Stops delivering and releases it. */
  close(): Promise<void>;
}

export interface TransportHandlers {
  readonly onDatagram: (from: Endpoint, data: Uint8Array) => void;
  readonly onError: (err: Error) => void;
  readonly onClosed: (reason: string) => void;
}

/** A bound UDP socket. */
export class UdpTransport implements DatagramTransport {
  readonly description = 'the UDP socket';
  /**
   * Datagrams for another user of this socket (a relay allocation's TURN traffic, a proxy's data): when it returns
   * true the datagram is taken and not delivered to the listener.
   */
  readonly intercepts: ((from: Endpoint, data: Uint8Array) => boolean)[] = [];

  constructor(readonly bound: BoundSocket) {}

  /** Binds a UDP socket (rejects with Node's error, e.g. EADDRINUSE). */
  static async bind(address: string, port: number): Promise<UdpTransport> {
    return new UdpTransport(await bindUdp(address, port));
  }

  get local(): Endpoint {
    return this.bound.local;
  }

  send(to: Endpoint, data: Uint8Array, done: () => void): void {
    sendUdp(this.bound, to, data, () => undefined, done);
  }

  listen(handlers: TransportHandlers): void {
    this.bound.socket.on('message', (data, rinfo) => {
      const from = endpointOf(rinfo);
      for (const take of this.intercepts) if (take(from, data)) return;
      handlers.onDatagram(from, data);
    });
    this.bound.socket.on('error', handlers.onError);
  }

  close(): Promise<void> {
    this.bound.socket.removeAllListeners('message');
    return closeUdp(this.bound.socket);
  }
}

/**
 * A TCP connection to the rendezvous server as a datagram transport: each STUN message (RFC 8489 section 6.2.2,
 * delimited by its own length field) is one datagram from the server; sends go down the connection whatever their
 * destination (there is only the server at the other end).
 */
export class StreamTransport implements DatagramTransport {
  readonly description = 'the TCP connection to the server';
  private pending: Uint8Array = new Uint8Array(0);

  constructor(
    private readonly socket: net.Socket,
    private readonly server: Endpoint,
  ) {}

  get local(): Endpoint {
    return { address: this.socket.localAddress ?? '', port: this.socket.localPort ?? 0 };
  }

  send(_to: Endpoint, data: Uint8Array, done: () => void): void {
    if (this.socket.destroyed) {
      done();
      return;
    }
    this.socket.write(data, () => {
      done();
    });
  }

  listen(handlers: TransportHandlers): void {
    this.socket.on('data', (chunk: Buffer) => {
      const split = splitStunStream(this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk);
      if ('error' in split) {
        // Not STUN framing: nothing more on this connection can be trusted to line up.
        this.socket.destroy();
        return;
      }
      this.pending = split.rest;
      for (const m of split.messages) handlers.onDatagram(this.server, m);
    });
    this.socket.on('error', () => undefined); // 'close' follows, which is what the machine hears about
    this.socket.on('close', () => {
      handlers.onClosed('the server closed the connection');
    });
  }

  close(): Promise<void> {
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('close');
    this.socket.destroy();
    return Promise.resolve();
  }
}
