/**
 * The loopback proxy a relayed path is handed off through. A program cannot take over a relayed path's socket (the
 * TURN allocation lives on it, and Burrow keeps checking for a direct path on it), so Burrow stays on and gives the
 * program two loopback ports instead:
 *
 *   program socket 127.0.0.1:Q  ⇄  Burrow's proxy socket 127.0.0.1:P  ⇄  the path in use (relay, later direct)
 *
 * The program binds Q (`BURROW_LOCAL_PORT`) and exchanges datagrams with P (`BURROW_REMOTE_ADDRESS`/`PORT`), exactly
 * as it would with a direct path. Datagrams from anyone but 127.0.0.1:Q are dropped. Upstream, the proxy sends
 * through whichever path is selected (`setUpstream`; a move is invisible to the program), and it takes from the punch
 * socket and the relay allocation only datagrams from the partner's addresses of the paths used so far that are not
 * Burrow's own probes (STUN-framed PROBE and CLOSE): the rest goes on to the punch agent.
 */
import { endpointKey, type Endpoint } from '../codec/address.js';
import { Method } from '../codec/messages.js';
import { looksLikeStun } from '../codec/stun.js';
import type { DatagramTransport } from './transport.js';
import { bindUdp, closeUdp, endpointOf, type BoundSocket } from './udp.js';

/** Whether a datagram is one of the punch agent's peer messages (a probe, its answer, CLOSE). */
export function isPeerMessage(data: Uint8Array): boolean {
  if (!looksLikeStun(data)) return false;
  const type = ((data[0] ?? 0) << 8) | (data[1] ?? 0);
  const method = ((type & 0x3e00) >> 2) | ((type & 0x00e0) >> 1) | (type & 0x000f);
  return method === Method.PROBE || method === Method.CLOSE;
}

export interface ProxyCounters {
  /** Datagrams from the program sent upstream. */
  fromProgram: number;
  /** Datagrams from the partner delivered to the program. */
  toProgram: number;
  /** Datagrams from the program dropped because no path was selected, or from a stranger on loopback. */
  dropped: number;
}

export class UdpProxy {
  readonly counters: ProxyCounters = { fromProgram: 0, toProgram: 0, dropped: 0 };
  private upstream: { readonly transport: DatagramTransport; readonly remote: Endpoint } | undefined;
  /** `transport|remote` keys of every path used so far: late datagrams on the previous path still reach the program. */
  private readonly partners = new Set<string>();
  private closed = false;

  private constructor(
    private readonly socket: BoundSocket,
    /** The program's port: it binds 127.0.0.1:Q. */
    readonly program: Endpoint,
  ) {
    socket.socket.on('message', (data, rinfo) => {
      const from = endpointOf(rinfo);
      if (from.port !== program.port || from.address !== program.address) {
        this.counters.dropped++;
        return;
      }
      const up = this.upstream;
      if (!up) {
        this.counters.dropped++;
        return;
      }
      this.counters.fromProgram++;
      up.transport.send(up.remote, data, () => undefined);
    });
    socket.socket.on('error', () => undefined);
  }

  /**
   * Binds the proxy's socket (127.0.0.1:P) and picks a free port for the program (127.0.0.1:Q), or takes the
   * program's address as given (`burrow wg`: WireGuard's listen port, which WireGuard has bound already).
   */
  static async open(program?: Endpoint): Promise<UdpProxy> {
    if (program) return new UdpProxy(await bindUdp('127.0.0.1', 0), program);
    const probe = await bindUdp('127.0.0.1', 0);
    const chosen = probe.local;
    await closeUdp(probe.socket);
    const socket = await bindUdp('127.0.0.1', 0);
    return new UdpProxy(socket, chosen);
  }

  /** The proxy's own address: what the program sends to. */
  get address(): Endpoint {
    return this.socket.local;
  }

  /** Datagrams to the program go through here from now on, and those from the program go to `remote` via `transport`. */
  setUpstream(id: string, transport: DatagramTransport, remote: Endpoint): void {
    this.upstream = { transport, remote };
    this.partners.add(`${id}|${endpointKey(remote)}`);
  }

  /**
   * Also takes the partner's data from `remote` on transport `id`: a pair the agent validated (the partner answered
   * an authenticated probe from there). The two sides may select different pairs of one relayed path for a moment
   * (each sees the other's end differently: a relayed address, or a socket's mapping through an allocation), and the
   * partner's first datagrams then arrive on a pair that is valid here but not selected.
   */
  allow(id: string, remote: Endpoint): void {
    this.partners.add(`${id}|${endpointKey(remote)}`);
  }

  /**
   * An intercept for a transport (`UdpTransport.intercepts`, `RelayTransport.intercepts`): takes the partner's data
   * on a path in use (or used before) to the program, and leaves the agent's probes alone.
   */
  tap(id: string): (from: Endpoint, data: Uint8Array) => boolean {
    return (from, data) => {
      if (this.closed || !this.partners.has(`${id}|${endpointKey(from)}`) || isPeerMessage(data)) return false;
      this.counters.toProgram++;
      try {
        this.socket.socket.send(data, this.program.port, this.program.address, () => undefined);
      } catch {
        // closing: like a lost datagram
      }
      return true;
    };
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.socket.socket.removeAllListeners('message');
    return closeUdp(this.socket.socket);
  }
}
