/** WireGuard pieces: Noise constants and primitives against published values, WG-SYNC and `wg show dump` codecs, fuzzing. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Endpoint } from '../../src/codec/address.js';
import { parseWgDump } from '../../src/codec/wg-dump.js';
import { decodeWgSync, encodeWgSync, encodeWgSyncOk, MAX_WG_QUERY, wgProof, type WgPeerInfo, type WgSyncRequest } from '../../src/codec/wg-messages.js';
import { verifyIntegrity } from '../../src/codec/stun.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import {
  consumeInitiation, consumeResponse, createInitiation, createResponse, dh, hash, looksLikeWireGuard, mac, openTransport,
  generateKeyPair, publicKeyOf, sealTransport, serverIdentity, tai64n, transportHeader,
} from '../../src/crypto/wireguard.js';

const RUNS = Number(process.env.BURROW_FUZZ_RUNS ?? 500);

describe('WireGuard Noise primitives', () => {
  it('the initial chaining key and hash are WireGuard\'s (published constants)', () => {
    const ck = hash(Buffer.from('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s'));
    assert.equal(ck.toString('hex'), '60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36');
    assert.equal(hash(ck, Buffer.from('WireGuard v1 zx2c4 Jason@zx2c4.com')).toString('hex'), '2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3');
  });

  it('X25519 matches RFC 7748 §6.1', () => {
    const alice = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex');
    const bobPub = Buffer.from('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f', 'hex');
    assert.equal(publicKeyOf(alice).toString('hex'), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
    assert.equal(dh(alice, bobPub)?.toString('hex'), '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
    assert.equal(dh(alice, new Uint8Array(32)), undefined, 'a low-order point gives no shared secret');
  });

  it('keyed BLAKE2s-128 (mac) differs by key and is 16 bytes', () => {
    const a = mac(new Uint8Array(32), Buffer.from('x'));
    const b = mac(new Uint8Array(32).fill(1), Buffer.from('x'));
    assert.equal(a.length, 16);
    assert.notDeepEqual(a, b);
  });

  it('initiation → response → transport round trip; tampering anywhere fails; the response is shorter than the initiation', () => {
    const id = serverIdentity(Buffer.from('noise test'));
    const client = randomBytes(32);
    const init = createInitiation(client, id.publicKey, randomBytes(32), 7, tai64n(Date.now()));
    assert.equal(init.packet.length, 148);
    assert.ok(looksLikeWireGuard(init.packet));
    const consumed = consumeInitiation(init.packet, id);
    assert.ok(consumed.ok);
    assert.deepEqual(consumed.value.peerKey, publicKeyOf(client));
    const resp = createResponse(consumed.value, id, generateKeyPair(), 99);
    assert.ok(resp);
    assert.ok(resp.packet.length < init.packet.length);
    const keys = consumeResponse(init, resp.packet, id.presharedKey);
    assert.ok(keys);
    assert.equal(keys.receiverIndex, 99);
    const keepalive = sealTransport(99, 0n, keys.sendKey, new Uint8Array(0));
    assert.equal(keepalive.length, 32);
    const header = transportHeader(keepalive);
    assert.deepEqual(header, { receiverIndex: 99, counter: 0n });
    assert.ok(openTransport(keepalive, resp.receiveKey, 0n));
    // A client without the preshared key (the network secret) cannot produce a valid transport packet.
    const wrongPsk = consumeResponse(init, resp.packet, new Uint8Array(32));
    assert.equal(wrongPsk, undefined);
    // Every byte up to mac1 is authenticated (mac2 is only checked by a responder under load, which we never are).
    for (let i = 0; i < 132; i++) {
      const bad = Buffer.from(init.packet);
      bad[i] = (bad[i] ?? 0) ^ 0x01;
      assert.equal(consumeInitiation(bad, id).ok, false, `flipped byte ${i} was accepted`);
    }
    const other = serverIdentity(Buffer.from('another network'));
    assert.deepEqual(consumeInitiation(init.packet, other), { ok: false, reason: 'bad-mac1' });
  });

  it('looksLikeWireGuard never matches a STUN message and never throws', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
      const r = looksLikeWireGuard(b);
      if (b.length >= 8 && b[4] === 0x21 && b[5] === 0x12 && b[6] === 0xa4 && b[7] === 0x42) assert.equal(r, false);
    }), { numRuns: RUNS });
  });

  it('consumeInitiation rejects arbitrary 148-byte inputs with a reason, never throwing', () => {
    const id = serverIdentity(Buffer.from('noise fuzz'));
    fc.assert(fc.property(fc.uint8Array({ minLength: 148, maxLength: 148 }), (b) => {
      b[0] = 1; b[1] = 0; b[2] = 0; b[3] = 0;
      const r = consumeInitiation(b, id);
      assert.equal(r.ok, false);
    }), { numRuns: RUNS });
  });
});

const KEYS = deriveNetworkKeys(Buffer.from('wg codec secret'));
const arbEndpoint: fc.Arbitrary<Endpoint> = fc.tuple(fc.ipV4(), fc.integer({ min: 1, max: 65535 })).map(([address, port]) => ({ address, port }));
const arbKey = fc.uint8Array({ minLength: 32, maxLength: 32 });
const arbMapping = fc.constantFrom<'unknown' | 'endpoint-independent' | 'endpoint-dependent'>('unknown', 'endpoint-independent', 'endpoint-dependent');
const arbPeer: fc.Arbitrary<WgPeerInfo> = fc.record({
  key: arbKey, announced: fc.boolean(), endpoint: fc.option(arbEndpoint, { nil: undefined }), ageSeconds: fc.integer({ min: 0, max: 65535 }),
  listenPort: fc.integer({ min: 0, max: 65535 }), hosts: fc.array(arbEndpoint, { maxLength: 4 }), mapping: arbMapping,
});

function request(overrides: Partial<WgSyncRequest> = {}): WgSyncRequest {
  const facts = { txid: new Uint8Array(12).fill(3), networkId: KEYS.networkId, timestamp: 1_700_000_000_000, key: new Uint8Array(32).fill(9), listenPort: 51820, hosts: [{ address: '192.0.2.2', port: 51820 }], mapping: 'endpoint-independent' as const };
  return { kind: 'wg-sync', ...facts, query: [new Uint8Array(32).fill(5)], proof: wgProof(new Uint8Array(32).fill(1), facts), ...overrides };
}

describe('WG-SYNC codec', () => {
  it('round-trips requests and answers, authenticated', () => {
    fc.assert(fc.property(arbKey, fc.array(arbKey, { maxLength: MAX_WG_QUERY }), fc.array(arbEndpoint, { maxLength: 4 }), arbMapping, (key, query, hosts, mapping) => {
      const req = request({ key, query, hosts, mapping });
      const bytes = encodeWgSync(req, KEYS.clientToServer);
      const d = decodeWgSync(bytes);
      assert.ok(d.ok && d.msg.kind === 'wg-sync');
      assert.equal(verifyIntegrity(bytes, d.stun, KEYS.clientToServer), 'valid');
      assert.deepEqual({ ...d.msg, txid: [...d.msg.txid], networkId: [...d.msg.networkId], key: [...d.msg.key], proof: [...(d.msg.proof ?? [])], query: d.msg.query.map((q) => [...q]) },
        { ...req, txid: [...req.txid], networkId: [...req.networkId], key: [...req.key], proof: [...(req.proof ?? [])], query: req.query.map((q) => [...q]) });
    }), { numRuns: RUNS });
    fc.assert(fc.property(arbPeer, fc.array(arbPeer, { maxLength: MAX_WG_QUERY }), fc.option(arbEndpoint, { nil: undefined }), (self, peers, alternate) => {
      const bytes = encodeWgSyncOk({ kind: 'wg-sync-ok', txid: new Uint8Array(12), timestamp: 5, self, peers, alternate, proofKey: new Uint8Array(32).fill(4) }, KEYS.serverToClient);
      assert.ok(bytes.length <= 1200, `answer of ${bytes.length} bytes does not fit one datagram`);
      const d = decodeWgSync(bytes);
      assert.ok(d.ok && d.msg.kind === 'wg-sync-ok');
      const norm = (p: WgPeerInfo): unknown => ({ ...p, key: [...p.key] });
      assert.deepEqual(norm(d.msg.self), norm(self));
      assert.deepEqual(d.msg.peers.map(norm), peers.map(norm));
      assert.deepEqual(d.msg.alternate, alternate);
      assert.deepEqual([...d.msg.proofKey], new Array(32).fill(4));
    }), { numRuns: RUNS });
  });

  it('golden bytes: the request header and attribute order are stable', () => {
    const bytes = encodeWgSync(request(), KEYS.clientToServer);
    assert.equal(bytes.subarray(0, 8).toString('hex'), `0266${(bytes.length - 20).toString(16).padStart(4, '0')}2112a442`);
    assert.equal(bytes.readUInt16BE(20), 0x4b01); // NETWORK-ID first
    assert.equal(bytes.readUInt16BE(bytes.length - 36), 0x001c); // MESSAGE-INTEGRITY-SHA256 last
  });

  it('rejects arbitrary bytes and mutated messages with a typed reason, never throwing', () => {
    const valid = encodeWgSync(request(), KEYS.clientToServer);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (b) => {
      const r = decodeWgSync(b);
      if (!r.ok) assert.ok(['not-stun', 'wrong-method', 'missing-attribute', 'bad-attribute'].includes(r.reason));
    }), { numRuns: RUNS });
    fc.assert(fc.property(fc.nat(valid.length - 1), fc.integer({ min: 1, max: 255 }), (i, x) => {
      const b = Buffer.from(valid);
      b[i] = (b[i] ?? 0) ^ x;
      const r = decodeWgSync(b);
      if (r.ok) assert.notEqual(verifyIntegrity(b, r.stun, KEYS.clientToServer), 'valid');
    }), { numRuns: RUNS });
  });
});

describe('`wg show dump` parser', () => {
  const k = (n: number): string => Buffer.alloc(32, n).toString('base64');
  it('reads the interface and peers', () => {
    const text = [
      `${k(1)}\t${k(2)}\t51820\toff`,
      `${k(3)}\t(none)\t198.51.100.6:51820\t192.0.2.194/32\t1700000000\t92\t180\t25`,
      `${k(4)}\t${k(5)}\t[2001:db8::1]:3478\t(none)\t0\t0\t0\toff`,
      `${k(6)}\t(none)\t(none)\t10.0.0.0/8,192.0.2.0/24\t0\t0\t0\toff`,
      '',
    ].join('\n');
    const r = parseWgDump(text);
    assert.ok(r.ok);
    assert.equal(r.dump.publicKey, k(2));
    assert.equal(r.dump.listenPort, 51820);
    assert.deepEqual(r.dump.peers.map((p) => [p.endpoint, p.allowedIps, p.latestHandshake, p.persistentKeepalive, p.presharedKey]), [
      [{ address: '198.51.100.6', port: 51820 }, ['192.0.2.194/32'], 1700000000, 25, undefined],
      [{ address: '2001:db8::1', port: 3478 }, [], 0, 0, k(5)],
      [undefined, ['10.0.0.0/8', '192.0.2.0/24'], 0, 0, undefined],
    ]);
  });

  it('explains an unreadable private key and rejects malformed input without throwing', () => {
    const r = parseWgDump(`(none)\t${k(2)}\t51820\toff\n`);
    assert.deepEqual(r, { ok: false, reason: 'the interface has no private key' });
    fc.assert(fc.property(fc.string({ maxLength: 400 }), (s) => {
      const x = parseWgDump(s);
      assert.equal(typeof x.ok, 'boolean');
    }), { numRuns: RUNS });
  });
});
