/**
 * The Node driver of the stream relay (src/server/relay/stream.ts): takes over TCP connections of the rendezvous
 * listener whose first message is a STREAM-RELAY request, feeds their STUN messages to the pairing core, and splices
 * each pair: bytes copied both ways with backpressure, a byte rate per session (both directions together) and in
 * total, an idle timeout, and a half-close passed on.
 */
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import type { Endpoint } from '../codec/address.js';
import { splitStunStream } from '../codec/stun.js';
import type { NetworkKeys } from '../crypto/keys.js';
import { resolveRelayLimits, type RelayLimits } from '../server/relay/config.js';
import { StreamRelayCore, type StreamAction } from '../server/relay/stream.js';

/** Time a handed-over connection has to authenticate. */
const AUTH_TIMEOUT_MS = 10_000;
/** After one side has gone, how long the other has to take the last bytes. */
const LINGER_MS = 5_000;

/** A bucket that may go into debt: the sender is paused until the debt is paid back. */
class DebtBucket {
  private tokens: number;
  private stamp: number;
  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.stamp = now;
  }
  /** Takes `n`; returns the milliseconds to wait before taking more (0: none). */
  take(n: number, now: number): number {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.stamp) * this.rate) / 1000);
    this.stamp = now;
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }
}

interface Splice {
  readonly a: net.Socket;
  readonly b: net.Socket;
  readonly bucket: DebtBucket;
  lastActive: number;
  ended: boolean;
}

export interface StreamRelayDriverOptions {
  readonly enabled: boolean;
  readonly networks: readonly NetworkKeys[];
  readonly limits?: Partial<RelayLimits>;
  readonly pairTimeoutMs?: number;
}

export class StreamRelayDriver {
  readonly core: StreamRelayCore;
  private readonly limits: RelayLimits;
  private readonly sockets = new Map<number, net.Socket>();
  private readonly splices = new Set<Splice>();
  private readonly total: DebtBucket;
  private readonly timer: NodeJS.Timeout;
  private nextConn = 1;

  constructor(options: StreamRelayDriverOptions) {
    this.limits = resolveRelayLimits(options.limits);
    this.core = new StreamRelayCore({ enabled: options.enabled, ...(options.limits ? { limits: options.limits } : {}), nonceKey: randomBytes(32), ...(options.pairTimeoutMs !== undefined ? { pairTimeoutMs: options.pairTimeoutMs } : {}) });
    this.core.setNetworks(options.networks);
    this.total = new DebtBucket(this.limits.totalRateBytesPerSecond, Math.max(this.limits.totalRateBytesPerSecond / 4, 1 << 20), Date.now());
    this.timer = setInterval(() => { this.tick(); }, 1000);
    this.timer.unref();
  }

  setNetworks(networks: readonly NetworkKeys[]): void {
    this.core.setNetworks(networks);
  }

  get sessions(): number {
    return this.core.sessions;
  }

  /** Takes over `socket`, whose first STUN messages are `messages` (the first a STREAM-RELAY request). */
  handOver(socket: net.Socket, from: Endpoint, messages: readonly Uint8Array[], rest: Uint8Array): void {
    const conn = this.nextConn++;
    this.sockets.set(conn, socket);
    this.core.opened(conn, from);
    socket.setTimeout(AUTH_TIMEOUT_MS, () => socket.destroy());
    let pending: Uint8Array = rest;
    const onData = (chunk: Buffer): void => {
      const joined = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
      const split = splitStunStream(joined);
      if ('error' in split) {
        socket.destroy();
        return;
      }
      pending = split.rest;
      for (const m of split.messages) this.feed(conn, m);
    };
    socket.on('data', onData);
    socket.on('close', () => {
      this.sockets.delete(conn);
      this.core.closed(conn);
    });
    socket.on('error', () => undefined);
    for (const m of messages) this.feed(conn, m);
  }

  close(): void {
    clearInterval(this.timer);
    for (const s of this.sockets.values()) s.destroy();
    this.sockets.clear();
    this.splices.clear();
  }

  private feed(conn: number, message: Uint8Array): void {
    const socket = this.sockets.get(conn);
    if (!socket) return;
    this.execute(this.core.message(conn, message, Date.now()));
    if (this.core.isAuthenticated(conn)) socket.setTimeout(0);
  }

  private execute(actions: readonly StreamAction[]): void {
    for (const a of actions) {
      switch (a.type) {
        case 'send':
          this.sockets.get(a.conn)?.write(a.data);
          break;
        case 'close':
          this.sockets.get(a.conn)?.end();
          break;
        case 'splice': {
          const sa = this.sockets.get(a.a);
          const sb = this.sockets.get(a.b);
          if (sa && sb) this.splice(sa, sb);
          break;
        }
      }
    }
  }

  private splice(a: net.Socket, b: net.Socket): void {
    for (const s of [a, b]) {
      s.removeAllListeners('data');
      s.setTimeout(0);
      s.setNoDelay(true);
    }
    const splice: Splice = { a, b, bucket: new DebtBucket(this.limits.rateBytesPerSecond, Math.max(this.limits.rateBytesPerSecond / 4, 256 * 1024), Date.now()), lastActive: Date.now(), ended: false };
    this.splices.add(splice);
    this.pipe(splice, a, b);
    this.pipe(splice, b, a);
    const finish = (): void => {
      if (splice.ended) return;
      splice.ended = true;
      this.splices.delete(splice);
      // Let the other side take what is queued for it, then make sure both are gone.
      for (const s of [a, b]) s.end();
      setTimeout(() => {
        a.destroy();
        b.destroy();
      }, LINGER_MS).unref();
    };
    a.once('close', finish);
    b.once('close', finish);
  }

  /** Copies `src` to `dst`, pausing `src` for the rate and for `dst`'s backpressure. */
  private pipe(splice: Splice, src: net.Socket, dst: net.Socket): void {
    let holds = 0;
    const hold = (): void => {
      if (holds++ === 0) src.pause();
    };
    const release = (): void => {
      if (--holds === 0 && !src.destroyed) src.resume();
    };
    src.on('data', (chunk: Buffer) => {
      const now = Date.now();
      splice.lastActive = now;
      this.core.stats.bytesRelayed += chunk.length;
      if (!dst.write(chunk)) {
        hold();
        dst.once('drain', release);
      }
      const wait = Math.max(splice.bucket.take(chunk.length, now), this.total.take(chunk.length, now));
      if (wait > 0) {
        hold();
        setTimeout(release, wait).unref();
      }
    });
    src.on('end', () => {
      dst.end();
    });
  }

  private tick(): void {
    const now = Date.now();
    this.execute(this.core.timer(now));
    for (const s of [...this.splices]) {
      if (now - s.lastActive >= this.limits.idleSeconds * 1000) {
        this.splices.delete(s);
        s.a.destroy();
        s.b.destroy();
      }
    }
  }
}
