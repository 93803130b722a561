/**
 * The server machine's public contract: what goes in (`ServerInput`), what comes out (`ServerAction`), the
 * events it reports, and the effects it asks its shared state for (`Effect`, answered by `EffectResults`).
 * src/server/core.ts explains how they fit together.
 */
import type { Endpoint } from '../codec/address.js';
import type { Outcome } from '../codec/messages.js';
import type { WgPeerInfo } from '../codec/wg-messages.js';
import type { NatMapping } from '../codec/messages.js';
import type { RegisterResult, Registration } from './store.js';
import type { ReplayVerdict } from './replay.js';

/**
 * A value now, or later. The shared state's in-memory implementations answer at once, so a single-process server
 * pays no promise per request; shared implementations (other processes, Redis) answer later.
 */
export type Awaitable<T> = T | PromiseLike<T>;

/**
 * The server's UDP sockets: the main port, the alternate port used for NAT mapping tests, and, with a second IP
 * address (RFC 5780 behaviour discovery), that address on the main port and on the alternate port.
 */
export type ServerSocketId = 'main' | 'alternate' | 'other-ip' | 'other-ip-port';

/** Where a registration came from, and where its answers and pushes go. */
export type Channel = { readonly kind: 'udp' } | { readonly kind: 'tcp'; readonly conn: number };

/**
 * Who holds a registration's way back to its peer: the server it registered with (its NAT admits only that
 * server's packets) and the channel on that server. Every process of one server shares its UDP socket, so any
 * of them can answer on a `udp` channel; a `tcp` channel is one connection, held by the process that accepted it.
 */
export interface Owner {
  readonly server: string;
  readonly channel: Channel;
}

/**
 * An introduction on its way to the peer that waits for it. The server that made the introduction encodes it
 * (it holds the network's keys); the recipient's owner sends it on its channel and re-sends it until the
 * recipient registers again (see src/server/pushes.ts).
 */
export interface Push {
  /** The recipient's registration: store name space and name. */
  readonly network: string;
  readonly recipient: string;
  /** The recipient registration's `version` when the push was made; a newer one acknowledges it. */
  readonly version: string;
  readonly owner: Owner;
  /** The recipient's address as its owner saw it. */
  readonly to: Endpoint;
  /** The encoded INTRODUCE indication, or a NOTICE. */
  readonly data: Uint8Array;
  /**
   * A NOTICE (partner left, displaced): sent twice at once and not kept for re-sends, since the recipient
   * acknowledges nothing (it stops); a lost pair is caught by its next refresh anyway (no partner, or 409).
   */
  readonly notice?: boolean;
}

/** What an interface announces about itself in WG-SYNC (src/server/wg-registry.ts). */
export interface WgFacts {
  readonly listenPort: number;
  readonly hosts: readonly Endpoint[];
  readonly mapping: NatMapping;
}

/**
 * Requests to the shared state (src/server/shared.ts): the registration store, the router and the WireGuard
 * registry. The core emits them as `effect` actions and resumes when the answer comes back as an `effect-done`
 * (or `effect-refused`, `effect-failed`) input.
 */
export type Effect =
  /** `refresh`: the sender refreshes a session it holds, so it must not displace a newer one (RegistrationStore.register). */
  | { readonly op: 'register'; readonly registration: Registration; readonly now: number; readonly refresh?: boolean }
  | { readonly op: 'lookup'; readonly network: string; readonly name: string; readonly now: number }
  | { readonly op: 'withdraw'; readonly network: string; readonly name: string; readonly nonce: string; readonly owner: Owner | undefined; readonly now: number }
  | { readonly op: 'deliver'; readonly push: Push }
  | { readonly op: 'wg-announce'; readonly network: string; readonly key: Uint8Array; readonly facts: WgFacts; readonly now: number }
  | { readonly op: 'wg-lookup'; readonly network: string; readonly keys: readonly Uint8Array[]; readonly now: number }
  | { readonly op: 'wg-endpoint'; readonly network: string; readonly key: Uint8Array; readonly endpoint: Endpoint; readonly now: number };

/**
 * The replay guard of an authenticated request, carried by its first effect: the effect is carried out only if
 * the shared replay guard has not seen `fingerprint` (src/server/replay.ts), in one step with it.
 */
export interface Guard {
  readonly fingerprint: Uint8Array;
  readonly now: number;
  /** The request's own TIMESTAMP: a shared guard refuses one older than its memory ('stale'). */
  readonly timestamp?: number;
}

/** The answer to each effect, by `op`. */
export interface EffectResults {
  readonly register: RegisterResult;
  readonly lookup: Registration | undefined;
  readonly withdraw: Registration | undefined;
  /** False: nobody listens for the owner's server (it is gone), so the recipient is treated as absent. */
  readonly deliver: boolean;
  readonly 'wg-announce': undefined;
  readonly 'wg-lookup': readonly WgPeerInfo[];
  readonly 'wg-endpoint': undefined;
}

export type EffectOp = Effect['op'];

/**
 * Inputs carry their time. Datagram and message bytes must not change afterwards: the core keeps views of them
 * until the requests they caused are answered.
 */
export type ServerInput =
  | { readonly type: 'datagram'; readonly socket: ServerSocketId; readonly from: Endpoint; readonly data: Uint8Array; readonly now: number }
  /** A WireGuard-shaped datagram a worker passed on (`to-wg-responder`): counted and rate-limited there already. */
  | { readonly type: 'wg-datagram'; readonly socket: ServerSocketId; readonly from: Endpoint; readonly data: Uint8Array; readonly now: number }
  /** One STUN message from TCP connection `conn`, framed by the driver (splitStunStream). */
  | { readonly type: 'stream-message'; readonly conn: number; readonly from: Endpoint; readonly data: Uint8Array; readonly now: number }
  /** TCP connection `conn` closed: its registrations go with it. */
  | { readonly type: 'stream-closed'; readonly conn: number; readonly now: number }
  /** A push the router delivered to this server, for a registration it owns. */
  | { readonly type: 'push'; readonly push: Push; readonly now: number }
  | { readonly type: 'effect-done'; readonly ticket: number; readonly result: EffectResults[EffectOp]; readonly now: number }
  /** A guarded effect was not carried out: its request is a replay (or the guard is full). */
  | { readonly type: 'effect-refused'; readonly ticket: number; readonly verdict: Exclude<ReplayVerdict, 'fresh'>; readonly now: number }
  /** The shared state could not answer (a store that is down, a lost worker link); `reason` is for logs. */
  | { readonly type: 'effect-failed'; readonly ticket: number; readonly reason: string; readonly now: number }
  | { readonly type: 'timer'; readonly now: number };

export type ServerEvent =
  /** `worker`: the process id of the worker that took it, in a multi-process server. */
  | { readonly type: 'registered'; readonly network: string; readonly name: string; readonly from: Endpoint; readonly isNew: boolean; readonly displaced: boolean; readonly worker?: number }
  | { readonly type: 'introduced'; readonly network: string; readonly a: string; readonly b: string }
  /** The partner's server did not take the push: the partner counts as absent and its registration is withdrawn. */
  | { readonly type: 'partner-unreachable'; readonly network: string; readonly name: string; readonly server: string }
  /** A session of `name` was replaced by a newer one (told with a NOTICE), or a refresh of a replaced one refused (409). */
  | { readonly type: 'displaced'; readonly network: string; readonly name: string; readonly refused: boolean }
  /** `name` withdrew (or its connection closed) while its partner `partner` still waited: the partner was told. */
  | { readonly type: 'partner-left'; readonly network: string; readonly name: string; readonly partner: string }
  | { readonly type: 'wg-endpoint'; readonly network: string; readonly key: string; readonly endpoint: Endpoint }
  | { readonly type: 'outcome'; readonly network: string; readonly name: string; readonly outcome: Outcome }
  | { readonly type: 'rejected'; readonly from: Endpoint; readonly reason: string }
  /** The shared state failed to answer a request (`op`), e.g. its store is unreachable. */
  | { readonly type: 'store-error'; readonly op: EffectOp; readonly reason: string }
  /** A worker process of a multi-process server exited unasked; the server stops (src/node/cluster.ts). */
  | { readonly type: 'worker-exited'; readonly pid: number; readonly code: number | null; readonly signal: string | null };

export type ServerAction =
  | { readonly type: 'send'; readonly socket: ServerSocketId; readonly to: Endpoint; readonly data: Uint8Array }
  | { readonly type: 'send-stream'; readonly conn: number; readonly data: Uint8Array }
  | { readonly type: 'close-stream'; readonly conn: number }
  /** Ask the shared state; the answer comes back as `effect-done`/`-refused`/`-failed` with the same ticket. */
  | { readonly type: 'effect'; readonly ticket: number; readonly effect: Effect; readonly guard: Guard | undefined }
  /**
   * A WireGuard-shaped datagram for the process that holds this server's WireGuard sessions (a worker of a
   * multi-process server has none: see src/node/cluster.ts).
   */
  | { readonly type: 'to-wg-responder'; readonly socket: ServerSocketId; readonly from: Endpoint; readonly data: Uint8Array }
  | { readonly type: 'event'; readonly event: ServerEvent };
