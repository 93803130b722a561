/**
 * The built-in relay's bounds and the relay policy a server announces in its introductions (docs/protocol.md,
 * "Relay"). Defaults are resolved here, in one place.
 */
import type { RelayOffer } from '../../codec/messages.js';
import { turnRestCredentials } from '../../codec/turn.js';

export interface RelayLimits {
  /** Allocations one peer name (in one network) may hold at once. */
  readonly sessionsPerPeer: number;
  /** Allocations one source IP address may hold at once. */
  readonly sessionsPerSource: number;
  /** Allocations in total. */
  readonly sessions: number;
  /** Bytes per second one allocation may relay (both directions together); excess datagrams are dropped. */
  readonly rateBytesPerSecond: number;
  /** Bytes per second all allocations together may relay. */
  readonly totalRateBytesPerSecond: number;
  /** An allocation that relays nothing for this long is removed. */
  readonly idleSeconds: number;
  /** Allocation lifetime granted when the client asks for less (RFC 8656: 600 s). */
  readonly defaultLifetimeSeconds: number;
  /** Longest allocation lifetime granted per Allocate or Refresh. */
  readonly maxLifetimeSeconds: number;
  /** Permission lifetime (RFC 8656 section 9: 300 s) and channel binding lifetime (section 12: 600 s). */
  readonly permissionSeconds: number;
  readonly channelSeconds: number;
  /** How long a NONCE stays fresh; after it, requests get 438 Stale Nonce with a new one. */
  readonly nonceSeconds: number;
  /** Built-in credentials whose expiry lies further ahead than this are refused (they would be long-lived tokens). */
  readonly maxCredentialSeconds: number;
  /** TURN requests (not data) per second and burst, per source address. */
  readonly controlRate: number;
  readonly controlBurst: number;
  /** Largest application datagram relayed; larger ones are dropped (the main port's slots hold 2048 bytes). */
  readonly maxPayload: number;
  /** Requests waiting for a registration lookup or a socket, at most. */
  readonly maxPending: number;
}

const MiB = 1024 * 1024;

export const DEFAULT_RELAY_LIMITS: RelayLimits = {
  sessionsPerPeer: 4,
  sessionsPerSource: 8,
  sessions: 1000,
  rateBytesPerSecond: 16 * MiB,
  totalRateBytesPerSecond: 512 * MiB,
  idleSeconds: 60,
  defaultLifetimeSeconds: 600,
  maxLifetimeSeconds: 3600,
  permissionSeconds: 300,
  channelSeconds: 600,
  nonceSeconds: 600,
  maxCredentialSeconds: 86_400,
  controlRate: 50,
  controlBurst: 100,
  maxPayload: 2000,
  maxPending: 4096,
};

export function resolveRelayLimits(limits: Partial<RelayLimits> | undefined): RelayLimits {
  return { ...DEFAULT_RELAY_LIMITS, ...limits };
}

/**
 * Which relay a server offers its pairs:
 * - `builtin`: its own TURN relay on the main UDP port;
 * - `turn`: a TURN server fleet (coturn with `--use-auth-secret`), for which it mints TURN REST credentials;
 * - `none`: no relay (`--no-relay`).
 */
export type RelayPolicy =
  | { readonly kind: 'builtin' }
  | { readonly kind: 'none' }
  | {
      readonly kind: 'turn';
      /** `turn:HOST:PORT`. */
      readonly url: string;
      /** coturn's `--static-auth-secret`. */
      readonly secret: Uint8Array;
      /** How long minted credentials stay valid. */
      readonly ttlSeconds: number;
    };

/** Default lifetime of minted TURN REST credentials: long enough for a day-long transfer, short enough to expire. */
export const DEFAULT_TURN_TTL_SECONDS = 86_400;

/** The RELAY attribute a server puts in an introduction for `recipient` (unix seconds from `nowMs`). */
export function relayOfferFor(policy: RelayPolicy, recipient: string, nowMs: number): RelayOffer {
  if (policy.kind !== 'turn') return { kind: policy.kind };
  const expiry = Math.floor(nowMs / 1000) + policy.ttlSeconds;
  const { username, password } = turnRestCredentials(policy.secret, recipient, expiry);
  return { kind: 'turn', url: policy.url, username, password, expiry };
}
