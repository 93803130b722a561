/**
 * Just enough of WireGuard's Noise_IKpsk2 handshake (WireGuard whitepaper §5.4) for the rendezvous server to act as
 * a WireGuard *responder*: it reads a client's handshake initiation, learns and authenticates the client's interface
 * key, answers with a handshake response, and afterwards authenticates the client's transport packets (keepalives).
 * The server never carries tunnel traffic; it only learns the address WireGuard's own packets come from.
 *
 * Pure functions over byte arrays; randomness (ephemeral keys) is passed in. BLAKE2s and HMAC-BLAKE2s come from
 * node:crypto; keyed BLAKE2s-128 (WireGuard's MAC) is not in node:crypto and comes from @noble/hashes; X25519 and
 * ChaCha20-Poly1305 from node:crypto.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, type KeyObject } from 'node:crypto';
import { blake2s } from '@noble/hashes/blake2.js';

export const KEY_LENGTH = 32;
export const INITIATION_LENGTH = 148;
export const RESPONSE_LENGTH = 92;
export const COOKIE_REPLY_LENGTH = 64;
/** A transport packet with an empty payload (a keepalive): header 16 + Poly1305 tag 16. */
export const MIN_TRANSPORT_LENGTH = 32;

export const WgType = { INITIATION: 1, RESPONSE: 2, COOKIE_REPLY: 3, TRANSPORT: 4 } as const;

const CONSTRUCTION = Buffer.from('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s');
const IDENTIFIER = Buffer.from('WireGuard v1 zx2c4 Jason@zx2c4.com');
const LABEL_MAC1 = Buffer.from('mac1----');

export function hash(...parts: Uint8Array[]): Buffer {
  const h = createHash('blake2s256');
  for (const p of parts) h.update(p);
  return h.digest();
}

function hmac(key: Uint8Array, ...parts: Uint8Array[]): Buffer {
  const h = createHmac('blake2s256', key);
  for (const p of parts) h.update(p);
  return h.digest();
}

/** WireGuard's MAC: keyed BLAKE2s with a 16-byte output. */
export function mac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return blake2s(data, { key, dkLen: 16 });
}

/** WireGuard's KDF_n (HKDF with HMAC-BLAKE2s), returning n 32-byte outputs. */
export function kdf(n: 1 | 2 | 3, key: Uint8Array, input: Uint8Array): Buffer[] {
  const prk = hmac(key, input);
  const out: Buffer[] = [];
  let prev: Buffer = Buffer.alloc(0);
  for (let i = 1; i <= n; i++) {
    prev = hmac(prk, prev, Uint8Array.of(i));
    out.push(prev);
  }
  return out;
}

function nonce(counter: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64LE(counter, 4);
  return n;
}

export function aeadSeal(key: Uint8Array, counter: bigint, plaintext: Uint8Array, ad: Uint8Array): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, nonce(counter), { authTagLength: 16 });
  c.setAAD(ad, { plaintextLength: plaintext.length });
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

/** Opens a ChaCha20-Poly1305 box, or returns undefined if it does not authenticate. */
export function aeadOpen(key: Uint8Array, counter: bigint, box: Uint8Array, ad: Uint8Array): Buffer | undefined {
  if (box.length < 16) return undefined;
  const d = createDecipheriv('chacha20-poly1305', key, nonce(counter), { authTagLength: 16 });
  d.setAAD(ad, { plaintextLength: box.length - 16 });
  d.setAuthTag(box.subarray(box.length - 16));
  const body = d.update(box.subarray(0, box.length - 16));
  try {
    return Buffer.concat([body, d.final()]);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// X25519 with raw 32-byte keys (WireGuard's base64 form decodes to these).

const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');

export function privateKeyObject(raw: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519, raw]), format: 'der', type: 'pkcs8' });
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_X25519, raw]), format: 'der', type: 'spki' });
}

export function publicKeyOf(privateRaw: Uint8Array): Buffer {
  const der = createPublicKey(privateKeyObject(privateRaw)).export({ format: 'der', type: 'spki' });
  return der.subarray(der.length - KEY_LENGTH);
}

/** An X25519 key pair with the private half as a KeyObject (importing raw keys is the slow part of X25519 here). */
export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: Buffer;
}

/** A fresh random X25519 key pair (about 0.06 ms, against about 0.6 ms to import a raw private key). */
export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const der = publicKey.export({ format: 'der', type: 'spki' });
  return { privateKey, publicKey: der.subarray(der.length - KEY_LENGTH) };
}

/** The key pair of a raw private key (for tests and fixed keys). */
export function keyPairOf(privateRaw: Uint8Array): KeyPair {
  return { privateKey: privateKeyObject(privateRaw), publicKey: publicKeyOf(privateRaw) };
}

/** X25519; undefined for a low-order public key (an all-zero shared secret), which WireGuard also rejects. */
export function dh(privateRaw: Uint8Array | KeyObject, publicRaw: Uint8Array): Buffer | undefined {
  try {
    const privateKey = privateRaw instanceof Uint8Array ? privateKeyObject(privateRaw) : privateRaw;
    const shared = diffieHellman({ privateKey, publicKey: publicKeyObject(publicRaw) });
    return shared.every((b) => b === 0) ? undefined : shared;
  } catch {
    return undefined;
  }
}

export function decodeKey(base64: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]{43}=$/.test(base64)) return undefined;
  const raw = Buffer.from(base64, 'base64');
  return raw.length === KEY_LENGTH ? new Uint8Array(raw) : undefined;
}

export function encodeKey(raw: Uint8Array): string {
  return Buffer.from(raw).toString('base64');
}

// ---------------------------------------------------------------------------------------------------------------------
// The server's WireGuard identity, derived from the network secret so that `burrow serve` needs no extra state and
// every holder of the secret knows the server's public key without being told.

const WG_SALT = Buffer.from('burrow/v1 wireguard', 'utf8');

export interface ServerIdentity {
  readonly privateKey: KeyObject;
  readonly publicKey: Buffer;
  /** The preshared key clients configure for the server peer: proves knowledge of the network secret. */
  readonly presharedKey: Buffer;
  /** HASH(LABEL_MAC1 ‖ public key): the key of mac1 in messages sent to the server. */
  readonly mac1Key: Buffer;
  /** Noise state after the pre-message: chaining key and hash. */
  readonly ck0: Buffer;
  readonly h0: Buffer;
}

export function serverIdentity(secret: Uint8Array): ServerIdentity {
  const priv = Buffer.from(hkdfSync('sha256', secret, WG_SALT, 'burrow/v1 wireguard server key', KEY_LENGTH));
  // Clamp as WireGuard does (X25519 clamps anyway; this keeps `wg` printing the same public key).
  priv[0] = (priv[0] ?? 0) & 248;
  priv[31] = ((priv[31] ?? 0) & 127) | 64;
  const publicKey = publicKeyOf(priv);
  const ck0 = hash(CONSTRUCTION);
  return {
    privateKey: privateKeyObject(priv),
    publicKey,
    presharedKey: Buffer.from(hkdfSync('sha256', secret, WG_SALT, 'burrow/v1 wireguard preshared key', KEY_LENGTH)),
    mac1Key: hash(LABEL_MAC1, publicKey),
    ck0,
    h0: hash(hash(ck0, IDENTIFIER), publicKey),
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Responder side of the handshake.

export type InitiationError = 'bad-length' | 'bad-type' | 'bad-mac1' | 'bad-ephemeral' | 'bad-static' | 'bad-static-key' | 'bad-timestamp';

export interface ConsumedInitiation {
  /** The initiator's interface (static) public key. */
  readonly peerKey: Buffer;
  /** TAI64N, 12 bytes; strictly increasing per initiator, WireGuard's replay protection. */
  readonly timestamp: Buffer;
  readonly senderIndex: number;
  readonly peerEphemeral: Buffer;
  readonly ck: Buffer;
  readonly h: Buffer;
}

/** Checks mac1 only: cheap, and tells which server identity a message is for. */
export function initiationMac1Valid(packet: Uint8Array, id: ServerIdentity): boolean {
  if (packet.length !== INITIATION_LENGTH) return false;
  const expected = mac(id.mac1Key, packet.subarray(0, 116));
  return Buffer.from(expected).equals(packet.subarray(116, 132));
}

export function consumeInitiation(packet: Uint8Array, id: ServerIdentity): { ok: true; value: ConsumedInitiation } | { ok: false; reason: InitiationError } {
  if (packet.length !== INITIATION_LENGTH) return { ok: false, reason: 'bad-length' };
  if (packet[0] !== WgType.INITIATION || packet[1] !== 0 || packet[2] !== 0 || packet[3] !== 0) return { ok: false, reason: 'bad-type' };
  if (!initiationMac1Valid(packet, id)) return { ok: false, reason: 'bad-mac1' };
  const buf = Buffer.from(packet.buffer, packet.byteOffset, packet.length);
  const senderIndex = buf.readUInt32LE(4);
  const ephemeral = Buffer.from(buf.subarray(8, 40));
  const encStatic = buf.subarray(40, 88);
  const encTimestamp = buf.subarray(88, 116);
  let [ck] = kdf(1, id.ck0, ephemeral) as [Buffer];
  let h = hash(id.h0, ephemeral);
  const es = dh(id.privateKey, ephemeral);
  if (!es) return { ok: false, reason: 'bad-ephemeral' };
  let k: Buffer;
  [ck, k] = kdf(2, ck, es) as [Buffer, Buffer];
  const peerKey = aeadOpen(k, 0n, encStatic, h);
  if (!peerKey) return { ok: false, reason: 'bad-static' };
  h = hash(h, encStatic);
  const ss = dh(id.privateKey, peerKey);
  if (!ss) return { ok: false, reason: 'bad-static-key' };
  [ck, k] = kdf(2, ck, ss) as [Buffer, Buffer];
  const timestamp = aeadOpen(k, 0n, encTimestamp, h);
  if (!timestamp) return { ok: false, reason: 'bad-timestamp' };
  h = hash(h, encTimestamp);
  return { ok: true, value: { peerKey, timestamp, senderIndex, peerEphemeral: ephemeral, ck, h } };
}

export interface ResponderKeys {
  readonly packet: Buffer;
  /** Decrypts what the initiator sends (its first transport key). */
  readonly receiveKey: Buffer;
  readonly sendKey: Buffer;
}

/** Builds the handshake response (92 bytes) and the session's transport keys. */
export function createResponse(init: ConsumedInitiation, id: ServerIdentity, ephemeral: KeyPair, ourIndex: number): ResponderKeys | undefined {
  const ePub = ephemeral.publicKey;
  const ephemeralPrivate = ephemeral.privateKey;
  let [ck] = kdf(1, init.ck, ePub) as [Buffer];
  let h = hash(init.h, ePub);
  const ee = dh(ephemeralPrivate, init.peerEphemeral);
  const se = dh(ephemeralPrivate, init.peerKey);
  if (!ee || !se) return undefined;
  [ck] = kdf(1, ck, ee) as [Buffer];
  [ck] = kdf(1, ck, se) as [Buffer];
  const [ck3, tau, k] = kdf(3, ck, id.presharedKey) as [Buffer, Buffer, Buffer];
  ck = ck3;
  h = hash(h, tau);
  const empty = aeadSeal(k, 0n, new Uint8Array(0), h);
  const packet = Buffer.alloc(RESPONSE_LENGTH);
  packet[0] = WgType.RESPONSE;
  packet.writeUInt32LE(ourIndex >>> 0, 4);
  packet.writeUInt32LE(init.senderIndex >>> 0, 8);
  ePub.copy(packet, 12);
  empty.copy(packet, 44);
  Buffer.from(mac(hash(LABEL_MAC1, init.peerKey), packet.subarray(0, 60))).copy(packet, 60);
  const [receiveKey, sendKey] = kdf(2, ck, new Uint8Array(0)) as [Buffer, Buffer];
  return { packet, receiveKey, sendKey };
}

export interface TransportHeader {
  readonly receiverIndex: number;
  readonly counter: bigint;
}

export function transportHeader(packet: Uint8Array): TransportHeader | undefined {
  if (packet.length < MIN_TRANSPORT_LENGTH || packet[0] !== WgType.TRANSPORT || packet[1] !== 0 || packet[2] !== 0 || packet[3] !== 0) return undefined;
  const buf = Buffer.from(packet.buffer, packet.byteOffset, packet.length);
  return { receiverIndex: buf.readUInt32LE(4), counter: buf.readBigUInt64LE(8) };
}

/** Authenticates and opens a transport packet; undefined if it does not authenticate. */
export function openTransport(packet: Uint8Array, receiveKey: Uint8Array, counter: bigint): Buffer | undefined {
  return aeadOpen(receiveKey, counter, packet.subarray(16), new Uint8Array(0));
}

/**
 * Whether a datagram has WireGuard's shape: type 1–4 in the first byte, three zero bytes, and the exact or minimum
 * length of that type. STUN messages never match: their length is 20 + a multiple of 4 and bytes 4–7 hold the magic
 * cookie, and a STUN type word `0x0100`–`0x0400` with a zero length field is 20 bytes long, shorter than any
 * WireGuard message.
 */
export function looksLikeWireGuard(packet: Uint8Array): boolean {
  if (packet.length < MIN_TRANSPORT_LENGTH || packet[1] !== 0 || packet[2] !== 0 || packet[3] !== 0) return false;
  switch (packet[0] ?? 0) {
    case WgType.INITIATION:
      return packet.length === INITIATION_LENGTH;
    case WgType.RESPONSE:
      return packet.length === RESPONSE_LENGTH;
    case WgType.COOKIE_REPLY:
      return packet.length === COOKIE_REPLY_LENGTH;
    case WgType.TRANSPORT:
      return (packet.length - MIN_TRANSPORT_LENGTH) % 16 === 0;
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Initiator side: used by tests (and only tests) to speak to the server the way wireguard-go does.

export function tai64n(ms: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeBigUInt64BE(0x400000000000000an + BigInt(Math.floor(ms / 1000)), 0);
  b.writeUInt32BE((ms % 1000) * 1_000_000, 8);
  return b;
}

export interface InitiatorState {
  readonly packet: Buffer;
  readonly ck: Buffer;
  readonly h: Buffer;
  readonly ephemeralPrivate: Uint8Array;
  readonly staticPrivate: Uint8Array;
  readonly senderIndex: number;
}

export function createInitiation(staticPrivate: Uint8Array, serverPublic: Uint8Array, ephemeralPrivate: Uint8Array, senderIndex: number, timestamp: Uint8Array): InitiatorState {
  const ck0 = hash(CONSTRUCTION);
  let h = hash(hash(ck0, IDENTIFIER), serverPublic);
  const ePub = publicKeyOf(ephemeralPrivate);
  let [ck] = kdf(1, ck0, ePub) as [Buffer];
  h = hash(h, ePub);
  let k: Buffer;
  [ck, k] = kdf(2, ck, dh(ephemeralPrivate, serverPublic) ?? Buffer.alloc(32)) as [Buffer, Buffer];
  const encStatic = aeadSeal(k, 0n, publicKeyOf(staticPrivate), h);
  h = hash(h, encStatic);
  [ck, k] = kdf(2, ck, dh(staticPrivate, serverPublic) ?? Buffer.alloc(32)) as [Buffer, Buffer];
  const encTs = aeadSeal(k, 0n, timestamp, h);
  h = hash(h, encTs);
  const packet = Buffer.alloc(INITIATION_LENGTH);
  packet[0] = WgType.INITIATION;
  packet.writeUInt32LE(senderIndex >>> 0, 4);
  ePub.copy(packet, 8);
  encStatic.copy(packet, 40);
  encTs.copy(packet, 88);
  Buffer.from(mac(hash(LABEL_MAC1, serverPublic), packet.subarray(0, 116))).copy(packet, 116);
  return { packet, ck, h, ephemeralPrivate, staticPrivate, senderIndex };
}

/** Consumes the server's response; returns the initiator's send key (the server's receive key). */
export function consumeResponse(state: InitiatorState, packet: Uint8Array, presharedKey: Uint8Array): { sendKey: Buffer; receiverIndex: number } | undefined {
  if (packet.length !== RESPONSE_LENGTH || packet[0] !== WgType.RESPONSE) return undefined;
  const buf = Buffer.from(packet.buffer, packet.byteOffset, packet.length);
  if (buf.readUInt32LE(8) !== state.senderIndex) return undefined;
  const ePub = buf.subarray(12, 44);
  let [ck] = kdf(1, state.ck, ePub) as [Buffer];
  let h = hash(state.h, ePub);
  const ee = dh(state.ephemeralPrivate, ePub);
  const se = dh(state.staticPrivate, ePub);
  if (!ee || !se) return undefined;
  [ck] = kdf(1, ck, ee) as [Buffer];
  [ck] = kdf(1, ck, se) as [Buffer];
  const [ck3, tau, k] = kdf(3, ck, presharedKey) as [Buffer, Buffer, Buffer];
  ck = ck3;
  h = hash(h, tau);
  if (!aeadOpen(k, 0n, buf.subarray(44, 60), h)) return undefined;
  const [sendKey] = kdf(2, ck, new Uint8Array(0)) as [Buffer, Buffer];
  return { sendKey, receiverIndex: buf.readUInt32LE(4) };
}

export function sealTransport(receiverIndex: number, counter: bigint, key: Uint8Array, payload: Uint8Array): Buffer {
  const head = Buffer.alloc(16);
  head[0] = WgType.TRANSPORT;
  head.writeUInt32LE(receiverIndex >>> 0, 4);
  head.writeBigUInt64LE(counter, 8);
  return Buffer.concat([head, aeadSeal(key, counter, payload, new Uint8Array(0))]);
}
