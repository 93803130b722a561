/**
 * The rendezvous server's main UDP socket, behind one small interface with two implementations:
 *
 *  - `native`: the burrow_udp addon (native/udp_batch.c, built by `npm ci` through node-gyp), which receives and
 *    sends in batches of up to 64 datagrams per system call (Linux recvmmsg/sendmmsg). Node's dgram makes one
 *    system call and several allocations per datagram, which capped a STUN server at well below coturn's rate
 *    (docs/protocol.md, "Scaling out", has the figures). The addon knows no protocol: every datagram reaches the
 *    core, which decides everything.
 *  - `dgram`: Node's own socket, used where the addon is not built (no compiler, not Linux) or when asked for.
 *
 * `udpBackend: 'auto'` (the default) takes the addon when it loads and dgram otherwise; 'native' fails with a clear
 * error when the addon is missing. The environment variable BURROW_UDP_BACKEND sets the default (for benchmarks).
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { bytesToAddress, familyOf, parseIPv6, type Endpoint, type Family } from '../codec/address.js';
import { BurrowError } from '../errors.js';
import { bindUdp, closeUdp, endpointOf, sendUdpNoCallback, type BoundSocket } from './udp.js';

export type UdpBackend = 'auto' | 'native' | 'dgram';

/** Received datagrams are copied into slabs of this size (see NativePort.copy). */
const SLAB_BYTES = 64 * 1024;

export interface DatagramPort {
  readonly backend: 'native' | 'dgram';
  readonly local: Endpoint;
  readonly family: Family;
  readonly dualStack: boolean;
  /**
   * Delivers every datagram to `onDatagram`. The bytes are the caller's to keep (a copy for the native port, whose
   * receive buffer is reused for the next batch).
   */
  start(onDatagram: (from: Endpoint, data: Uint8Array) => void): void;
  /** Queues a datagram; never throws (a closed socket or an unroutable destination drops it). */
  send(to: Endpoint, data: Uint8Array): void;
  close(): Promise<void>;
}

export interface OpenPortOptions {
  readonly address: string;
  readonly port: number;
  readonly dualStack: boolean;
  readonly recvBufferSize: number;
  /** Several sockets on one port, the kernel spreading senders among them (the workers of `--workers`). */
  readonly reusePort?: boolean;
}

// ------------------------------------------------------------------------------------------------
// The addon

interface NativeStats {
  readonly received: number;
  readonly sent: number;
  readonly dropped: number;
  readonly truncated: number;
  readonly batches: number;
  readonly backlog: number;
}

interface BatchSocket {
  readonly port: number;
  readonly rx: ArrayBuffer;
  readonly rxMeta: ArrayBuffer;
  readonly tx: ArrayBuffer;
  readonly txMeta: ArrayBuffer;
  start(onBatch: (count: number) => void): void;
  flush(count: number): number;
  stats(): NativeStats;
  close(): void;
}

interface Addon {
  readonly BatchSocket: new (options: { address: string; port: number; ipv6: boolean; dualStack: boolean; recvBufferSize: number; reusePort: boolean }) => BatchSocket;
  readonly BATCH: number;
  readonly SLOT: number;
  readonly META: number;
}

const ADDON_PATH = fileURLToPath(new URL('../../../build/Release/burrow_udp.node', import.meta.url));

let loaded: { addon: Addon } | { error: string } | undefined;

/** The addon, or why it cannot be used here. Loaded once. */
export function nativeUdp(): { addon: Addon } | { error: string } {
  if (loaded) return loaded;
  if (process.platform !== 'linux') {
    loaded = { error: `the batched UDP socket needs Linux (recvmmsg/sendmmsg); this is ${process.platform}` };
    return loaded;
  }
  try {
    loaded = { addon: createRequire(import.meta.url)(ADDON_PATH) as Addon };
  } catch (err) {
    loaded = { error: `the native UDP addon is not built (${ADDON_PATH}: ${err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err)}); build it with \`npm rebuild\` (needs python3, make and a C compiler)` };
  }
  return loaded;
}

/** Which backend `udpBackend` means here; throws when 'native' is asked for and cannot be had. */
export function chooseBackend(requested: UdpBackend | undefined): 'native' | 'dgram' {
  const fromEnv = process.env.BURROW_UDP_BACKEND;
  const want = requested ?? (fromEnv === 'native' || fromEnv === 'dgram' || fromEnv === 'auto' ? fromEnv : 'auto');
  if (want === 'dgram') return 'dgram';
  const native = nativeUdp();
  if ('addon' in native) return 'native';
  if (want === 'native') throw new BurrowError('USAGE', `cannot use the native UDP backend: ${native.error}.`);
  return 'dgram';
}

export async function openDatagramPort(backend: 'native' | 'dgram', options: OpenPortOptions): Promise<DatagramPort> {
  if (backend === 'dgram') {
    if (options.reusePort) throw new Error('the dgram backend cannot share a port between processes by SO_REUSEPORT');
    return new DgramPort(await bindUdp(options.address, options.port, { dualStack: options.dualStack, recvBufferSize: options.recvBufferSize }));
  }
  const native = nativeUdp();
  if (!('addon' in native)) throw new BurrowError('USAGE', `cannot use the native UDP backend: ${native.error}.`);
  return new NativePort(native.addon, options);
}

/** A port around a dgram socket that is already bound (a worker receives the primary's by handle passing). */
export function dgramPort(bound: BoundSocket): DatagramPort {
  return new DgramPort(bound);
}

class DgramPort implements DatagramPort {
  readonly backend = 'dgram';
  readonly local: Endpoint;
  readonly family: Family;
  readonly dualStack: boolean;

  constructor(readonly bound: BoundSocket) {
    this.local = bound.local;
    this.family = bound.family;
    this.dualStack = bound.dualStack;
    // Unconnected UDP sockets report ICMP errors here on some systems; they are not fatal.
    bound.socket.on('error', () => undefined);
  }

  start(onDatagram: (from: Endpoint, data: Uint8Array) => void): void {
    this.bound.socket.on('message', (data, rinfo) => {
      onDatagram(endpointOf(rinfo), data);
    });
  }

  send(to: Endpoint, data: Uint8Array): void {
    sendUdpNoCallback(this.bound, to, data);
  }

  close(): Promise<void> {
    return closeUdp(this.bound.socket);
  }
}

class NativePort implements DatagramPort {
  readonly backend = 'native';
  readonly local: Endpoint;
  readonly family: Family;
  readonly dualStack: boolean;
  private readonly socket: BatchSocket;
  private readonly rx: Uint8Array;
  private readonly rxMeta: DataView;
  private readonly rxMetaBytes: Uint8Array;
  private readonly tx: Uint8Array;
  private readonly txMeta: DataView;
  private readonly txMetaBytes: Uint8Array;
  private readonly batch: number;
  private readonly slot: number;
  private readonly meta: number;
  private queued = 0;
  private slab = new Uint8Array(0);
  private slabUsed = 0;
  private inBatch = false;
  private flushScheduled = false;
  private closed = false;

  constructor(addon: Addon, options: OpenPortOptions) {
    this.family = familyOf(options.address);
    this.dualStack = this.family === 6 && options.dualStack;
    try {
      this.socket = new addon.BatchSocket({
        address: options.address,
        port: options.port,
        ipv6: this.family === 6,
        dualStack: this.dualStack,
        recvBufferSize: options.recvBufferSize,
        reusePort: options.reusePort === true,
      });
    } catch (err) {
      // The same codes as dgram's (EADDRINUSE, EACCES, EADDRNOTAVAIL, EAFNOSUPPORT), for the same messages.
      const e = new Error(err instanceof Error ? err.message : String(err)) as NodeJS.ErrnoException;
      e.code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      throw e;
    }
    this.local = { address: options.address, port: this.socket.port };
    this.batch = addon.BATCH;
    this.slot = addon.SLOT;
    this.meta = addon.META;
    this.rx = new Uint8Array(this.socket.rx);
    this.rxMeta = new DataView(this.socket.rxMeta);
    this.rxMetaBytes = new Uint8Array(this.socket.rxMeta);
    this.tx = new Uint8Array(this.socket.tx);
    this.txMeta = new DataView(this.socket.txMeta);
    this.txMetaBytes = new Uint8Array(this.socket.txMeta);
  }

  start(onDatagram: (from: Endpoint, data: Uint8Array) => void): void {
    this.socket.start((count) => {
      this.inBatch = true;
      try {
        for (let i = 0; i < count; i++) {
          const m = i * this.meta;
          const length = this.rxMeta.getUint32(m, true);
          const port = this.rxMeta.getUint16(m + 4, true);
          const b = this.rxMetaBytes;
          const address = b[m + 6] === 4 ? `${b[m + 8] ?? 0}.${b[m + 9] ?? 0}.${b[m + 10] ?? 0}.${b[m + 11] ?? 0}` : bytesToAddress(b.subarray(m + 8, m + 24));
          // A copy: the receive buffer is reused for the next batch, and the core keeps views of what it is given.
          const data = this.copy(i * this.slot, length);
          onDatagram({ address, port }, data);
        }
      } finally {
        this.inBatch = false;
        this.flush();
      }
    });
  }

  send(to: Endpoint, data: Uint8Array): void {
    if (this.closed || data.length > this.slot) return;
    const m = this.queued * this.meta;
    if (!writeAddress(to.address, this.txMetaBytes, m + 8)) return;
    this.tx.set(data, this.queued * this.slot);
    this.txMeta.setUint32(m, data.length, true);
    this.txMeta.setUint16(m + 4, to.port, true);
    this.txMetaBytes[m + 6] = to.address.includes(':') ? 6 : 4;
    this.queued++;
    if (this.queued === this.batch) this.flush();
    else if (!this.inBatch && !this.flushScheduled) {
      // Sends made outside a receive batch (timers, answers from another process) leave together at the end of
      // the current task.
      this.flushScheduled = true;
      queueMicrotask(() => {
        this.flushScheduled = false;
        this.flush();
      });
    }
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.flush();
      this.closed = true;
      this.socket.close();
    }
    return Promise.resolve();
  }

  /**
   * Copies `length` bytes of the receive buffer into a slab of our own: one allocation per 64 KiB of datagrams rather
   * than one per datagram (Node's own pool uses 8 KiB slabs), which keeps the allocator's churn, and so the process's
   * memory, low under load. A slab lives as long as any datagram in it is referenced.
   */
  private copy(at: number, length: number): Uint8Array {
    if (this.slabUsed + length > this.slab.length) {
      this.slab = new Uint8Array(Math.max(SLAB_BYTES, length));
      this.slabUsed = 0;
    }
    const out = this.slab.subarray(this.slabUsed, this.slabUsed + length);
    out.set(this.rx.subarray(at, at + length));
    // 8-byte aligned, as Node's pool does.
    this.slabUsed = (this.slabUsed + length + 7) & ~7;
    return out;
  }

  /** The addon's counters (datagrams received, sent, dropped under back-pressure). */
  stats(): NativeStats {
    return this.socket.stats();
  }

  private flush(): void {
    if (this.queued === 0 || this.closed) return;
    const n = this.queued;
    this.queued = 0;
    this.socket.flush(n);
  }
}

/** Writes an IP literal's bytes at `at` (4 for IPv4, 16 for IPv6); false when it is not one. */
function writeAddress(address: string, out: Uint8Array, at: number): boolean {
  if (!address.includes(':')) {
    let part = 0;
    let value = 0;
    let digits = 0;
    for (let i = 0; i < address.length; i++) {
      const c = address.charCodeAt(i) - 48;
      if (c === -2) {
        if (digits === 0 || part === 3) return false;
        out[at + part++] = value;
        value = 0;
        digits = 0;
        continue;
      }
      if (c < 0 || c > 9 || ++digits > 3) return false;
      value = value * 10 + c;
      if (value > 255) return false;
    }
    if (digits === 0 || part !== 3) return false;
    out[at + 3] = value;
    return true;
  }
  const bytes = parseIPv6(address);
  if (!bytes) return false;
  out.set(bytes, at);
  return true;
}

