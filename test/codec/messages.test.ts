/** Burrow messages: round trips, golden bytes, and fuzzing of the parser. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzRuns } from '../support/fuzz.js';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeCandidate, decodeMessage, encodeCandidate, encodeMessage, MAX_CANDIDATES, MAX_PRIORITY, type BurrowMessage, type Candidate, type CandidateKind } from '../../src/codec/messages.js';
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
const KINDS: readonly CandidateKind[] = ['host', 'srflx', 'prflx', 'relayed', 'mapped', 'predicted'];
const arbCandidate: fc.Arbitrary<Candidate> = fc.record({ kind: fc.constantFrom(...KINDS), priority: fc.integer({ min: 1, max: MAX_PRIORITY }), endpoint: arbEndpoint });
const arbCandidates = fc.array(arbCandidate, { maxLength: MAX_CANDIDATES });
const arbIntro = fc.record({ peerName: arbName, peerNonce: arbNonce, peerMapped: arbEndpoint, peerCandidates: arbCandidates, peerMapping: arbMapping });

const arbMessage: fc.Arbitrary<BurrowMessage> = fc.oneof(
  fc.record({ kind: fc.constant('binding' as const), txid: arbTxid, fingerprint: fc.boolean() }),
  fc.record({ kind: fc.constant('binding-ok' as const), txid: arbTxid, mapped: arbEndpoint }),
  fc.record({
    kind: fc.constant('register' as const), txid: arbTxid, networkId: fc.uint8Array({ minLength: 8, maxLength: 8 }),
    name: arbName, target: arbName, sessionNonce: arbNonce, timestamp: arbTs, candidates: arbCandidates, mapping: arbMapping,
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
      sessionNonce: Buffer.alloc(16, 0xcd), timestamp: 1_700_000_000_000, candidates: [{ kind: 'host', priority: 2130706431, endpoint: { address: '192.0.2.10', port: 5000 } }], mapping: 'endpoint-independent',
    };
    const bytes = encodeMessage(msg, { key: keys.clientToServer });
    assert.equal(Buffer.from(keys.networkId).toString('hex'), GOLDEN.networkId);
    assert.equal(bytes.toString('hex'), GOLDEN.register);
  });

  it('CANDIDATE values have stable bytes for every kind, IPv4 and IPv6 (golden)', () => {
    const txid = Buffer.alloc(12, 0xab);
    const v4 = { address: '192.0.2.10', port: 5000 };
    const v6 = { address: '2001:db8::1', port: 40000 };
    const hex = KINDS.map((kind, i) => Buffer.from(encodeCandidate({ kind, priority: 0x7e00ff00 - i, endpoint: i % 2 === 0 ? v4 : v6 }, txid)).toString('hex'));
    assert.deepEqual(hex, GOLDEN.candidates);
    for (const [i, h] of hex.entries()) {
      const d = decodeCandidate(Buffer.from(h, 'hex'), txid);
      assert.ok(d.ok);
      assert.deepEqual(d.candidate, { kind: KINDS[i], priority: 0x7e00ff00 - i, endpoint: i % 2 === 0 ? v4 : v6 });
    }
  });

  it('CANDIDATE decoding is strict, with a typed reason for each defect', () => {
    const txid = Buffer.alloc(12, 1);
    const good = Buffer.from(encodeCandidate({ kind: 'relayed', priority: 255, endpoint: { address: '203.0.113.9', port: 49152 } }, txid));
    const with_ = (i: number, v: number): Buffer => {
      const b = Buffer.from(good);
      b[i] = v;
      return b;
    };
    const priority = (p: number): Buffer => {
      const b = Buffer.from(good);
      b.writeUInt32BE(p >>> 0, 4);
      return b;
    };
    const cases: [Uint8Array, string][] = [
      [good.subarray(0, 15), 'bad-length'],
      [Buffer.concat([good, Buffer.alloc(4)]), 'bad-length'],
      [with_(0, 2), 'unsupported-version'],
      [with_(0, 0), 'unsupported-version'],
      [with_(1, 0), 'unknown-kind'],
      [with_(1, 7), 'unknown-kind'],
      [with_(2, 1), 'reserved-not-zero'],
      [with_(3, 0x80), 'reserved-not-zero'],
      [priority(0), 'bad-priority'],
      [priority(2 ** 31), 'bad-priority'],
      [with_(8, 1), 'reserved-not-zero'],
      [with_(9, 2), 'bad-family'],
      [Buffer.concat([good, Buffer.alloc(12)]), 'bad-family'],
      [with_(9, 9), 'bad-family'],
      [Buffer.concat([good.subarray(0, 8), Buffer.from([0, 1, 0, 0])]), 'bad-length'],
    ];
    for (const [bytes, reason] of cases) {
      const d = decodeCandidate(bytes, txid);
      assert.deepEqual(d.ok ? 'ok' : d.reason, reason, Buffer.from(bytes).toString('hex'));
    }
    assert.ok(decodeCandidate(good, txid).ok);
  });

  it('a message with a bad CANDIDATE, or more than the limit, is rejected as bad-attribute', () => {
    const keys = deriveNetworkKeys(Buffer.from('s'));
    const c = (i: number): Candidate => ({ kind: 'host', priority: 1000 + i, endpoint: { address: '192.0.2.10', port: 5000 + i } });
    const base = { kind: 'register' as const, txid: Buffer.alloc(12, 3), networkId: keys.networkId, name: 'a', target: 'b', sessionNonce: Buffer.alloc(16), timestamp: 1, mapping: 'unknown' as const };
    const ok = decodeMessage(encodeMessage({ ...base, candidates: Array.from({ length: MAX_CANDIDATES }, (_, i) => c(i)) }));
    assert.ok(ok.ok && ok.msg.kind === 'register' && ok.msg.candidates.length === MAX_CANDIDATES);
    // The encoder never writes more than the limit; build the over-long message by hand from two encodings.
    const bytes = Buffer.from(encodeMessage({ ...base, candidates: [c(0)] }));
    const attr = bytes.subarray(bytes.indexOf(Buffer.from([0x4b, 0x13])), bytes.indexOf(Buffer.from([0x4b, 0x13])) + 20);
    const more = Buffer.concat([bytes, ...Array.from({ length: MAX_CANDIDATES }, () => attr)]);
    more.writeUInt16BE(more.length - 20, 2);
    const tooMany = decodeMessage(more);
    assert.ok(!tooMany.ok && tooMany.reason === 'bad-attribute' && tooMany.detail.includes(`more than ${MAX_CANDIDATES}`));
    const bad = Buffer.from(bytes);
    bad[bad.indexOf(Buffer.from([0x4b, 0x13])) + 4] = 9; // the version byte
    const d = decodeMessage(bad);
    assert.ok(!d.ok && d.reason === 'bad-attribute' && d.detail === 'CANDIDATE: unsupported-version', d.ok ? '' : d.reason);
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
  // Checked by hand for the first: version 1, kind 1, reserved 0, priority 0x7e00ff00, then 192.0.2.10:5000 XOR-encoded
  // (port 0x1388 ^ 0x2112 = 0x329a, address c000020a ^ 2112a442 = e112a648), as in XOR-MAPPED-ADDRESS.
  candidates: [
    '010100007e00ff000001329ae112a648',
    '010200007e00feff0002bd520113a9faabababababababababababaa',
    '010300007e00fefe0001329ae112a648',
    '010400007e00fefd0002bd520113a9faabababababababababababaa',
    '010500007e00fefc0001329ae112a648',
    '010600007e00fefb0002bd520113a9faabababababababababababaa',
  ],
  register:
    '026100802112a442abababababababababababab4b010008da10ee08f60b122c4b020005616c6963650000004b030003626f62004b040010cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd4b0600080000018bcfe568004b130010010100007effffff0001329ae112a6484b08000401000000001c00204f685fc5d2227b8d39eb7f8285c7ae7d60924e568f7c6c9f55547e288fa88b6f',
};
