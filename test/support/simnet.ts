/**
 * An in-memory network with RFC 4787 NAT routers and a fake clock, for driving the sans-IO cores
 * deterministically (the fast counterpart of the real-NAT lab in src/lab). Datagrams take `latencyMs`
 * per hop group; loss is drawn from a seeded generator so every run is reproducible.
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
  /** Every datagram delivered, for replay tests. */
  readonly captured: { from: Endpoint; to: Endpoint; data: Uint8Array }[] = [];
  lossRate = 0;
  private readonly rand: () => number;

  constructor(
    readonly latencyMs = 1,
    seed = 1,
  ) {
    this.rand = seeded(seed);
  }

  /** A router with public IP `publicIp` and a LAN whose addresses start with `lanPrefix`. */
  addRouter(publicIp: string, kind: SimNatKind, lanPrefix: string): void {
    this.routers.push({ publicIp, kind, lanPrefix, mappings: new Map(), reverse: new Map(), permits: new Map(), nextPort: 40000 });
  }

  /** Attaches a receiver for datagrams addressed to `at`. */
  listen(at: Endpoint, receiver: Receiver): void {
    this.receivers.set(endpointKey(at), receiver);
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
      if (to.address === srcRouter.publicIp) return; // no hairpinning
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
    this.captured.push({ from, to, data });
    this.receivers.get(endpointKey(to))?.(from, data);
  }

  private translateOut(r: Router, from: Endpoint, to: Endpoint): Endpoint {
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

  /** Forgets every NAT mapping (a router reboot, or conntrack flushed). */
  flushNat(): void {
    for (const r of this.routers) {
      r.mappings.clear();
      r.reverse.clear();
      r.permits.clear();
    }
  }
}
