/**
 * Key schedule. Everything derives from the network secret with HKDF-SHA256 (RFC 5869),
 * one label per purpose and direction, so that no message can be replayed in another role:
 *
 *   networkId        = HKDF(secret, salt, "burrow/v1 network-id")[0..8]   (public: names the network)
 *   clientToServer   = HKDF(secret, salt, "burrow/v1 client-to-server")  (REGISTER requests)
 *   serverToClient   = HKDF(secret, salt, "burrow/v1 server-to-client")  (REGISTER answers, INTRODUCE)
 *   peerBase         = HKDF(secret, salt, "burrow/v1 peer")
 *   streamAuth       = HKDF(secret, salt, "burrow/v1 stream")           (HELLO of encrypted streams)
 *   relayOffer       = HKDF(secret, salt, "burrow/v1 relay-offer")      (seals TURN passwords in introductions)
 *   relay            = HKDF(secret, "", "burrow relay v1")              (built-in relay credentials, src/codec/turn.ts)
 *   probe(from → to) = HKDF(peerBase, nonce(from) ‖ nonce(to), "burrow/v1 probe" ‖ name(from) ‖ 0 ‖ name(to))
 *
 * The probe keys bind every peer-to-peer message to both names and both per-attempt nonces: a message
 * from another session, another pair, or the opposite direction fails its MESSAGE-INTEGRITY-SHA256.
 */
import { hkdfSync } from 'node:crypto';
import { NETWORK_ID_LENGTH } from '../codec/messages.js';
import { relayKeyFromSecret } from '../codec/turn.js';
import { serverIdentity, type ServerIdentity } from './wireguard.js';

const SALT = Buffer.from('burrow/v1 salt', 'utf8');

function derive(ikm: Uint8Array, salt: Uint8Array, info: string | Uint8Array, length = 32): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', ikm, salt, typeof info === 'string' ? Buffer.from(info) : info, length));
}

export interface NetworkKeys {
  readonly networkId: Uint8Array;
  /** Hex of networkId, for use as a map key. */
  readonly networkIdHex: string;
  readonly clientToServer: Uint8Array;
  readonly serverToClient: Uint8Array;
  readonly peerBase: Uint8Array;
  readonly streamAuth: Uint8Array;
  /** Seals the password of a TURN relay offer in introductions (src/codec/messages.ts RELAY). */
  readonly relayOffer: Uint8Array;
  /** The built-in relay's credential key (src/codec/turn.ts `builtinCredentials`). */
  readonly relay: Uint8Array;
  /** The rendezvous server's WireGuard identity in this network (src/crypto/wireguard.ts). */
  readonly wireguard: ServerIdentity;
}

export function deriveNetworkKeys(secret: Uint8Array): NetworkKeys {
  const networkId = derive(secret, SALT, 'burrow/v1 network-id', NETWORK_ID_LENGTH);
  return {
    networkId,
    networkIdHex: Buffer.from(networkId).toString('hex'),
    clientToServer: derive(secret, SALT, 'burrow/v1 client-to-server'),
    serverToClient: derive(secret, SALT, 'burrow/v1 server-to-client'),
    peerBase: derive(secret, SALT, 'burrow/v1 peer'),
    streamAuth: derive(secret, SALT, 'burrow/v1 stream'),
    relayOffer: derive(secret, SALT, 'burrow/v1 relay-offer'),
    relay: relayKeyFromSecret(secret),
    wireguard: serverIdentity(secret),
  };
}

export interface ProbeKeys {
  /** Authenticates what this peer sends. */
  readonly send: Uint8Array;
  /** Authenticates what the partner sends. */
  readonly receive: Uint8Array;
}

function probeKey(keys: NetworkKeys, fromName: string, fromNonce: Uint8Array, toName: string, toNonce: Uint8Array): Uint8Array {
  const info = Buffer.concat([Buffer.from('burrow/v1 probe'), Buffer.from(fromName), Buffer.from([0]), Buffer.from(toName)]);
  return derive(keys.peerBase, Buffer.concat([fromNonce, toNonce]), info);
}

export function deriveProbeKeys(
  keys: NetworkKeys,
  self: { name: string; nonce: Uint8Array },
  peer: { name: string; nonce: Uint8Array },
): ProbeKeys {
  return {
    send: probeKey(keys, self.name, self.nonce, peer.name, peer.nonce),
    receive: probeKey(keys, peer.name, peer.nonce, self.name, self.nonce),
  };
}
