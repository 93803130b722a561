/** Burrow messages: round trips, golden bytes, and fuzzing of the parser. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzRuns } from '../support/fuzz.js';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage, type BurrowMessage } from '../../src/codec/messages.js';
import { decodeStun, verifyIntegrity } from '../../src/codec/stun.js';
import { deriveNetworkKeys, deriveProbeKeys } from '../../src/crypto/keys.js';

const arbEndpoint: fc.Arbitrary<Endpoint> = fc.oneof(
  fc.tuple(fc.ipV4(), fc.integer({ min: 1, max: 65535 })).map(([address, port]) => ({ address, port })),
  fc
    .tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 1, max: 65535 }))
    .filter(([b]) => !(b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff))
    .map(([b, port]) => ({ address: hex16(b), port })),
);
function hex16(b: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((b[i] ?? 0) << 8) | (b[i + 1] ?? 0)).toString(16));
  return groups.join(':').replace(/\b(?:0:){2,}/, ':').replace(/^:(?!:)/, '::');
}
const arbName = fc.string({ minLength: 1, maxLength: 20, unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789-_+/=é'.split('')) });
const arbTxid = fc.uint8Array({ minLength: 12, maxLength: 12 });
const arbNonce = fc.uint8Array({ minLength: 16, maxLength: 16 });
const arbTs = fc.integer({ min: 0, max: 2 ** 52 });
const arbMapping = fc.constantFrom<'unknown' | 'endpoint-independent' | 'endpoint-dependent'>('unknown', 'endpoint-independent', 'endpoint-dependent');
const arbIntro = fc.record({ peerName: arbName, peerNonce: arbNonce, peerMapped: arbEndpoint, peerHosts: fc.array(arbEndpoint, { maxLength: 8 }), peerMapping: arbMapping });

const arbMessage: fc.Arbitrary<BurrowMessage> = fc.oneof(
  fc.record({ kind: fc.constant('binding' as const), txid: arbTxid, fingerprint: fc.boolean() }),
  fc.record({ kind: fc.constant('binding-ok' as const), txid: arbTxid, mapped: arbEndpoint }),
  fc.record({
    kind: fc.constant('register' as const), txid: arbTxid, networkId: fc.uint8Array({ minLength: 8, maxLength: 8 }),
    name: arbName, target: arbName, sessionNonce: arbNonce, timestamp: arbTs, hosts: fc.array(arbEndpoint, { maxLength: 8 }), mapping: arbMapping,
  }),
  fc.record({
    kind: fc.constant('register-ok' as const), txid: arbTxid, mapped: arbEndpoint, lifetimeSeconds: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
    timestamp: arbTs, alternate: fc.option(arbEndpoint, { nil: undefined }), intro: fc.option(arbIntro, { nil: undefined }),
  }),
  fc.record({
    kind: fc.constant('error' as const), method: fc.constantFrom(0x001, 0x0b1), txid: arbTxid, code: fc.integer({ min: 300, max: 699 }),
    reason: fc.string({ maxLength: 30 }), timestamp: fc.option(arbTs, { nil: undefined }),
  }),
  fc.record({ kind: fc.constant('introduce' as const), txid: arbTxid, networkId: fc.uint8Array({ minLength: 8, maxLength: 8 }), recipientNonce: arbNonce, timestamp: arbTs, intro: arbIntro }),
  fc.record({ kind: fc.constant('probe' as const), txid: arbTxid, timestamp: arbTs, flags: fc.integer({ min: 0, max: 3 }), destination: arbEndpoint }),
  fc.record({ kind: fc.constant('probe-ok' as const), txid: arbTxid, timestamp: arbTs, flags: fc.integer({ min: 0, max: 3 }), mapped: arbEndpoint }),
  fc.record({ kind: fc.constant('close' as const), txid: arbTxid, timestamp: arbTs }),
  fc.record({
    kind: fc.constant('report' as const), txid: arbTxid, networkId: fc.uint8Array({ minLength: 8, maxLength: 8 }), name: arbName,
    sessionNonce: arbNonce, timestamp: arbTs, outcome: fc.constantFrom('connected' as const, 'failed' as const),
  }),
);

/** Plain data for comparison: byte arrays as hex (Buffer and Uint8Array alike), undefined as absent. */
function normalise(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
  if (Array.isArray(v)) return v.map(normalise);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) => [k, normalise(x)]));
  }
  return v;
}

describe('Burrow messages', () => {
  it('every message survives encode → decode (property)', () => {
    fc.assert(
      fc.property(arbMessage, (msg) => {
        const d = decodeMessage(encodeMessage(msg));
        assert.ok(d.ok, d.ok ? '' : `${d.reason} ${'detail' in d ? d.detail : ''}`);
        assert.deepEqual(normalise(d.msg), normalise(msg));
      }),
      { numRuns: fuzzRuns(3000) },
    );
  });

  it('the parser never throws, whatever the bytes (fuzz)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1300 }), (bytes) => {
        const d = decodeMessage(bytes);
        if (!d.ok) assert.equal(typeof d.reason, 'string');
      }),
      { numRuns: fuzzRuns(20_000) },
    );
  });

  it('the parser never throws on mutations of valid messages (fuzz)', () => {
    fc.assert(
      fc.property(arbMessage, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), fc.nat(), (msg, flips, cut) => {
        const bytes = Buffer.from(encodeMessage(msg));
        for (const [at, value] of flips) bytes[at % bytes.length] = value;
        decodeMessage(bytes);
        decodeMessage(bytes.subarray(0, cut % (bytes.length + 1)));
        // Keep the length field consistent with a cut so the attribute walker runs too.
        const c = bytes.subarray(0, Math.max(20, cut % (bytes.length + 1)) & ~3);
        if (c.length >= 20) {
          const copy = Buffer.from(c);
          copy.writeUInt16BE(copy.length - 20, 2);
          decodeMessage(copy);
        }
      }),
      { numRuns: fuzzRuns(20_000) },
    );
  });

  it('any change to an authenticated message breaks its MAC (property)', () => {
    const key = Buffer.alloc(32, 9);
    fc.assert(
      fc.property(arbMessage, fc.nat(), fc.integer({ min: 1, max: 255 }), (msg, at, x) => {
        const bytes = Buffer.from(encodeMessage(msg, { key }));
        const i = at % (bytes.length - 36); // anything before the MAC attribute's value
        bytes[i] = (bytes[i] ?? 0) ^ x;
        const d = decodeStun(bytes);
        if (d.ok) assert.notEqual(verifyIntegrity(bytes, d.msg, key), 'valid');
      }),
      { numRuns: fuzzRuns(5000) },
    );
  });

  it('REGISTER has stable bytes for fixed inputs (golden)', () => {
    const keys = deriveNetworkKeys(Buffer.from('golden secret'));
    const msg: BurrowMessage = {
      kind: 'register', txid: Buffer.alloc(12, 0xab), networkId: keys.networkId, name: 'alice', target: 'bob',
      sessionNonce: Buffer.alloc(16, 0xcd), timestamp: 1_700_000_000_000, hosts: [{ address: '192.0.2.10', port: 5000 }], mapping: 'endpoint-independent',
    };
    const bytes = encodeMessage(msg, { key: keys.clientToServer });
    assert.equal(Buffer.from(keys.networkId).toString('hex'), GOLDEN.networkId);
    assert.equal(bytes.toString('hex'), GOLDEN.register);
  });

  it('probe keys differ by direction, pair and session', () => {
    const keys = deriveNetworkKeys(Buffer.from('s'));
    const a = { name: 'alice', nonce: Buffer.alloc(16, 1) };
    const b = { name: 'bob', nonce: Buffer.alloc(16, 2) };
    const ab = deriveProbeKeys(keys, a, b);
    const ba = deriveProbeKeys(keys, b, a);
    assert.deepEqual(ab.send, ba.receive);
    assert.deepEqual(ab.receive, ba.send);
    assert.notDeepEqual(ab.send, ab.receive);
    const other = deriveProbeKeys(keys, { ...a, nonce: Buffer.alloc(16, 3) }, b);
    assert.notDeepEqual(other.send, ab.send);
    const hash = (k: Uint8Array) => createHash('sha256').update(k).digest('hex').slice(0, 8);
    assert.notEqual(hash(deriveProbeKeys(keys, a, { ...b, name: 'carol' }).send), hash(ab.send));
  });
});

// Pinned output of the key schedule and the REGISTER encoder; a change here is a wire-format change.
const GOLDEN = {
  networkId: 'da10ee08f60b122c',
  register:
    '026100782112a442abababababababababababab4b010008da10ee08f60b122c4b020005616c6963650000004b030003626f62004b040010cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd4b0600080000018bcfe568004b0700080001329ae112a6484b08000401000000001c002042551102eae6d7c4d768275cdb3dec40e85ac3703bd884071e24fff796e3b62b',
};
