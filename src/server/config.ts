/** The server's configuration and limits, with their defaults resolved in one place. */
import type { Endpoint } from '../codec/address.js';
import type { NetworkKeys } from '../crypto/keys.js';
import type { KeyPair } from '../crypto/wireguard.js';
import type { WgLimits } from './wg.js';
import type { RelayPolicy } from './relay/config.js';

export interface ServerLimits {
  /**
   * The longest registration lifetime: what a REGISTER without REFRESH-INTERVAL gets (an older client). One that
   * declares its refresh period gets `missedRefreshes` of them, within [1 s, this].
   */
  readonly lifetimeSeconds: number;
  /** How many refresh periods a registration outlives its last refresh (REFRESH-INTERVAL × this). */
  readonly missedRefreshes: number;
  readonly maxRegistrations: number;
  /** Accepted clock difference for timestamps of authenticated requests. */
  readonly timestampWindowMs: number;
  /** Per source IP: datagrams per second and burst (this bounds Binding answers too, docs/protocol.md §5). */
  readonly perSourceRate: number;
  readonly perSourceBurst: number;
  /** Slots in the per-source table (power of two, 16 bytes each). */
  readonly rateTableSlots: number;
  /**
   * Answer bare RFC 8489 Binding requests (20 bytes, or 28 with FINGERPRINT), whose minimal answer is up to 24
   * bytes longer than the request. On by default: that is what standard STUN clients send. Off ("strict"), the
   * server never answers anything unauthenticated with more bytes than it carried.
   */
  readonly answerBareBindings: boolean;
  /** Authenticated messages remembered per timestamp window (the in-memory replay cache). */
  readonly replayCapacity: number;
  /**
   * Requests to the shared state in flight at once; beyond it, new authenticated requests are dropped (counted
   * in `storeBusy`) rather than queued without bound.
   */
  readonly maxPendingEffects: number;
  /** A request to the shared state unanswered for this long fails (the client retries). */
  readonly effectTimeoutMs: number;
}

export const DEFAULT_LIMITS: ServerLimits = {
  lifetimeSeconds: 60,
  missedRefreshes: 3,
  maxRegistrations: 100_000,
  timestampWindowMs: 30_000,
  perSourceRate: 200,
  perSourceBurst: 400,
  rateTableSlots: 1 << 16,
  answerBareBindings: true,
  replayCapacity: 1 << 19,
  maxPendingEffects: 65_536,
  effectTimeoutMs: 5_000,
};

export interface ServerConfig {
  /** The networks this server serves: one per accepted secret. */
  readonly networks: readonly NetworkKeys[];
  /**
   * Names this server among the servers and processes that share its state: the owner of the registrations it
   * takes (src/server/types.ts `Owner`). Every process of one server uses the same id.
   */
  readonly serverId: string;
  /**
   * The WG-PROOF-KEY pair: the same on every server that shares state, never derived from a network secret (every
   * member knows those). Made once by whoever comes first (src/server/shared.ts) and handed to every core.
   */
  readonly proofKey: KeyPair;
  /** Advertised in REGISTER answers (OTHER-ADDRESS) when the server listens on a second port. */
  readonly alternate?: Endpoint;
  /**
   * The four UDP sockets of RFC 5780 behaviour discovery (2 IP addresses x 2 ports), each by its local address, when
   * the server has a second IP address. Without it Binding answers offer the mapping tests only (src/server/binding.ts).
   */
  readonly rfc5780?: Rfc5780Sockets;
  readonly limits?: Partial<ServerLimits>;
  readonly wgLimits?: Partial<WgLimits>;
  /**
   * Whether this core answers WireGuard packets itself (default true). A worker of a multi-process server passes
   * them on (`to-wg-responder`) to the one process that holds the server's WireGuard sessions.
   */
  readonly wgResponder?: boolean;
  /**
   * Which relay introductions offer (the RELAY attribute, src/server/relay/config.ts). Undefined: introductions carry
   * no RELAY attribute (clients treat that as no relay).
   */
  readonly relay?: RelayPolicy;
  /**
   * Requests whose TIMESTAMP is older than this are refused as stale (438, with the server's clock): the time the
   * server started, so that a request captured before a restart (when the replay guard forgot everything) cannot be
   * replayed after it. Default: none (tests on a fake clock).
   */
  readonly notBefore?: number;
  /** Seeds the per-source hash; pass a random value. */
  readonly seed: number;
  /** Transaction ids for pushed introductions, WireGuard session indexes. */
  readonly randomBytes: (n: number) => Uint8Array;
}

/** The local address of each socket: main = primary IP and port, other-ip-port = the other of both. */
export type Rfc5780Sockets = Readonly<Record<'main' | 'alternate' | 'other-ip' | 'other-ip-port', Endpoint>>;

export function resolveLimits(limits: Partial<ServerLimits> | undefined): ServerLimits {
  return { ...DEFAULT_LIMITS, ...limits };
}
