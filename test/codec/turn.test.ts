/**
 * TURN codec (src/codec/turn.ts) and the RELAY attribute (src/codec/messages.ts): RFC 5769 golden bytes for long-term
 * credentials, round trips of every TURN method, ChannelData framing, the credential derivations and the relay offer.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeMessage, decodeRelayOffer, encodeMessage, encodeRelayOffer, type Introduction, type RelayOffer } from '../../src/codec/messages.js';
import {
  builtinCredentials,
  builtinPassword,
  builtinUsername,
  BUILTIN_REALM,
  decodeChannelData,
  decodeTurn,
  encodeChannelData,
  encodeTurn,
  longTermKey,
  looksLikeChannelData,
  parseBuiltinUsername,
  relayKeyFromSecret,
  TRANSPORT_UDP,
  TurnAttr,
  TurnMethod,
  turnRestCredentials,
  verifyTurnIntegrity,
} from '../../src/codec/turn.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { fuzzRuns } from '../support/fuzz.js';

// RFC 5769 section 2.4, "Sample Request with Long-Term Authentication".
const RFC5769_LONG_TERM = Buffer.from(
  '000100602112a44278ad3433c6ad72c029da412e' +
    '00060012e3839ee38388e383aae38383e382afe382b90000' +
    '0015001c662f2f3439396b39353464364f4c33346f4c39465354767936347341' +
    '0014000b6578616d706c652e6f726700' +
    '00080014f67024656dd64a3e02b8e0712e85c9a28ca89666',
  'hex',
);
const RFC5769_USER = '\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9';
const RFC5769_NONCE = 'f//499k954d6OL34oL9FSTvy64sA';
const RFC5769_REALM = 'example.org';
const RFC5769_PASSWORD = 'TheMatrIX'; // after SASLprep

// RFC 5769 section 2.2, "Sample IPv4 Response" (short-term: the key is the password itself).
const RFC5769_IPV4_RESPONSE = Buffer.from(
  '0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643' +
    '000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96',
  'hex',
);

const TXID = Buffer.from('0102030405060708090a0b0c', 'hex');

describe('TURN codec (RFC 8656)', () => {
  it('decodes the RFC 5769 long-term sample and verifies its MESSAGE-INTEGRITY with MD5(user:realm:pass)', () => {
    const d = decodeTurn(RFC5769_LONG_TERM);
    assert.ok(d.ok, d.ok ? '' : d.reason);
    assert.equal(d.msg.username, RFC5769_USER);
    assert.equal(d.msg.nonce, RFC5769_NONCE);
    assert.equal(d.msg.realm, RFC5769_REALM);
    const key = longTermKey(RFC5769_USER, RFC5769_REALM, RFC5769_PASSWORD);
    assert.equal(verifyTurnIntegrity(RFC5769_LONG_TERM, d.msg, key), 'valid');
    assert.equal(verifyTurnIntegrity(RFC5769_LONG_TERM, d.msg, longTermKey(RFC5769_USER, RFC5769_REALM, 'TheMatrix')), 'invalid');
  });

  it('builds the RFC 5769 long-term sample byte for byte', () => {
    const key = longTermKey(RFC5769_USER, RFC5769_REALM, RFC5769_PASSWORD);
    const bytes = encodeTurn(0x001, 'request', RFC5769_LONG_TERM.subarray(8, 20), { username: RFC5769_USER, nonce: RFC5769_NONCE, realm: RFC5769_REALM }, { key });
    assert.equal(bytes.toString('hex'), RFC5769_LONG_TERM.toString('hex'));
  });

  it('verifies the RFC 5769 IPv4 response (MESSAGE-INTEGRITY followed by FINGERPRINT)', () => {
    const d = decodeTurn(RFC5769_IPV4_RESPONSE);
    assert.ok(d.ok);
    assert.deepEqual(d.msg.mapped, { address: '192.0.2.1', port: 32853 });
    assert.equal(verifyTurnIntegrity(RFC5769_IPV4_RESPONSE, d.msg, Buffer.from('VOkJxbRl1RmTxUk/WvJxBt')), 'valid');
  });

  it('golden bytes: an Allocate request with REQUESTED-TRANSPORT and LIFETIME', () => {
    const bytes = encodeTurn(TurnMethod.ALLOCATE, 'request', TXID, { requestedTransport: TRANSPORT_UDP, lifetime: 600 });
    assert.equal(bytes.toString('hex'), '000300102112a442' + '0102030405060708090a0b0c' + '0019000411000000' + '000d000400000258');
  });

  it('golden bytes: ChannelBind, a Send indication, and ChannelData with and without padding', () => {
    const peer = { address: '192.0.2.1', port: 32853 };
    const bind = encodeTurn(TurnMethod.CHANNEL_BIND, 'request', TXID, { channel: 0x4001, peers: [peer] });
    assert.equal(bind.toString('hex'), '000900142112a442' + '0102030405060708090a0b0c' + '000c000440010000' + '001200080001a147e112a643');
    const send = encodeTurn(TurnMethod.SEND, 'indication', TXID, { peers: [peer], data: Buffer.from('hi!') });
    assert.equal(send.toString('hex'), '001600142112a442' + '0102030405060708090a0b0c' + '001200080001a147e112a643' + '0013000368692100');
    assert.equal(encodeChannelData(0x4001, Buffer.from('hi!')).toString('hex'), '40010003686921');
    assert.equal(encodeChannelData(0x4001, Buffer.from('hi!'), true).toString('hex'), '4001000368692100');
  });

  it('round-trips every TURN method and class with integrity and fingerprint', () => {
    const key = longTermKey('u', 'burrow', 'p');
    const peers = [{ address: '198.51.100.7', port: 40000 }, { address: '2001:db8::5', port: 9 }];
    const cases = [
      [TurnMethod.ALLOCATE, 'request', { username: 'u', realm: 'burrow', nonce: 'n0nce123', requestedTransport: 17, lifetime: 3600, requestedFamily: 1 }],
      [TurnMethod.ALLOCATE, 'success', { relayed: { address: '203.0.113.1', port: 50000 }, mapped: { address: '198.51.100.9', port: 1234 }, lifetime: 600 }],
      [TurnMethod.ALLOCATE, 'error', { error: { code: 401, reason: 'Unauthorized' }, realm: 'burrow', nonce: 'abcdefgh' }],
      [TurnMethod.ALLOCATE, 'error', { error: { code: 420, reason: 'Unknown Attribute' }, unknownAttributes: [0x0031, 0x4b99] }],
      [TurnMethod.REFRESH, 'request', { lifetime: 0 }],
      [TurnMethod.CREATE_PERMISSION, 'request', { peers }],
      [TurnMethod.CHANNEL_BIND, 'request', { channel: 0x4fff, peers: [peers[0]!] }],
      [TurnMethod.SEND, 'indication', { peers: [peers[1]!], data: Buffer.alloc(1400, 7), dontFragment: true }],
      [TurnMethod.DATA, 'indication', { peers: [peers[0]!], data: Buffer.alloc(0) }],
    ] as const;
    for (const [method, cls, fields] of cases) {
      const bytes = encodeTurn(method, cls, TXID, fields, { key, fingerprint: true });
      const d = decodeTurn(bytes);
      assert.ok(d.ok, `${method}/${cls}: ${d.ok ? '' : d.reason}`);
      assert.equal(d.msg.method, method);
      assert.equal(d.msg.cls, cls);
      assert.equal(verifyTurnIntegrity(bytes, d.msg, key), 'valid');
      const f = fields as Record<string, unknown>;
      for (const k of ['username', 'realm', 'nonce', 'lifetime', 'requestedTransport', 'requestedFamily', 'channel', 'relayed', 'mapped', 'error'] as const) {
        if (f[k] !== undefined) assert.deepEqual(d.msg[k], f[k], `${k} of ${method}/${cls}`);
      }
      if (f.peers) assert.deepEqual(d.msg.peers, f.peers);
      if (f.data) assert.deepEqual(Buffer.from(d.msg.data ?? []), Buffer.from(f.data as Uint8Array));
      assert.equal(d.msg.dontFragment, f.dontFragment === true);
      assert.deepEqual(d.msg.unknownRequired, []);
    }
  });

  it('lists unknown comprehension-required attributes (for a 420) and ignores optional ones', () => {
    const bytes = Buffer.from(encodeTurn(TurnMethod.ALLOCATE, 'request', TXID, { requestedTransport: 17 }));
    const extra = Buffer.from('00310000' + '80990000' + '4b990000', 'hex');
    const all = Buffer.concat([bytes, extra]);
    all.writeUInt16BE(all.length - 20, 2);
    const d = decodeTurn(all);
    assert.ok(d.ok);
    assert.deepEqual(d.msg.unknownRequired, [0x0031, 0x4b99]);
  });

  it('a message altered after MESSAGE-INTEGRITY, or with an attribute after it, is invalid', () => {
    const key = longTermKey('u', 'burrow', 'p');
    const bytes = Buffer.from(encodeTurn(TurnMethod.REFRESH, 'request', TXID, { username: 'u', lifetime: 600 }, { key }));
    const flipped = Buffer.from(bytes);
    flipped[bytes.length - 25] = (flipped[bytes.length - 25] ?? 0) ^ 1; // inside LIFETIME
    const d1 = decodeTurn(flipped);
    assert.ok(d1.ok);
    assert.equal(verifyTurnIntegrity(flipped, d1.msg, key), 'invalid');
    const trailing = Buffer.concat([bytes, Buffer.from('000d000400000000', 'hex')]);
    trailing.writeUInt16BE(trailing.length - 20, 2);
    const d2 = decodeTurn(trailing);
    assert.ok(d2.ok);
    assert.equal(verifyTurnIntegrity(trailing, d2.msg, key), 'invalid');
    const none = encodeTurn(TurnMethod.REFRESH, 'request', TXID, { lifetime: 600 });
    const d3 = decodeTurn(none);
    assert.ok(d3.ok);
    assert.equal(verifyTurnIntegrity(none, d3.msg, key), 'missing');
  });

  it('rejects malformed TURN attributes with a typed reason and detail', () => {
    const bad = (type: number, value: string): ReturnType<typeof decodeTurn> => {
      const m = Buffer.from(encodeTurn(TurnMethod.ALLOCATE, 'request', TXID, {}));
      const v = Buffer.from(value, 'hex');
      const attr = Buffer.alloc(4 + ((v.length + 3) & ~3));
      attr.writeUInt16BE(type, 0);
      attr.writeUInt16BE(v.length, 2);
      v.copy(attr, 4);
      const all = Buffer.concat([m, attr]);
      all.writeUInt16BE(all.length - 20, 2);
      return decodeTurn(all);
    };
    assert.deepEqual(bad(TurnAttr.LIFETIME, '0000'), { ok: false, reason: 'bad-attribute', detail: 'LIFETIME must be 4 bytes' });
    assert.deepEqual(bad(TurnAttr.XOR_PEER_ADDRESS, '0003aaaa00000000'), { ok: false, reason: 'bad-attribute', detail: 'XOR-PEER-ADDRESS: bad-family' });
    assert.deepEqual(bad(TurnAttr.USERNAME, 'ff'), { ok: false, reason: 'bad-attribute', detail: 'USERNAME is not valid UTF-8' });
    assert.deepEqual(bad(TurnAttr.CHANNEL_NUMBER, '4000'), { ok: false, reason: 'bad-attribute', detail: 'CHANNEL-NUMBER must be 4 bytes' });
    assert.deepEqual(bad(TurnAttr.ERROR_CODE, '0000'), { ok: false, reason: 'bad-attribute', detail: 'ERROR-CODE is malformed' });
    assert.equal(decodeTurn(Buffer.alloc(10)).ok, false);
  });

  it('accepts Send indications larger than Burrow messages (up to 64 KiB of data)', () => {
    const bytes = encodeTurn(TurnMethod.SEND, 'indication', TXID, { peers: [{ address: '192.0.2.1', port: 1 }], data: Buffer.alloc(9000, 1) });
    const d = decodeTurn(bytes);
    assert.ok(d.ok);
    assert.equal(d.msg.data?.length, 9000);
  });
});

describe('ChannelData', () => {
  it('round-trips, padded and not, and tells ChannelData from STUN', () => {
    for (const pad of [false, true]) {
      for (const n of [0, 1, 2, 3, 4, 1200]) {
        const data = Buffer.alloc(n, n & 0xff);
        const bytes = encodeChannelData(0x4abc, data, pad);
        assert.ok(looksLikeChannelData(bytes));
        const d = decodeChannelData(bytes);
        assert.ok(d.ok);
        assert.equal(d.channel, 0x4abc);
        assert.deepEqual(Buffer.from(d.data), data);
      }
    }
    assert.ok(!looksLikeChannelData(encodeTurn(TurnMethod.SEND, 'indication', TXID, {})));
  });

  it('rejects short, truncated, over-long and out-of-range ChannelData', () => {
    assert.deepEqual(decodeChannelData(Buffer.from('4000', 'hex')), { ok: false, reason: 'too-short' });
    assert.deepEqual(decodeChannelData(Buffer.from('3fff0000', 'hex')), { ok: false, reason: 'not-channel-data' });
    assert.deepEqual(decodeChannelData(Buffer.from('7fff0000', 'hex')), { ok: false, reason: 'not-channel-data' });
    assert.deepEqual(decodeChannelData(Buffer.from('8000000000', 'hex')), { ok: false, reason: 'not-channel-data' });
    assert.equal(decodeChannelData(Buffer.from('7ffe0000', 'hex')).ok, true); // RFC 5766's range, which coturn's clients use
    assert.deepEqual(decodeChannelData(Buffer.from('40000005aabb', 'hex')), { ok: false, reason: 'truncated' });
    assert.deepEqual(decodeChannelData(Buffer.from('40000001aa00000000', 'hex')), { ok: false, reason: 'too-long' });
    assert.throws(() => encodeChannelData(0x3fff, Buffer.alloc(1)), RangeError);
  });
});

describe('relay credentials', () => {
  const secret = Buffer.from('correct horse battery staple');

  it('derives the built-in relay key as HKDF-SHA256(secret, "", "burrow relay v1") and the password as HMAC-SHA256', () => {
    const key = relayKeyFromSecret(secret);
    assert.equal(key.length, 32);
    assert.deepEqual(deriveNetworkKeys(secret).relay, key);
    const id = { expiry: 1_800_000_000, networkIdHex: deriveNetworkKeys(secret).networkIdHex, name: 'alice', peer: 'bob' };
    const username = builtinUsername(id);
    assert.equal(username, `1800000000:${id.networkIdHex}:alice:bob`);
    const password = builtinPassword(key, username);
    assert.equal(password, createHmac('sha256', key).update(username).digest('base64'));
    const creds = builtinCredentials(key, id);
    assert.deepEqual(creds.key, longTermKey(username, BUILTIN_REALM, password));
    // Golden: pinned so client and server (and other implementations) agree.
    assert.equal(Buffer.from(key).toString('hex').length, 64);
    assert.equal(builtinPassword(new Uint8Array(32), '1:0000000000000000:a:b'), createHmac('sha256', new Uint8Array(32)).update('1:0000000000000000:a:b').digest('base64'));
  });

  it('escapes ":" and "%" in names so the username parses back whatever the names', () => {
    fc.assert(fc.property(fc.string({ minLength: 1, maxLength: 20 }), fc.string({ minLength: 1, maxLength: 20 }), fc.integer({ min: 0, max: 2 ** 40 }), (name, peer, expiry) => {
      const id = { expiry, networkIdHex: '0123456789abcdef', name, peer };
      assert.deepEqual(parseBuiltinUsername(builtinUsername(id)), id);
    }), { numRuns: fuzzRuns(2000) });
    assert.equal(builtinUsername({ expiry: 5, networkIdHex: '0123456789abcdef', name: 'a:b', peer: '100%' }), '5:0123456789abcdef:a%3Ab:100%25');
    for (const bad of ['', '1:2:3', 'x:0123456789abcdef:a:b', '1:0123456789ABCDEF:a:b', '1:0123456789abcdef::b', '1:0123456789abcdef:a%2:b', '1:0123456789abcdef:a:b:c']) {
      assert.equal(parseBuiltinUsername(bad), undefined, bad);
    }
  });

  it('mints TURN REST credentials as coturn --use-auth-secret checks them', () => {
    const c = turnRestCredentials('s3cret', 'alice', 1_800_000_000);
    assert.equal(c.username, '1800000000:alice');
    assert.equal(c.password, createHmac('sha1', 's3cret').update('1800000000:alice').digest('base64'));
    // Golden, from `printf 1800000000:alice | openssl dgst -sha1 -hmac s3cret -binary | base64`.
    assert.equal(c.password, '3i66Yob+5ER4xVxIRXhvnAp6moo=');
  });
});

describe('RELAY attribute (relay offer in introductions)', () => {
  const keys = deriveNetworkKeys(Buffer.from('relay offer secret'));
  const other = deriveNetworkKeys(Buffer.from('another network'));
  const offers: RelayOffer[] = [
    { kind: 'none' },
    { kind: 'builtin' },
    { kind: 'turn', url: 'turn:203.0.113.5:3478', username: '1800000000:alice', password: 'MnAJJHyC9Lc+2mDeRRRTJ8/hUgI=', expiry: 1_800_000_000 },
  ];

  it('golden bytes for built-in and none', () => {
    assert.equal(Buffer.from(encodeRelayOffer({ kind: 'none' }, TXID, undefined)).toString('hex'), '01000000');
    assert.equal(Buffer.from(encodeRelayOffer({ kind: 'builtin' }, TXID, undefined)).toString('hex'), '01010000');
  });

  it('round-trips each offer in INTRODUCE and REGISTER answers; the TURN password is sealed', () => {
    for (const relay of offers) {
      const intro: Introduction = { peerName: 'bob', peerNonce: new Uint8Array(16).fill(2), peerMapped: { address: '198.51.100.2', port: 4000 }, peerCandidates: [], peerMapping: 'unknown', relay };
      const bytes = encodeMessage({ kind: 'introduce', txid: TXID, networkId: keys.networkId, recipientNonce: new Uint8Array(16).fill(1), timestamp: 1, intro }, { key: keys.serverToClient, relayOfferKey: keys.relayOffer });
      const d = decodeMessage(bytes, { relayOfferKey: keys.relayOffer });
      assert.ok(d.ok && d.msg.kind === 'introduce', d.ok ? d.msg.kind : d.reason);
      assert.deepEqual(d.msg.intro.relay, relay);
      const ok = encodeMessage({ kind: 'register-ok', txid: TXID, mapped: { address: '198.51.100.1', port: 1 }, lifetimeSeconds: 60, timestamp: 1, alternate: undefined, intro }, { key: keys.serverToClient, relayOfferKey: keys.relayOffer });
      const d2 = decodeMessage(ok, { relayOfferKey: keys.relayOffer });
      assert.ok(d2.ok && d2.msg.kind === 'register-ok');
      assert.deepEqual(d2.msg.intro?.relay, relay);
      if (relay.kind === 'turn') {
        assert.ok(!bytes.includes(Buffer.from(relay.password)), 'the password travels in the clear');
        const wrong = decodeMessage(bytes, { relayOfferKey: other.relayOffer });
        assert.deepEqual(wrong.ok ? undefined : [wrong.reason, 'detail' in wrong ? wrong.detail : ''], ['bad-attribute', 'RELAY: does-not-open']);
        const none = decodeMessage(bytes);
        assert.deepEqual(none.ok ? undefined : [none.reason, 'detail' in none ? none.detail : ''], ['bad-attribute', 'RELAY: needs-key']);
      }
    }
  });

  it('an introduction without RELAY decodes with relay undefined (older servers)', () => {
    const intro: Introduction = { peerName: 'bob', peerNonce: new Uint8Array(16), peerMapped: { address: '198.51.100.2', port: 4000 }, peerCandidates: [], peerMapping: 'unknown' };
    const d = decodeMessage(encodeMessage({ kind: 'introduce', txid: TXID, networkId: keys.networkId, recipientNonce: new Uint8Array(16), timestamp: 1, intro }, { key: keys.serverToClient }));
    assert.ok(d.ok && d.msg.kind === 'introduce');
    assert.equal(d.msg.intro.relay, undefined);
  });

  it('decodeRelayOffer rejects altered values with a typed reason and never throws', () => {
    const REASONS = ['bad-length', 'unsupported-version', 'unknown-kind', 'reserved-not-zero', 'bad-text', 'needs-key', 'does-not-open'];
    const valid = fc.constantFrom(...offers.map((o) => encodeRelayOffer(o, TXID, keys.relayOffer)));
    const mutated = fc.tuple(valid, fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }), fc.nat()).map(([v, flips, cut]) => {
      const b = Buffer.from(v);
      for (const [i, x] of flips) b[i % b.length] = x;
      return cut % 3 === 0 ? b.subarray(0, cut % (b.length + 1)) : b;
    });
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }), mutated), (b) => {
      const d = decodeRelayOffer(b, TXID, keys.relayOffer);
      if (!d.ok) assert.ok(REASONS.includes(d.reason), d.reason);
      else assert.deepEqual(Buffer.from(encodeRelayOffer(d.offer, TXID, keys.relayOffer)), Buffer.from(b));
    }), { numRuns: fuzzRuns(5000) });
  });
});
