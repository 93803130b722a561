/**
 * Pairing, as pure functions of a registration and what the store answered (src/server/store.ts `RegisterResult`):
 * whether the two registrations are a pair, whether the partner must be told (again), and the messages that tell
 * each side about the other. No state, no effects: src/server/rendezvous.ts calls these and does the rest.
 */
import { endpointKey, sameEndpoint, type Endpoint } from '../codec/address.js';
import { encodeMessage, type Introduction, type RegisterRequest } from '../codec/messages.js';
import type { NetworkKeys } from '../crypto/keys.js';
import { relayOfferFor, type RelayPolicy } from './relay/config.js';
import type { Registration } from './store.js';
import type { Owner } from './types.js';

/** The registration a REGISTER makes. */
export function registrationOf(msg: RegisterRequest, network: string, from: Endpoint, owner: Owner, now: number, lifetimeSeconds: number): Registration {
  return {
    network,
    name: msg.name,
    target: msg.target,
    nonce: Buffer.from(msg.sessionNonce).toString('hex'),
    mapped: from,
    candidates: msg.candidates,
    mapping: msg.mapping,
    expiresAt: now + lifetimeSeconds * 1000,
    owner,
    version: Buffer.from(msg.txid).toString('hex'),
  };
}

/** `candidate` (the registration named by `reg.target`) is `reg`'s partner: it wants `reg` back. */
export function partnerOf(reg: Registration, candidate: Registration | undefined): Registration | undefined {
  return candidate && candidate.target === reg.name && candidate.name !== reg.name ? candidate : undefined;
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
    ...(policy ? { relay: relayOfferFor(policy, recipient, now) } : {}),
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
