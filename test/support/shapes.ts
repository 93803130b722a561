/**
 * Every shape of datagram an attacker can aim at a rendezvous server, built with the real codecs: one valid message of
 * each type (what a capture would hold), the inputs that crash the seed tools, and the unauthenticated mix used by the
 * amplification and flood tests. Pure: nothing here opens a socket.
 */
import { randomBytes } from 'node:crypto';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage, Method, RegisterFlag, type BurrowMessage, type PeerMode } from '../../src/codec/messages.js';
import { messageType, MAGIC_COOKIE } from '../../src/codec/stun.js';
import { bindingRequest } from '../../src/core/stun-client.js';
import { candidatePriority } from '../../src/core/punch/index.js';
import { deriveProbeKeys, type NetworkKeys } from '../../src/crypto/keys.js';

let txCounter = 0;
/** A fresh transaction id (a counter: unique within a test run, as real ones are). */
export function txid(): Buffer {
  const b = randomBytes(12);
  b.writeUInt32BE(++txCounter, 8);
  return b;
}

export interface RegisterOptions {
  readonly name: string;
  readonly target: string;
  readonly timestamp: number;
  readonly nonce?: Uint8Array;
  readonly transport?: 'udp' | 'tcp';
  readonly hosts?: readonly Endpoint[];
  /** MODE, REFRESH-INTERVAL and FLAGS, as current clients send them (absent: an older client's REGISTER). */
  readonly mode?: PeerMode;
  readonly refreshMs?: number;
  readonly flags?: number;
}

/** A REGISTER exactly as a client sends it. */
export function registerRequest(keys: NetworkKeys, o: RegisterOptions): Buffer {
  const msg: BurrowMessage = {
    kind: 'register',
    txid: txid(),
    networkId: keys.networkId,
    name: o.name,
    target: o.target,
    sessionNonce: o.nonce ?? randomBytes(16),
    timestamp: o.timestamp,
    candidates: (o.hosts ?? [{ address: '192.0.2.10', port: 5000 }]).map((endpoint, i) => ({ kind: 'host' as const, priority: candidatePriority('host', 65535 - i), endpoint })),
    mapping: 'unknown',
    ...(o.transport === 'tcp' ? { transport: 'tcp' as const } : {}),
    ...(o.mode !== undefined ? { mode: o.mode } : {}),
    ...(o.refreshMs !== undefined ? { refreshMs: o.refreshMs } : {}),
    ...(o.flags !== undefined ? { flags: o.flags } : {}),
  };
  return encodeMessage(msg, { key: keys.clientToServer });
}

/**
 * One valid message of every type the protocol has, authenticated as its sender would (so the set is what a capture
 * of a whole session holds), labelled.
 */
export function everyMessageType(keys: NetworkKeys, now: number): { readonly label: string; readonly bytes: Buffer }[] {
  const a = { name: 'alice', nonce: Buffer.alloc(16, 1) };
  const b = { name: 'bob', nonce: Buffer.alloc(16, 2) };
  const probeKey = deriveProbeKeys(keys, a, b).send;
  const peer: Endpoint = { address: '198.51.100.6', port: 40001 };
  const intro = { peerName: 'bob', peerNonce: b.nonce, peerMapped: peer, peerCandidates: [{ kind: 'host' as const, priority: candidatePriority('host'), endpoint: { address: '192.0.2.66', port: 40001 } }, { kind: 'relayed' as const, priority: candidatePriority('relayed'), endpoint: { address: '203.0.113.9', port: 49152 } }], peerMapping: 'endpoint-independent' as const };
  const s2c = keys.serverToClient;
  return [
    { label: 'Binding request (bare, RFC 8489)', bytes: encodeMessage({ kind: 'binding', txid: txid(), fingerprint: false }) },
    { label: 'Binding request (FINGERPRINT)', bytes: encodeMessage({ kind: 'binding', txid: txid(), fingerprint: true }) },
    { label: 'Binding request (Burrow, padded)', bytes: encodeMessage(bindingRequest(txid())) },
    { label: 'Binding success', bytes: encodeMessage({ kind: 'binding-ok', txid: txid(), mapped: peer }) },
    { label: 'REGISTER request (UDP)', bytes: registerRequest(keys, { name: 'alice', target: 'bob', timestamp: now, nonce: a.nonce }) },
    { label: 'REGISTER request (TCP)', bytes: registerRequest(keys, { name: 'alice', target: 'bob', timestamp: now, nonce: a.nonce, transport: 'tcp' }) },
    { label: 'REGISTER request (UDP refresh, MODE, REFRESH-INTERVAL)', bytes: registerRequest(keys, { name: 'alice', target: 'bob', timestamp: now, nonce: a.nonce, mode: 'punch', refreshMs: 2000, flags: RegisterFlag.REFRESH }) },
    {
      label: 'REGISTER success (with introduction)',
      bytes: encodeMessage({ kind: 'register-ok', txid: txid(), mapped: peer, lifetimeSeconds: 60, timestamp: now, alternate: { address: '203.0.113.1', port: 3479 }, intro }, { key: s2c }),
    },
    { label: 'REGISTER error 401', bytes: encodeMessage({ kind: 'error', method: Method.REGISTER, txid: txid(), code: 401, reason: 'Unauthenticated', timestamp: undefined }) },
    { label: 'REGISTER error 409', bytes: encodeMessage({ kind: 'error', method: Method.REGISTER, txid: txid(), code: 409, reason: 'Displaced', timestamp: now }, { key: s2c }) },
    { label: 'NOTICE indication (partner-left)', bytes: encodeMessage({ kind: 'notice', txid: txid(), networkId: keys.networkId, recipientNonce: a.nonce, timestamp: now, notice: 'partner-left', peerName: 'bob', peerNonce: b.nonce }, { key: s2c }) },
    { label: 'NOTICE indication (displaced)', bytes: encodeMessage({ kind: 'notice', txid: txid(), networkId: keys.networkId, recipientNonce: a.nonce, timestamp: now, notice: 'displaced', peerName: 'alice', peerNonce: b.nonce }, { key: s2c }) },
    { label: 'REGISTER error 438', bytes: encodeMessage({ kind: 'error', method: Method.REGISTER, txid: txid(), code: 438, reason: 'Stale', timestamp: now }, { key: s2c }) },
    { label: 'INTRODUCE indication', bytes: encodeMessage({ kind: 'introduce', txid: txid(), networkId: keys.networkId, recipientNonce: a.nonce, timestamp: now, intro }, { key: s2c }) },
    { label: 'PROBE request', bytes: encodeMessage({ kind: 'probe', txid: txid(), timestamp: now, flags: 1, destination: peer }, { key: probeKey }) },
    { label: 'PROBE success', bytes: encodeMessage({ kind: 'probe-ok', txid: txid(), timestamp: now, flags: 2, mapped: peer }, { key: probeKey }) },
    { label: 'CLOSE indication', bytes: encodeMessage({ kind: 'close', txid: txid(), timestamp: now }, { key: probeKey }) },
  ];
}

/** A STUN header: `method`/`class` type, a length field (which may lie), the magic cookie, a random transaction id. */
export function stunHeader(type: number, lengthField: number, total = 20): Buffer {
  const b = Buffer.alloc(Math.max(20, total));
  b.writeUInt16BE(type, 0);
  b.writeUInt16BE(lengthField & 0xffff, 2);
  b.writeUInt32BE(MAGIC_COOKIE, 4);
  randomBytes(12).copy(b, 8);
  return b;
}

/**
 * Hand-made malformed messages: unknown methods, lying length fields, oversized attributes. Labelled, so that a
 * failure names its input.
 */
export function malformedMessages(): { readonly label: string; readonly bytes: Buffer }[] {
  const out: { label: string; bytes: Buffer }[] = [];
  for (const cls of ['request', 'indication', 'success', 'error'] as const) {
    out.push({ label: `unknown method 0x0FEF (${cls})`, bytes: stunHeader(messageType(0x0fef, cls), 0) });
    out.push({ label: `unknown method 0x0BF (${cls}), one attribute`, bytes: Buffer.concat([stunHeader(messageType(0x0bf, cls), 8), Buffer.from([0x4b, 0x01, 0, 4, 1, 2, 3, 4])]) });
  }
  out.push({ label: 'top bits set (not STUN)', bytes: stunHeader(0xc001, 0) });
  out.push({ label: 'length field 0xFFFC, 20-byte datagram', bytes: stunHeader(0x0001, 0xfffc) });
  out.push({ label: 'length field 8 more than the datagram', bytes: stunHeader(0x0001, 16, 28) });
  out.push({ label: 'length field not a multiple of 4', bytes: stunHeader(0x0001, 6, 28) });
  for (const [method, name] of [[Method.BINDING, 'Binding'], [Method.REGISTER, 'REGISTER'], [Method.INTRODUCE, 'INTRODUCE'], [Method.PROBE, 'PROBE'], [Method.CLOSE, 'CLOSE']] as const) {
    for (const cls of ['request', 'indication'] as const) {
      // An attribute whose length field is larger than the datagram.
      const big = stunHeader(messageType(method, cls), 8, 28);
      big.writeUInt16BE(0x4b02, 20);
      big.writeUInt16BE(0x0400, 22);
      out.push({ label: `${name} ${cls}: attribute length 1024 in an 8-byte body`, bytes: big });
      const max = stunHeader(messageType(method, cls), 8, 28);
      max.writeUInt16BE(0x0020, 20);
      max.writeUInt16BE(0xffff, 22);
      out.push({ label: `${name} ${cls}: attribute length 0xFFFF`, bytes: max });
      const zero = stunHeader(messageType(method, cls), 4, 24);
      zero.writeUInt16BE(0x001c, 20);
      out.push({ label: `${name} ${cls}: MESSAGE-INTEGRITY-SHA256 of length 0`, bytes: zero });
    }
  }
  // The largest datagram the decoder accepts, and one byte more.
  out.push({ label: '1200-byte message of padding attributes', bytes: Buffer.concat([stunHeader(0x0001, 1180), Buffer.alloc(1180)]) });
  out.push({ label: '1204-byte message (too long)', bytes: Buffer.concat([stunHeader(0x0001, 1184), Buffer.alloc(1184)]) });
  out.push({ label: '65,507-byte datagram of zeros', bytes: Buffer.alloc(65_507) });
  return out;
}

/** Junk of every shape, deterministic in `i` (cheap to make a million of). */
export function junk(i: number, pool: Buffer): Buffer {
  switch (i % 6) {
    case 0: return Buffer.alloc(0);
    case 1: return Buffer.from([i & 0xff]);
    case 2: {
      const len = 1 + (i % 1400);
      const at = (i * 7919) % (pool.length - len);
      return pool.subarray(at, at + len);
    }
    case 3: return stunHeader(0x0001, 0xfffc, 20 + (i % 64));
    case 4: return stunHeader(messageType(0x0fef, 'request'), 0);
    default: {
      const at = (i * 104_729) % (pool.length - 120);
      return pool.subarray(at, at + 20 + (i % 100));
    }
  }
}

/**
 * The unauthenticated mix: every shape an attacker without the secret can send (bare and padded Binding requests,
 * REGISTERs under another secret, with a bad MAC or a stale timestamp, truncations, reflected answers, pushes and peer
 * messages, junk), plus replays of one valid REGISTER, which is the first datagram. Binding requests for the alternate
 * port come apart.
 */
export function unauthenticatedMix(keys: NetworkKeys, wrong: NetworkKeys, count: number): { datagrams: Buffer[]; alternate: Buffer[] } {
  const now = Date.now();
  const pool = Buffer.from(Array.from({ length: 1 << 16 }, (_, i) => (i * 2_246_822_519) >>> 24));
  const valid = everyMessageType(keys, now).map((m) => m.bytes);
  const replayed = registerRequest(keys, { name: 'mallory-victim', target: 'x', timestamp: now });
  const datagrams: Buffer[] = [replayed];
  const alternate: Buffer[] = [];
  for (let i = 0; datagrams.length < count; i++) {
    switch (i % 10) {
      case 0: datagrams.push(encodeMessage({ kind: 'binding', txid: txid(), fingerprint: false })); break; // bare, 20 bytes
      case 1: datagrams.push(encodeMessage(bindingRequest(txid()))); break; // padded, 44 bytes
      case 2: alternate.push(encodeMessage({ kind: 'binding', txid: txid(), fingerprint: i % 4 === 0 })); break;
      case 3: datagrams.push(registerRequest(wrong, { name: 'mallory', target: 'x', timestamp: now })); break; // unknown network: 401
      case 4: { // right network, wrong MAC: 401
        const b = registerRequest(keys, { name: 'mallory', target: 'x', timestamp: now });
        b[b.length - 1] = (b[b.length - 1] ?? 0) ^ 1;
        datagrams.push(b);
        break;
      }
      case 5: datagrams.push(registerRequest(keys, { name: 'mallory', target: 'x', timestamp: now - 3_600_000 })); break; // stale: 438 (a replay of an old capture)
      case 6: datagrams.push(replayed); break;
      case 7: { // truncated
        const v = valid[i % valid.length]!;
        datagrams.push(v.subarray(0, i % v.length));
        break;
      }
      case 8: datagrams.push(reflectable(valid, i)); break; // reflected answers, pushes and peer messages
      default: datagrams.push(Buffer.from(junk(i, pool))); break;
    }
  }
  return { datagrams, alternate };
}

/** The messages a client could reflect at the server: answers, pushes, peer-to-peer messages. */
export function reflectable(valid: readonly Buffer[], i: number): Buffer {
  const kinds = valid.filter((v) => {
    const d = decodeMessage(v);
    return d.ok && d.msg.kind !== 'binding' && d.msg.kind !== 'register';
  });
  return kinds[i % kinds.length]!;
}

