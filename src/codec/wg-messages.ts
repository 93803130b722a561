/**
 * WG-SYNC (method 0x0B6): a WireGuard peer's periodic exchange with the rendezvous server. One request announces
 * the sender's interface (its public key, bound by a proof computed from the interface's private key; its LAN
 * addresses; its NAT's mapping behaviour) and asks for up to MAX_WG_QUERY peers' endpoints; the answer lists what
 * the server knows of the sender and of each peer. The public endpoints themselves are never taken from this message:
 * the server learns them from WireGuard's own authenticated packets (src/server/wg.ts). Byte layouts:
 * docs/protocol.md §10.
 *
 * Pure: encode and decode only; decoding never throws and returns a typed reason.
 */
import { createHmac } from 'node:crypto';
import type { Endpoint } from './address.js';
import { BurrowAttr, NETWORK_ID_LENGTH, u32, u64, type NatMapping } from './messages.js';
import { Attr, decodePlainAddress, decodeStun, encodePlainAddress, encodeStun, findAttribute, type StunMessage } from './stun.js';

export const WG_SYNC = 0x0b6;

export const WgAttr = {
  /** The sender's WireGuard interface public key (32 bytes). */
  WG_KEY: 0x4b0c,
  /** Public keys whose endpoints the sender asks for: n × 32 bytes. */
  WG_QUERY: 0x4b0d,
  /** HMAC-SHA256 keyed with X25519(interface private key, the server's WG-PROOF-KEY) over the announced facts. */
  WG_PROOF: 0x4b0e,
  /** One peer's record in an answer (layout in docs/protocol.md §10). */
  WG_PEER: 0x4b0f,
  /** The interface's listen port (u16 + 2 reserved bytes). */
  WG_PORT: 0x4b11,
  /** In answers: the server's own random X25519 public key that WG-PROOF is computed against (32 bytes). */
  WG_PROOF_KEY: 0x4b12,
} as const;

export const WG_KEY_LENGTH = 32;
/** Keys per request; an answer then always fits one datagram (≤ 1200 bytes). */
export const MAX_WG_QUERY = 6;
/** LAN addresses announced per interface. */
export const MAX_WG_HOSTS = 4;

const MAPPINGS: readonly NatMapping[] = ['unknown', 'endpoint-independent', 'endpoint-dependent'];

export interface WgSyncRequest {
  readonly kind: 'wg-sync';
  readonly txid: Uint8Array;
  readonly networkId: Uint8Array;
  readonly timestamp: number;
  readonly key: Uint8Array;
  readonly listenPort: number;
  /** LAN addresses of the interface's host, with the listen port (for peers behind the same NAT). */
  readonly hosts: readonly Endpoint[];
  readonly mapping: NatMapping;
  readonly query: readonly Uint8Array[];
  /** Absent until the sender knows the server's WG-PROOF-KEY (its first request); the server then announces nothing. */
  readonly proof: Uint8Array | undefined;
}

export interface WgPeerInfo {
  readonly key: Uint8Array;
  /** The peer's burrow has announced itself (recently). */
  readonly announced: boolean;
  /** Where the peer's WireGuard packets last came from, once authenticated; undefined if never seen. */
  readonly endpoint: Endpoint | undefined;
  /** Seconds since `endpoint` was last confirmed by an authenticated WireGuard packet (saturates at 65535). */
  readonly ageSeconds: number;
  readonly listenPort: number;
  readonly hosts: readonly Endpoint[];
  readonly mapping: NatMapping;
}

export interface WgSyncSuccess {
  readonly kind: 'wg-sync-ok';
  readonly txid: Uint8Array;
  readonly timestamp: number;
  /** The sender's own record: tells it whether the server sees its WireGuard packets. */
  readonly self: WgPeerInfo;
  readonly peers: readonly WgPeerInfo[];
  /** The server's second port (OTHER-ADDRESS), for telling whether the sender's NAT mapping depends on the destination. */
  readonly alternate: Endpoint | undefined;
  /**
   * The server's proof key: random, made by the server process and never derived from the secret, so that no other
   * holder of the secret can compute an interface's WG-PROOF. A sender whose proof used another key sends again.
   */
  readonly proofKey: Uint8Array;
}

export type WgSyncDecodeError =
  | { readonly reason: 'not-stun'; readonly detail: string }
  | { readonly reason: 'wrong-method' }
  | { readonly reason: 'missing-attribute'; readonly detail: string }
  | { readonly reason: 'bad-attribute'; readonly detail: string };

export type WgSyncDecodeResult =
  | { readonly ok: true; readonly msg: WgSyncRequest | WgSyncSuccess; readonly stun: StunMessage }
  | ({ readonly ok: false } & WgSyncDecodeError);

/** The bytes WG-PROOF authenticates: everything the request claims about the interface. */
export function wgProofInput(req: Omit<WgSyncRequest, 'proof' | 'kind' | 'query'>): Buffer {
  return Buffer.concat([
    Buffer.from('burrow/v1 wg-proof\0'),
    req.networkId,
    req.txid,
    u64(req.timestamp),
    req.key,
    u32(req.listenPort),
    Uint8Array.of(MAPPINGS.indexOf(req.mapping)),
    ...req.hosts.slice(0, MAX_WG_HOSTS).map((h) => encodePlainAddress(h)),
  ]);
}

/** WG-PROOF: HMAC-SHA256 keyed with the X25519 secret shared by the interface key and the server's WG-PROOF-KEY. */
export function wgProof(sharedSecret: Uint8Array, req: Omit<WgSyncRequest, 'proof' | 'kind' | 'query'>): Buffer {
  return createHmac('sha256', sharedSecret).update(wgProofInput(req)).digest();
}

export function encodeWgSync(req: WgSyncRequest, integrityKey: Uint8Array): Buffer {
  if (req.query.length > MAX_WG_QUERY) throw new RangeError(`at most ${MAX_WG_QUERY} keys per WG-SYNC`);
  return encodeStun(WG_SYNC, 'request', req.txid, [
    { type: BurrowAttr.NETWORK_ID, value: req.networkId },
    { type: BurrowAttr.TIMESTAMP, value: u64(req.timestamp) },
    { type: WgAttr.WG_KEY, value: req.key },
    { type: WgAttr.WG_PORT, value: u32(req.listenPort << 16) },
    ...req.hosts.slice(0, MAX_WG_HOSTS).map((h) => ({ type: BurrowAttr.HOST_CANDIDATE, value: encodePlainAddress(h) })),
    { type: BurrowAttr.NAT_MAPPING, value: u32(MAPPINGS.indexOf(req.mapping) << 24) },
    ...(req.query.length ? [{ type: WgAttr.WG_QUERY, value: Buffer.concat(req.query) }] : []),
    ...(req.proof ? [{ type: WgAttr.WG_PROOF, value: req.proof }] : []),
  ], { integrityKey });
}

function encodePeer(p: WgPeerInfo): Buffer {
  const head = Buffer.alloc(WG_KEY_LENGTH + 7);
  head.set(p.key, 0);
  head[32] = (p.announced ? 1 : 0) | (p.endpoint ? 2 : 0);
  head[33] = MAPPINGS.indexOf(p.mapping);
  head.writeUInt16BE(Math.min(0xffff, Math.max(0, Math.floor(p.ageSeconds))), 34);
  head.writeUInt16BE(p.listenPort, 36);
  const hosts = p.hosts.slice(0, MAX_WG_HOSTS);
  head[38] = hosts.length;
  return Buffer.concat([head, ...(p.endpoint ? [encodePlainAddress(p.endpoint)] : []), ...hosts.map((h) => encodePlainAddress(h))]);
}

export function encodeWgSyncOk(msg: WgSyncSuccess, integrityKey: Uint8Array): Buffer {
  return encodeStun(WG_SYNC, 'success', msg.txid, [
    { type: BurrowAttr.TIMESTAMP, value: u64(msg.timestamp) },
    { type: WgAttr.WG_PEER, value: encodePeer(msg.self) },
    ...msg.peers.slice(0, MAX_WG_QUERY).map((p) => ({ type: WgAttr.WG_PEER, value: encodePeer(p) })),
    ...(msg.alternate ? [{ type: Attr.OTHER_ADDRESS, value: encodePlainAddress(msg.alternate) }] : []),
    { type: WgAttr.WG_PROOF_KEY, value: msg.proofKey },
  ], { integrityKey });
}

class Failure extends Error {
  constructor(readonly error: WgSyncDecodeError) {
    super(error.reason);
  }
}

function fail(reason: 'missing-attribute' | 'bad-attribute', detail: string): never {
  throw new Failure({ reason, detail });
}

function required(stun: StunMessage, type: number, label: string, length?: number): Uint8Array {
  const v = findAttribute(stun, type)?.value;
  if (!v) return fail('missing-attribute', label);
  if (length !== undefined && v.length !== length) fail('bad-attribute', `${label} must be ${length} bytes`);
  return v;
}

function readTimestamp(stun: StunMessage): number {
  const v = required(stun, BurrowAttr.TIMESTAMP, 'TIMESTAMP', 8);
  const big = Buffer.from(v).readBigUInt64BE(0);
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) fail('bad-attribute', 'TIMESTAMP out of range');
  return Number(big);
}

function readMapping(code: number | undefined): NatMapping {
  const m = MAPPINGS[code ?? -1];
  if (!m) return fail('bad-attribute', 'unknown NAT-MAPPING code');
  return m;
}

/** Reads a plain (RFC 8489 MAPPED-ADDRESS-style) address at `offset`; returns it and its length. */
function readAddress(buf: Uint8Array, offset: number, label: string): [Endpoint, number] {
  const length = buf[offset + 1] === 0x01 ? 8 : buf[offset + 1] === 0x02 ? 20 : 0;
  if (length === 0 || offset + length > buf.length) fail('bad-attribute', `${label}: bad address`);
  const d = decodePlainAddress(buf.subarray(offset, offset + length));
  if (!d.ok) return fail('bad-attribute', `${label}: ${d.reason}`);
  return [d.endpoint, length];
}

function decodePeer(v: Uint8Array): WgPeerInfo {
  if (v.length < WG_KEY_LENGTH + 7) fail('bad-attribute', 'WG-PEER is too short');
  const b = Buffer.from(v);
  const flags = b[32] ?? 0;
  if (flags & ~3) fail('bad-attribute', 'WG-PEER has unknown flags');
  const hostCount = b[38] ?? 0;
  if (hostCount > MAX_WG_HOSTS) fail('bad-attribute', `WG-PEER lists more than ${MAX_WG_HOSTS} hosts`);
  let offset = WG_KEY_LENGTH + 7;
  let endpoint: Endpoint | undefined;
  if (flags & 2) {
    const [e, n] = readAddress(b, offset, 'WG-PEER endpoint');
    endpoint = e;
    offset += n;
  }
  const hosts: Endpoint[] = [];
  for (let i = 0; i < hostCount; i++) {
    const [e, n] = readAddress(b, offset, 'WG-PEER host');
    hosts.push(e);
    offset += n;
  }
  if (offset !== b.length) fail('bad-attribute', 'WG-PEER has trailing bytes');
  return {
    key: new Uint8Array(b.subarray(0, WG_KEY_LENGTH)),
    announced: (flags & 1) !== 0,
    endpoint,
    ageSeconds: b.readUInt16BE(34),
    listenPort: b.readUInt16BE(36),
    hosts,
    mapping: readMapping(b[33]),
  };
}

function interpret(stun: StunMessage): WgSyncRequest | WgSyncSuccess {
  const txid = stun.transactionId;
  if (stun.cls === 'request') {
    const port = required(stun, WgAttr.WG_PORT, 'WG-PORT', 4);
    const hostValues = stun.attributes.filter((a) => a.type === BurrowAttr.HOST_CANDIDATE).map((a) => a.value);
    if (hostValues.length > MAX_WG_HOSTS) fail('bad-attribute', `more than ${MAX_WG_HOSTS} HOST-CANDIDATE attributes`);
    const hosts = hostValues.map((v) => {
      const [e, n] = readAddress(v, 0, 'HOST-CANDIDATE');
      if (n !== v.length) fail('bad-attribute', 'HOST-CANDIDATE has trailing bytes');
      return e;
    });
    const mappingValue = required(stun, BurrowAttr.NAT_MAPPING, 'NAT-MAPPING', 4);
    const queryValue = findAttribute(stun, WgAttr.WG_QUERY)?.value ?? new Uint8Array(0);
    if (queryValue.length % WG_KEY_LENGTH !== 0 || queryValue.length / WG_KEY_LENGTH > MAX_WG_QUERY) {
      fail('bad-attribute', `WG-QUERY must hold 0..${MAX_WG_QUERY} keys of ${WG_KEY_LENGTH} bytes`);
    }
    const query: Uint8Array[] = [];
    for (let i = 0; i < queryValue.length; i += WG_KEY_LENGTH) query.push(queryValue.slice(i, i + WG_KEY_LENGTH));
    return {
      kind: 'wg-sync',
      txid,
      networkId: required(stun, BurrowAttr.NETWORK_ID, 'NETWORK-ID', NETWORK_ID_LENGTH),
      timestamp: readTimestamp(stun),
      key: required(stun, WgAttr.WG_KEY, 'WG-KEY', WG_KEY_LENGTH),
      listenPort: Buffer.from(port).readUInt16BE(0),
      hosts,
      mapping: readMapping(mappingValue[0]),
      query,
      proof: findAttribute(stun, WgAttr.WG_PROOF) ? required(stun, WgAttr.WG_PROOF, 'WG-PROOF', 32) : undefined,
    };
  }
  if (stun.cls === 'success') {
    const records = stun.attributes.filter((a) => a.type === WgAttr.WG_PEER).map((a) => decodePeer(a.value));
    const [self, ...peers] = records;
    if (!self) return fail('missing-attribute', 'WG-PEER');
    if (peers.length > MAX_WG_QUERY) fail('bad-attribute', 'too many WG-PEER attributes');
    const other = findAttribute(stun, Attr.OTHER_ADDRESS)?.value;
    let alternate: Endpoint | undefined;
    if (other) {
      const [e, n] = readAddress(other, 0, 'OTHER-ADDRESS');
      if (n !== other.length) fail('bad-attribute', 'OTHER-ADDRESS has trailing bytes');
      alternate = e;
    }
    return { kind: 'wg-sync-ok', txid, timestamp: readTimestamp(stun), self, peers, alternate, proofKey: required(stun, WgAttr.WG_PROOF_KEY, 'WG-PROOF-KEY', WG_KEY_LENGTH) };
  }
  return fail('bad-attribute', `WG-SYNC ${stun.cls} is not a request or success`);
}

/** Decodes a WG-SYNC request or success answer (errors are ordinary Burrow errors: decodeMessage). */
export function decodeWgSync(buf: Uint8Array): WgSyncDecodeResult {
  const framed = decodeStun(buf);
  if (!framed.ok) return { ok: false, reason: 'not-stun', detail: framed.reason };
  if (framed.msg.method !== WG_SYNC) return { ok: false, reason: 'wrong-method' };
  try {
    return { ok: true, msg: interpret(framed.msg), stun: framed.msg };
  } catch (e) {
    if (e instanceof Failure) return { ok: false, ...e.error };
    throw e;
  }
}
