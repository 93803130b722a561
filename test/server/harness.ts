/**
 * A whole in-memory server (src/server/local.ts) with short names for its inputs, for tests that drive it with a
 * fake clock: every effect is answered at once, so each call returns everything the input causes.
 */
import type { Endpoint } from '../../src/codec/address.js';
import { LocalServer } from '../../src/server/local.js';
import type { MemoryStore } from '../../src/server/store.js';
import type { ServerStats } from '../../src/server/stats.js';
import type { ServerAction, ServerSocketId } from '../../src/server/types.js';

export class TestServer extends LocalServer {
  datagram(socket: ServerSocketId, from: Endpoint, data: Uint8Array, now: number): ServerAction[] {
    return this.handle({ type: 'datagram', socket, from, data, now });
  }

  /** A timer input; the in-memory shared state is swept too, as startServer does once a second. */
  timer(now: number): ServerAction[] {
    this.memory.sweep(now);
    return this.handle({ type: 'timer', now });
  }

  streamMessage(conn: number, from: Endpoint, data: Uint8Array, now: number): ServerAction[] {
    return this.handle({ type: 'stream-message', conn, from, data, now });
  }

  streamClosed(conn: number, now: number): ServerAction[] {
    return this.handle({ type: 'stream-closed', conn, now });
  }

  get stats(): ServerStats {
    return this.core.stats;
  }

  get store(): MemoryStore {
    return this.memory.store;
  }

  /** WireGuard: interface records in the shared registry, and the responder's handshake sessions. */
  get wg(): { readonly peerCount: number; readonly sessionCount: number } {
    return { peerCount: this.memory.wg.size, sessionCount: this.core.wg?.sessionCount ?? 0 };
  }
}

export function sends(actions: readonly ServerAction[]): Extract<ServerAction, { type: 'send' }>[] {
  return actions.filter((a): a is Extract<ServerAction, { type: 'send' }> => a.type === 'send');
}
