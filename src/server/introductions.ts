/**
 * Pairing, as pure functions of a registration and what the store answered (src/server/store.ts `RegisterResult`):
 * whether the two registrations are a pair, whether the partner must be told (again), and the messages that tell
 * each side about the other. No state, no effects: src/server/rendezvous.ts calls these and does the rest.
 */
import { endpointKey, sameEndpoint, type Endpoint } from '../codec/address.js';
import { encodeMessage, type Introduction, type NoticeKind, type Outcome, type RegisterRequest } from '../codec/messages.js';
import type { NetworkKeys } from '../crypto/keys.js';
import { relayOfferFor, type RelayPolicy } from './relay/config.js';
import type { Registration } from './store.js';
import type { Owner } from './types.js';

/** The shortest lifetime a registration gets, however short the refresh period it declares. */
export const MIN_LIFETIME_MS = 1000;

/**
 * How long a registration lives without a refresh: `missed` of the refresh periods the peer declared
 * (REFRESH-INTERVAL), within [MIN_LIFETIME_MS, the server's lifetime]; the server's lifetime when it declared none.
 */
export function lifetimeMsOf(msg: RegisterRequest, lifetimeSeconds: number, missed: number): number {
  const max = lifetimeSeconds * 1000;
  if (msg.refreshMs === undefined) return max;
  return Math.min(max, Math.max(MIN_LIFETIME_MS, msg.refreshMs * missed));
}

/** The registration a REGISTER makes, living `lifetimeMs` unless refreshed. */
export function registrationOf(msg: RegisterRequest, network: string, from: Endpoint, owner: Owner, now: number, lifetimeMs: number): Registration {
  return {
    network,
    name: msg.name,
    target: msg.target,
    nonce: Buffer.from(msg.sessionNonce).toString('hex'),
    mapped: from,
    candidates: msg.candidates,
    mapping: msg.mapping,
    ...(msg.allocation !== undefined ? { allocation: msg.allocation } : {}),
    ...(msg.filtering !== undefined ? { filtering: msg.filtering } : {}),
    ...(msg.mode !== undefined ? { mode: msg.mode } : {}),
    ...(msg.transport === 'tcp' ? { transport: 'tcp' as const } : {}),
    expiresAt: now + lifetimeMs,
    owner,
    version: Buffer.from(msg.txid).toString('hex'),
  };
}

/**
 * `candidate` (the registration named by `reg.target`) is `reg`'s partner: it wants `reg` back, for the same kind of
 * path, or both say what they run (then each side judges the pairing itself, and reports a mismatch).
 */
export function partnerOf(reg: Registration, candidate: Registration | undefined): Registration | undefined {
  if (!candidate || candidate.target !== reg.name || candidate.name === reg.name) return undefined;
  const sameTransport = (candidate.transport ?? 'udp') === (reg.transport ?? 'udp');
  return sameTransport || (candidate.mode !== undefined && reg.mode !== undefined) ? candidate : undefined;
}

/** Whether `reg` starts a registration: a new name, or a new session (nonce) of one. */
export function isNewSession(previous: Registration | undefined, reg: Registration): boolean {
  return !previous || previous.nonce !== reg.nonce;
}

/**
 * Whether `reg` took the place of another live session under the same name (issue 9: the displaced peer is to be
 * told). A refresh of the same session is not a displacement.
 */
export function displaced(previous: Registration | undefined, reg: Registration): boolean {
  return previous !== undefined && previous.nonce !== reg.nonce;
}

/**
 * Whether the partner must hear about `reg`: it is new, or something the partner's introduction carries changed
 * (session, target, address, candidates, NAT finding). So a peer that restarts is introduced again, and a refresh
 * that changes nothing pushes nothing.
 */
export function introductionChanged(previous: Registration | undefined, reg: Registration): boolean {
  return (
    !previous ||
    previous.nonce !== reg.nonce ||
    previous.target !== reg.target ||
    previous.mapping !== reg.mapping ||
    previous.allocation !== reg.allocation ||
    previous.filtering !== reg.filtering ||
    previous.mode !== reg.mode ||
    !sameEndpoint(previous.mapped, reg.mapped) ||
    previous.candidates.map((c) => endpointKey(c.endpoint)).join() !== reg.candidates.map((c) => endpointKey(c.endpoint)).join()
  );
}

/**
 * What `recipient` is told about `reg`, with the relay the pair may use (`policy`; no RELAY attribute when undefined).
 * A TURN offer carries credentials minted for the recipient's name.
 */
export function introductionOf(reg: Registration, recipient: string, policy: RelayPolicy | undefined, now: number): Introduction {
  return {
    peerName: reg.name,
    peerNonce: Buffer.from(reg.nonce, 'hex'),
    peerMapped: reg.mapped,
    peerCandidates: reg.candidates,
    peerMapping: reg.mapping,
    ...(reg.allocation !== undefined ? { peerAllocation: reg.allocation } : {}),
    ...(policy ? { relay: relayOfferFor(policy, recipient, now) } : {}),
    ...(reg.filtering !== undefined ? { peerFiltering: reg.filtering } : {}),
    ...(reg.mode !== undefined ? { peerMode: reg.mode } : {}),
  };
}

/** The INTRODUCE indication pushed to `recipient` about `reg`, authenticated with the server-to-client key. */
export function encodePush(keys: NetworkKeys, recipient: Registration, reg: Registration, txid: Uint8Array, now: number, policy?: RelayPolicy): Uint8Array {
  return encodeMessage({
    kind: 'introduce',
    txid,
    networkId: keys.networkId,
    recipientNonce: Buffer.from(recipient.nonce, 'hex'),
    timestamp: now,
    intro: introductionOf(reg, recipient.name, policy, now),
  }, { key: keys.serverToClient, relayOfferKey: keys.relayOffer });
}

/**
 * The NOTICE pushed to `recipient`'s session: its partner `about` left, or (`displaced`) the session
 * `about` took `recipient`'s name. Authenticated with the server-to-client key and bound to the recipient's session.
 */
export function encodeNotice(keys: NetworkKeys, recipient: Registration, notice: NoticeKind, about: Registration, txid: Uint8Array, now: number, outcome?: Outcome): Uint8Array {
  return encodeMessage({
    kind: 'notice',
    txid,
    networkId: keys.networkId,
    recipientNonce: Buffer.from(recipient.nonce, 'hex'),
    timestamp: now,
    notice,
    peerName: about.name,
    peerNonce: Buffer.from(about.nonce, 'hex'),
    ...(outcome !== undefined ? { outcome } : {}),
  }, { key: keys.serverToClient });
}
