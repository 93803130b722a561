/**
 * The relay sessions of `burrow wg --continuous` (the decisions are src/core/wg-relay.ts). Each relayed WireGuard
 * peer gets one `punchPath()` session with the partner's `burrow wg`: registered under names derived from the two
 * interface keys (`wgRelayName`), mode `wg`, relayed paths only, the relay the rendezvous server offers in the
 * introduction (its built-in relay, or the coturn fleet of `serve --turn`, with the credentials it minted), and a
 * proxy whose program is WireGuard's own port on 127.0.0.1. WireGuard's endpoint for the peer is then the proxy.
 */
import type { Endpoint } from '../codec/address.js';
import { wgRelayName } from '../core/wg-relay.js';
import { BurrowError } from '../errors.js';
import { punchPath, type PunchSession, type RelayInfo } from './punch.js';

export interface WgRelaySessionOptions {
  /**
   * The rendezvous servers, HOST:PORT[,HOST:PORT...], read when a session starts: the one `burrow wg` talks to now
   * first, then the others of `--server S1,S2` for the session's own failover.
   */
  readonly server: string | (() => string);
  readonly secret: string | Uint8Array;
  /** This interface's public key (base64). */
  readonly ownKey: string;
  /** How long one session waits for the partner and a path. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

export interface WgRelaySessionEvents {
  readonly ready: (proxy: Endpoint, relay: RelayInfo | undefined, upstream: string | undefined) => void;
  /** The session failed before a path, or ended after one (the partner left, the relay was lost, stop()). */
  readonly ended: (detail: string, error: BurrowError | undefined) => void;
}

interface Running {
  readonly abort: AbortController;
  session: PunchSession | undefined;
  stopped: boolean;
  done: Promise<void>;
}

/** Read through a call: stop() may have set it during an await (lint would assume it cannot). */
function isStopped(entry: Running): boolean {
  return entry.stopped;
}

export class WgRelaySessions {
  private readonly running = new Map<string, Running>();

  constructor(private readonly options: WgRelaySessionOptions) {}

  get size(): number {
    return this.running.size;
  }

  has(key: string): boolean {
    return this.running.has(key);
  }

  /** Starts the session for peer `key`; its proxy sends to WireGuard at 127.0.0.1:`listenPort`. */
  start(key: string, listenPort: number, events: WgRelaySessionEvents): void {
    if (this.running.has(key)) return;
    const abort = new AbortController();
    const onAbort = (): void => {
      abort.abort();
    };
    this.options.signal?.addEventListener('abort', onAbort, { once: true });
    const entry: Running = { abort, session: undefined, stopped: false, done: Promise.resolve() };
    const run = async (): Promise<void> => {
      let session: PunchSession;
      try {
        session = await punchPath({
          server: typeof this.options.server === 'string' ? this.options.server : this.options.server(),
          secret: this.options.secret,
          name: wgRelayName(this.options.ownKey, key),
          peer: wgRelayName(key, this.options.ownKey),
          timeoutMs: this.options.timeoutMs,
          signal: abort.signal,
          relay: 'only',
          purpose: 'wg',
          proxyProgram: { address: '127.0.0.1', port: listenPort },
        });
      } catch (err) {
        const error = err instanceof BurrowError ? err : undefined;
        if (!entry.stopped) events.ended(err instanceof Error ? err.message : String(err), error);
        return;
      }
      entry.session = session;
      if (!session.proxy) {
        // Cannot happen with relayed paths only; a handoff would leave WireGuard without a path.
        await session.close();
        if (!entry.stopped) events.ended('the session agreed on a direct path between the burrow sockets, not a relayed one', undefined);
        return;
      }
      if (entry.stopped) {
        await session.close();
        return;
      }
      events.ready({ address: session.result.remoteAddress, port: session.result.remotePort }, session.result.relay, session.result.upstream);
      await session.ended;
      await session.close();
      if (!isStopped(entry)) events.ended('the relay session ended (the partner left, or the relay stopped answering)', undefined);
    };
    this.running.set(key, entry);
    entry.done = run().finally(() => {
      this.options.signal?.removeEventListener('abort', onAbort);
      if (this.running.get(key) === entry) this.running.delete(key);
    });
  }

  /** Ends the session for `key` (CLOSE to the partner, the allocation deleted, the proxy closed). */
  async stop(key: string): Promise<void> {
    const entry = this.running.get(key);
    if (!entry) return;
    entry.stopped = true;
    this.running.delete(key);
    if (entry.session) await entry.session.close();
    else entry.abort.abort();
    await entry.done;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.running.keys()].map((k) => this.stop(k)));
  }
}
