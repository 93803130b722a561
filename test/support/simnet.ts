/**
 * An in-memory network with RFC 4787 NAT routers and a fake clock, for driving the sans-IO cores
 * deterministically (the fast counterpart of the real-NAT lab in src/lab). Datagrams take `latencyMs`
 * per hop group; loss is drawn from a seeded generator so every run is reproducible.
 *
 * A host may have several sockets (`socket()`), a router may hairpin and may hold static port mappings (what
 * UPnP/NAT-PMP/PCP would give), and `SimRelay` is a small TURN-like relay (allocations with a relayed address,
 * permissions per peer IP) for testing relayed transports without a real TURN server.
 */
import { createHash } from 'node:crypto';
import { endpointKey, type Endpoint } from '../../src/codec/address.js';

export type SimNatKind = 'none' | 'full-cone' | 'address-restricted' | 'port-restricted' | 'symmetric';

interface Router {
  readonly publicIp: string;
  readonly kind: SimNatKind;
  readonly lanPrefix: string;
  /** internal key (+ destination key for symmetric) → external port */
  readonly mappings: Map<string, number>;
  /** external port → internal endpoint */
  readonly reverse: Map<number, Endpoint>;
  /** external port → remote keys (ip or ip:port) this mapping has sent to */
  readonly permits: Map<number, Set<string>>;
  /** internal key → external port: static mappings (port forwards), used for every destination, open to anyone */
  readonly statics: Map<string, number>;
  /** Delivers packets from its LAN to its own public address back inside. */
  readonly hairpin: boolean;
  nextPort: number;
}

export type Receiver = (from: Endpoint, data: Uint8Array) => void;

interface Pending {
  at: number;
  seq: number;
  to: Endpoint;
  from: Endpoint;
  data: Uint8Array;
}

/** Deterministic PRNG (xorshift32). */
export function seeded(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

/** Deterministic "random" bytes for the cores: a counter hashed with a label. */
export function counterBytes(label: string): (n: number) => Uint8Array {
  let i = 0;
  return (n) => {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const h = createHash('sha256').update(`${label}/${i++}`).digest();
      const take = Math.min(32, n - filled);
      out.set(h.subarray(0, take), filled);
      filled += take;
    }
    return out;
  };
}

export class SimNet {
  now = 0;
  private seq = 0;
  private readonly queue: Pending[] = [];
  private readonly routers: Router[] = [];
  private readonly receivers = new Map<string, Receiver>();
  /** Every datagram delivered (with the time), for replay tests. */
  readonly captured: { from: Endpoint; to: Endpoint; data: Uint8Array; at: number }[] = [];
  lossRate = 0;
  private readonly rand: () => number;

  constructor(
    readonly latencyMs = 1,
    seed = 1,
  ) {
    this.rand = seeded(seed);
  }

  /** A router with public IP `publicIp` and a LAN whose addresses start with `lanPrefix`. */
  addRouter(publicIp: string, kind: SimNatKind, lanPrefix: string, opts: { hairpin?: boolean } = {}): void {
    this.routers.push({ publicIp, kind, lanPrefix, mappings: new Map(), reverse: new Map(), permits: new Map(), statics: new Map(), hairpin: opts.hairpin ?? false, nextPort: 40000 });
  }

  /** A static port mapping on the router with `publicIp`: `externalPort` ↔ `internal`, like a UPnP/PCP mapping. */
  addPortMapping(publicIp: string, externalPort: number, internal: Endpoint): void {
    const r = this.routers.find((x) => x.publicIp === publicIp);
    if (!r) throw new Error(`no router ${publicIp}`);
    r.statics.set(endpointKey(internal), externalPort);
    r.reverse.set(externalPort, internal);
  }

  /** Attaches a receiver for datagrams addressed to `at`. */
  listen(at: Endpoint, receiver: Receiver): void {
    this.receivers.set(endpointKey(at), receiver);
  }

  /** One socket of a host: several per host are fine (each its own port, its own NAT mapping). */
  socket(local: Endpoint, receiver: Receiver): SimSocket {
    this.listen(local, receiver);
    return {
      local,
      send: (to, data) => {
        this.send(local, to, data);
      },
      close: () => {
        this.receivers.delete(endpointKey(local));
      },
    };
  }

  private routerOfLan(address: string): Router | undefined {
    return this.routers.find((r) => r.kind !== 'none' && address.startsWith(r.lanPrefix));
  }

  /** Sees every datagram as it is sent (before loss), e.g. an on-path attacker. */
  tap: ((from: Endpoint, to: Endpoint, data: Uint8Array) => void) | undefined;

  /** Drops the datagrams it returns true for (a targeted loss pattern). */
  drop: ((from: Endpoint, to: Endpoint, data: Uint8Array) => boolean) | undefined;

  send(from: Endpoint, to: Endpoint, data: Uint8Array, latencyMs = this.latencyMs): void {
    this.tap?.(from, to, data);
    if (this.drop?.(from, to, data) === true) return;
    if (this.lossRate > 0 && this.rand() < this.lossRate) return;
    this.queue.push({ at: this.now + latencyMs, seq: this.seq++, from, to, data: Uint8Array.from(data) });
  }

  /** Delivers everything due by `until`, in time order. */
  runUntil(until: number, onIdle?: () => void): void {
    for (;;) {
      this.queue.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.queue[0];
      if (!next || next.at > until) break;
      this.queue.shift();
      this.now = Math.max(this.now, next.at);
      this.deliver(next);
      onIdle?.();
    }
    this.now = Math.max(this.now, until);
  }

  nextDeliveryAt(): number | undefined {
    let min: number | undefined;
    for (const p of this.queue) if (min === undefined || p.at < min) min = p.at;
    return min;
  }

  private deliver(p: Pending): void {
    let { from } = p;
    const to = p.to;
    const srcRouter = this.routerOfLan(from.address);
    const dstRouterLan = this.routerOfLan(to.address);
    if (srcRouter && dstRouterLan === srcRouter) {
      this.hand(from, to, p.data); // same LAN
      return;
    }
    if (srcRouter) {
      if (to.address === srcRouter.publicIp && !srcRouter.hairpin) return; // no hairpinning
      from = this.translateOut(srcRouter, from, to);
    }
    if (dstRouterLan) return; // private addresses are not routed on the "internet"
    const dstRouter = this.routers.find((r) => r.kind !== 'none' && r.publicIp === to.address);
    if (dstRouter) {
      const inside = this.translateIn(dstRouter, from, to.port);
      if (inside) this.hand(from, inside, p.data);
      return;
    }
    this.hand(from, to, p.data);
  }

  private hand(from: Endpoint, to: Endpoint, data: Uint8Array): void {
    this.captured.push({ from, to, data, at: this.now });
    this.receivers.get(endpointKey(to))?.(from, data);
  }

  private translateOut(r: Router, from: Endpoint, to: Endpoint): Endpoint {
    const fixed = r.statics.get(endpointKey(from));
    if (fixed !== undefined) return { address: r.publicIp, port: fixed };
    const key = r.kind === 'symmetric' ? `${endpointKey(from)}>${endpointKey(to)}` : endpointKey(from);
    let port = r.mappings.get(key);
    if (port === undefined) {
      port = r.kind === 'symmetric' ? 20000 + Math.floor(this.rand() * 40000) : r.nextPort++;
      r.mappings.set(key, port);
      r.reverse.set(port, from);
    }
    let permits = r.permits.get(port);
    if (!permits) r.permits.set(port, (permits = new Set()));
    permits.add(to.address);
    permits.add(endpointKey(to));
    return { address: r.publicIp, port };
  }

  private translateIn(r: Router, from: Endpoint, port: number): Endpoint | undefined {
    const inside = r.reverse.get(port);
    if (!inside) return undefined;
    if (r.statics.get(endpointKey(inside)) === port) return inside;
    const permits = r.permits.get(port) ?? new Set<string>();
    switch (r.kind) {
      case 'full-cone':
        return inside;
      case 'address-restricted':
        return permits.has(from.address) ? inside : undefined;
      case 'port-restricted':
      case 'symmetric':
        return permits.has(endpointKey(from)) ? inside : undefined;
      case 'none':
        return inside;
    }
  }

  /** Forgets every NAT mapping (a router reboot, or conntrack flushed); static mappings stay. */
  flushNat(): void {
    for (const r of this.routers) {
      r.mappings.clear();
      r.reverse.clear();
      r.permits.clear();
      for (const [inside, port] of r.statics) {
        const [address, portText] = [inside.slice(0, inside.lastIndexOf(':')), inside.slice(inside.lastIndexOf(':') + 1)];
        r.reverse.set(port, { address, port: Number(portText) });
      }
    }
  }
}

export interface SimSocket {
  readonly local: Endpoint;
  send(to: Endpoint, data: Uint8Array): void;
  close(): void;
}

/**
 * A TURN-like relay on the simulated internet, for sans-IO tests of relayed transports. A client allocates from one of
 * its sockets (through its NAT) and gets a relayed address; what it sends through the allocation leaves from the
 * relayed address, and what arrives there from a peer IP the allocation has sent to (a TURN permission, RFC 8656
 * section 9) is framed back to the client. Frames (sim only): 1 type byte (0 allocate, 1 allocated, 2 send, 3 data),
 * 1 length byte, the peer `ip:port` as text, then the payload.
 */
export class SimRelay {
  private nextPort = 49152;
  /** client's public endpoint key → allocation */
  private readonly allocations = new Map<string, { client: Endpoint; relayed: Endpoint; permits: Set<string> }>();
  /** Datagrams relayed, each way. */
  relayedOut = 0;
  relayedIn = 0;

  constructor(
    private readonly net: SimNet,
    readonly server: Endpoint,
  ) {
    net.listen(server, (from, data) => {
      this.fromClient(from, data);
    });
  }

  static frame(type: number, peer: Endpoint, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
    const text = Buffer.from(endpointKey(peer));
    return Buffer.concat([Buffer.from([type, text.length]), text, payload]);
  }

  static parse(data: Uint8Array): { type: number; peer: Endpoint; payload: Uint8Array } {
    const len = data[1] ?? 0;
    const text = Buffer.from(data.subarray(2, 2 + len)).toString();
    const i = text.lastIndexOf(':');
    const address = text.slice(0, i).replace(/^\[|\]$/g, '');
    return { type: data[0] ?? 0, peer: { address, port: Number(text.slice(i + 1)) }, payload: data.subarray(2 + len) };
  }

  private fromClient(from: Endpoint, data: Uint8Array): void {
    const f = SimRelay.parse(data);
    const key = endpointKey(from);
    if (f.type === 0) {
      let a = this.allocations.get(key);
      if (!a) {
        a = { client: from, relayed: { address: this.server.address, port: this.nextPort++ }, permits: new Set() };
        this.allocations.set(key, a);
        const alloc = a;
        this.net.listen(a.relayed, (peer, payload) => {
          if (!alloc.permits.has(peer.address)) return; // no permission for this peer
          this.relayedIn++;
          this.net.send(this.server, alloc.client, SimRelay.frame(3, peer, payload));
        });
      }
      this.net.send(this.server, from, SimRelay.frame(1, a.relayed));
      return;
    }
    const a = this.allocations.get(key);
    if (f.type !== 2 || !a) return;
    a.permits.add(f.peer.address);
    this.relayedOut++;
    this.net.send(a.relayed, f.peer, f.payload);
  }
}
