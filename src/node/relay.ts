/**
 * The Node driver of the built-in relay (src/server/relay/core.ts): relayed UDP sockets, one per allocation, bound on
 * the server's own IP address from a port range; the sweep timer; registration lookups against the shared state.
 * The main port's datagrams that the relay claims (ChannelData, TURN methods) are handed here by src/node/server.ts,
 * and its answers leave through the main port.
 */
import dgram from 'node:dgram';
import { randomBytes, randomInt } from 'node:crypto';
import { familyOf, normaliseAddress, type Endpoint, type Family } from '../codec/address.js';
import { RelayCore, type RelayEvent, type RelaySink } from '../server/relay/core.js';
import type { RelayLimits } from '../server/relay/config.js';
import type { NetworkKeys } from '../crypto/keys.js';
import type { Registration } from '../server/store.js';
import type { Awaitable } from '../server/types.js';
import { isPromiseLike } from '../server/machine.js';
import { chooseBackend, openDatagramPort, type DatagramPort } from './datagram-port.js';

export interface RelayDriverOptions {
  readonly enabled: boolean;
  readonly networks: readonly NetworkKeys[];
  readonly limits?: Partial<RelayLimits>;
  /** Relayed ports: `[low, high]` inclusive; undefined: any port the kernel picks. */
  readonly ports?: readonly [number, number];
  /** The host the main port is bound to ('::' or '0.0.0.0' for every address). */
  readonly listenHost: string;
  /**
   * The address put in XOR-RELAYED-ADDRESS, for a server behind a 1:1 NAT (coturn's --external-ip). Default: the
   * address the relayed socket is bound to.
   */
  readonly externalAddress?: string;
  /** Sends from the main port. */
  readonly sendToClient: (to: Endpoint, data: Uint8Array) => void;
  readonly lookup: (network: string, name: string, now: number) => Awaitable<Registration | undefined>;
  readonly onEvent?: (event: RelayEvent) => void;
  /**
   * Answer the 401/438 challenge to an unauthenticated request even when it is shorter than the answer (standard TURN
   * clients such as turnutils_uclient or browsers send a bare Allocate), within the per-source request rate. Off by
   * default: burrow's own client pads its first Allocate, and unauthenticated traffic never gets more bytes back.
   */
  readonly openChallenge?: boolean;
}

/** Tries this many ports of the range before an Allocate fails with 508. */
const PORT_ATTEMPTS = 40;
/**
 * Relayed sockets that use the native batched socket (src/node/datagram-port.ts: up to 64 datagrams per system call
 * each way, about 256 KiB of buffers each); the allocations beyond them get Node's dgram socket.
 */
const NATIVE_RELAYED_PORTS = 64;

export class RelayDriver {
  readonly core: RelayCore;
  private readonly sockets = new Map<number, DatagramPort>();
  private readonly backend: 'native' | 'dgram';
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly options: RelayDriverOptions) {
    const sink: RelaySink = {
      toClient: (to, data) => {
        options.sendToClient(to, data);
      },
      toPeer: (alloc, to, data) => {
        this.sockets.get(alloc)?.send(to, data);
      },
      bind: (alloc, client, family) => {
        void this.bind(alloc, client, family);
      },
      release: (alloc) => {
        const r = this.sockets.get(alloc);
        this.sockets.delete(alloc);
        void r?.close();
      },
      lookup: (ticket, network, name) => {
        let answer: Awaitable<Registration | undefined>;
        try {
          answer = options.lookup(network, name, Date.now());
        } catch {
          this.core.lookupDone(ticket, undefined, Date.now());
          return;
        }
        if (isPromiseLike(answer)) {
          answer.then((reg) => { this.core.lookupDone(ticket, reg, Date.now()); }, () => { this.core.lookupDone(ticket, undefined, Date.now()); });
        } else {
          this.core.lookupDone(ticket, answer, Date.now());
        }
      },
      event: (e) => options.onEvent?.(e),
    };
    this.backend = chooseBackend(undefined);
    this.core = new RelayCore({ enabled: options.enabled, ...(options.limits ? { limits: options.limits } : {}), nonceKey: randomBytes(32), seed: randomInt(0, 2 ** 31), openChallenge: options.openChallenge === true }, sink);
    this.core.setNetworks(options.networks);
    this.timer = setInterval(() => { this.core.timer(Date.now()); }, 1000);
    this.timer.unref();
  }

  /** A datagram from the main port that `RelayCore.claims`. */
  fromClient(from: Endpoint, data: Uint8Array): void {
    this.core.fromClient(from, data, Date.now());
  }

  setNetworks(networks: readonly NetworkKeys[]): void {
    this.core.setNetworks(networks);
  }

  get sessions(): number {
    return this.core.sessions;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.core.close();
    for (const r of this.sockets.values()) void r.close();
    this.sockets.clear();
  }

  private async bind(alloc: number, client: Endpoint, family: Family): Promise<void> {
    let relayed: Endpoint | undefined;
    try {
      const host = await this.bindHost(client, family);
      relayed = await this.bindPort(alloc, host);
    } catch {
      relayed = undefined;
    }
    if (this.closed) {
      void this.sockets.get(alloc)?.close();
      this.sockets.delete(alloc);
      return;
    }
    this.core.bound(alloc, relayed, Date.now());
  }

  private nativeCount(): number {
    let n = 0;
    for (const p of this.sockets.values()) if (p.backend === 'native') n++;
    return n;
  }

  /** The address to bind: the listen address when specific, else the one the kernel would answer `client` from. */
  private async bindHost(client: Endpoint, family: Family): Promise<string> {
    const h = this.options.listenHost;
    if (h !== '::' && h !== '0.0.0.0' && familyOf(h) === family) return h;
    return routeSource(client, family);
  }

  private async bindPort(alloc: number, host: string): Promise<Endpoint | undefined> {
    const range = this.options.ports;
    const attempts = range ? Math.min(PORT_ATTEMPTS, range[1] - range[0] + 1) : 1;
    for (let i = 0; i < attempts; i++) {
      const port = range ? range[0] + randomInt(0, range[1] - range[0] + 1) : 0;
      const backend = this.backend === 'native' && this.nativeCount() < NATIVE_RELAYED_PORTS ? 'native' : 'dgram';
      let socket: DatagramPort;
      try {
        socket = await openDatagramPort(backend, { address: host, port, dualStack: false, recvBufferSize: 1 << 20 });
      } catch {
        continue; // in use: another port of the range
      }
      socket.start((from, data) => {
        this.core.fromPeer(alloc, from, data, Date.now());
      });
      this.sockets.set(alloc, socket);
      return { address: this.options.externalAddress ?? socket.local.address, port: socket.local.port };
    }
    return undefined;
  }
}

/** The local address the kernel routes `to` from (a connected UDP socket's own address; nothing is sent). */
async function routeSource(to: Endpoint, family: Family): Promise<string> {
  const socket = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4' });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(to.port, to.address, () => {
        resolve();
      });
    });
    const a = socket.address();
    return normaliseAddress(a.address) ?? a.address;
  } finally {
    socket.close();
  }
}
