/**
 * The router: delivers a push to the server that owns its recipient's registration, because the recipient's NAT
 * admits only packets from the server it registered with (tailscale's DERP mesh forwards to the node that holds a
 * peer for the same reason). A server listens for the pushes addressed to its id and sends them on its own
 * socket or connection.
 *
 * "Nobody listens" is an answer, not an error: the owner is gone (stopped, crashed, restarted under a new id),
 * so the recipient is treated as absent. In one process `LocalRouter` delivers by a function call; the workers of
 * a multi-process server reach the primary's `LocalRouter` over IPC (src/node/server-ipc.ts); across servers a
 * Redis router PUBLISHes to the owner's channel, whose receiver count says whether anyone listened.
 */
import type { Awaitable, Push } from './types.js';

export type PushListener = (push: Push) => void;

export interface Router {
  /** Hands `push` to the listener of `push.owner.server`; false when there is none. */
  deliver(push: Push): Awaitable<boolean>;
  /** Starts delivering the pushes for `server` to `listener` (one listener per server); returns how to stop. */
  listen(server: string, listener: PushListener): Awaitable<() => void>;
}

export class LocalRouter implements Router {
  private readonly listeners = new Map<string, PushListener>();

  deliver(push: Push): boolean {
    const listener = this.listeners.get(push.owner.server);
    if (!listener) return false;
    listener(push);
    return true;
  }

  listen(server: string, listener: PushListener): () => void {
    if (this.listeners.has(server)) throw new Error(`server ${server} already has a push listener`);
    this.listeners.set(server, listener);
    return () => {
      if (this.listeners.get(server) === listener) this.listeners.delete(server);
    };
  }
}
