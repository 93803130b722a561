/**
 * Every parser of untrusted bytes, fuzzed two ways (issue 5): arbitrary bytes, and mutations of valid messages (byte
 * flips, truncations, insertions, splices of two messages). Each must never throw and must return a typed reason from
 * its documented set. Run counts scale with BURROW_FUZZ_SCALE (`npm run fuzz` runs them 50× longer).
 *
 * | parser                                   | where                      | input                          |
 * |------------------------------------------|----------------------------|--------------------------------|
 * | decodeStun, looksLikeStun                | src/codec/stun.ts          | a datagram                     |
 * | splitStunStream                          | src/codec/stun.ts          | a TCP byte stream              |
 * | decodeXorAddress, decodePlainAddress     | src/codec/stun.ts          | an attribute value             |
 * | decodeErrorCode                          | src/codec/stun.ts          | an attribute value             |
 * | verifyIntegrity                          | src/codec/stun.ts          | a decoded message and its bytes|
 * | decodeMessage                            | src/codec/messages.ts      | a datagram (also in messages.test.ts) |
 * | decodeCandidate                          | src/codec/messages.ts      | a CANDIDATE attribute value    |
 * | decodeRelayOffer                         | src/codec/messages.ts      | a RELAY value (in turn.test.ts)|
 * | decodeTurn, verifyTurnIntegrity          | src/codec/turn.ts          | a datagram                     |
 * | decodeChannelData                        | src/codec/turn.ts          | a datagram                     |
 * | parseBuiltinUsername                     | src/codec/turn.ts          | a USERNAME value               |
 * | bytesToAddress, normaliseAddress, parseHostPort | src/codec/address.ts | bytes / text              |
 * | decodeHello, readU64                     | src/codec/secure.ts        | a TCP byte stream              |
 * | RecordOpener.take, SecureSession.receive | src/core/secure-records.ts, src/core/secure-session.ts | stream records |
 * | decodeFrame                              | src/transfer/codec.ts      | decrypted transfer frames      |
 * | TstunCore.handleData                     | src/server/tstun.ts        | T-STUN key bytes (TCP)         |
 * | PcapReader / parseFrame                  | test/support/pcap.ts       | captures (test tooling)        |
 */
import assert from 'node:assert/strict';
import { createPublicKey, diffieHellman, generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { bytesToAddress, normaliseAddress, parseHostPort } from '../../src/codec/address.js';
import { decodeCandidate, decodeMessage, encodeCandidate, MAX_PRIORITY } from '../../src/codec/messages.js';
import { Cipher, decodeHello, encodeHello, readU64, RecordType } from '../../src/codec/secure.js';
import { RecordOpener, RecordSealer } from '../../src/core/secure-records.js';
import { decodeErrorCode, decodePlainAddress, decodeStun, decodeXorAddress, looksLikeStun, splitStunStream, verifyIntegrity } from '../../src/codec/stun.js';
import { SecureSession } from '../../src/core/secure-session.js';
import { decodeChannelData, decodeTurn, encodeChannelData, encodeTurn, longTermKey, parseBuiltinUsername, TurnMethod, verifyTurnIntegrity } from '../../src/codec/turn.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { TstunCore, TSTUN_KEY_BYTES } from '../../src/server/tstun.js';
import { decodeFrame, encodeFrame, type Frame } from '../../src/transfer/codec.js';
import { fuzzRuns } from '../support/fuzz.js';
import { parseFrame, PcapReader } from '../support/pcap.js';
import { everyMessageType } from '../support/shapes.js';

const KEYS = deriveNetworkKeys(Buffer.from('fuzz secret'));
const STUN_REASONS = ['too-short', 'too-long', 'not-stun', 'bad-length', 'truncated-attribute', 'attribute-after-fingerprint', 'bad-fingerprint'];
const MESSAGE_REASONS = [...STUN_REASONS, 'unknown-method', 'missing-attribute', 'bad-attribute'];
const HELLO_REASONS = ['need-more', 'bad-magic', 'bad-field', 'bad-name', 'bad-mac', 'version-1'];
const FRAME_REASONS = ['need-more', 'unknown-type', 'frame-too-large', 'bad-length', 'bad-magic', 'unsupported-version', 'too-many-entries', 'bad-index', 'truncated-entry', 'trailing-bytes', 'bad-kind', 'size-too-large', 'bad-mode', 'duplicate-path', 'parent-missing', 'bad-utf8', 'bad-fail-reason', 'bad-offer', 'bad-name'];

/** Mutations of a valid message: flips, a cut, an insertion, a splice with another valid message. */
function mutated(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.tuple(valid, valid, fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 6 }), fc.nat(), fc.uint8Array({ maxLength: 16 }), fc.nat(3)).map(([a, b, flips, at, insert, how]) => {
    const bytes = Buffer.from(a);
    for (const [i, v] of flips) if (bytes.length > 0) bytes[i % bytes.length] = v;
    const cut = bytes.length === 0 ? 0 : at % (bytes.length + 1);
    switch (how) {
      case 0: return bytes;
      case 1: return bytes.subarray(0, cut);
      case 2: return Buffer.concat([bytes.subarray(0, cut), insert, bytes.subarray(cut)]);
      default: return Buffer.concat([bytes.subarray(0, cut), Buffer.from(b).subarray(cut % (b.length + 1))]);
    }
  });
}

/** Both kinds of fuzz input for a parser. */
function inputs(valid: fc.Arbitrary<Uint8Array>, maxLength = 1400): fc.Arbitrary<Uint8Array> {
  return fc.oneof(fc.uint8Array({ maxLength }), mutated(valid));
}

const stunMessages = everyMessageType(KEYS, 1_700_000_000_000).map((m) => m.bytes);
const validStun = fc.constantFrom(...stunMessages);

function frames(): Uint8Array[] {
  const list: Frame[] = [
    { type: 'manifest', entries: [{ kind: 'file', path: 'a.txt', size: 5, mode: 0o644 }, { kind: 'directory', path: 'd', size: 0, mode: 0o755 }, { kind: 'file', path: 'd/photo.jpg', size: 2 ** 40, mode: 0o600 }, { kind: 'stream', path: 'stdin', size: 0, mode: 0o644 }], checkKey: new Uint8Array(32).fill(5) },
    { type: 'file-start', index: 2, offset: 4096 },
    { type: 'data', length: 1000 },
    { type: 'file-end', index: 1, size: 9, check: new Uint8Array(16).fill(7) },
    { type: 'accept', offers: [] },
    { type: 'accept', offers: [{ index: 2, offset: 4096, sha256: new Uint8Array(32).fill(3) }] },
    { type: 'done' },
    { type: 'file-ok', index: 0 },
    { type: 'fail', reason: 'hash-mismatch', index: 1, detail: 'digest differs' },
    { type: 'fail', reason: 'exists', index: undefined, detail: '' },
  ];
  return list.map((f) => encodeFrame(f));
}

function party(name: string, peer: string): SecureSession {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const der = publicKey.export({ format: 'der', type: 'spki' });
  return new SecureSession({
    name, peer, authKey: KEYS.streamAuth, context: Buffer.from('fuzz'), nonce: Buffer.alloc(32, name.length),
    publicKey: der.subarray(der.length - 32),
    agree: (p) => diffieHellman({ privateKey, publicKey: createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), p]), format: 'der', type: 'spki' }) }),
  });
}

describe('parsers under fuzzing: arbitrary bytes and mutated valid messages', () => {
  it('decodeStun and looksLikeStun never throw and give a typed reason', () => {
    fc.assert(fc.property(inputs(validStun), (b) => {
      const d = decodeStun(b);
      if (!d.ok) assert.ok(STUN_REASONS.includes(d.reason), d.reason);
      else assert.ok(looksLikeStun(b));
    }), { numRuns: fuzzRuns(20_000) });
  });

  it('decodeMessage never throws and gives a typed reason (mutations of every message type)', () => {
    fc.assert(fc.property(inputs(validStun), (b) => {
      const d = decodeMessage(b);
      if (!d.ok) assert.ok(MESSAGE_REASONS.includes(d.reason), d.reason);
    }), { numRuns: fuzzRuns(20_000) });
  });

  it('verifyIntegrity on any decodable message never throws and says valid only for the untouched original', () => {
    fc.assert(fc.property(inputs(validStun), (b) => {
      const d = decodeStun(b);
      if (!d.ok) return;
      for (const key of [KEYS.clientToServer, KEYS.serverToClient]) {
        const r = verifyIntegrity(b, d.msg, key);
        assert.ok(['valid', 'invalid', 'missing'].includes(r), r);
        if (r === 'valid') assert.ok(stunMessages.some((m) => m.equals(Buffer.from(b))), 'a mutated message verified');
      }
    }), { numRuns: fuzzRuns(10_000) });
  });

  it('decodeTurn and verifyTurnIntegrity never throw, give a typed reason, and verify only untouched messages', () => {
    const TURN_REASONS = [...STUN_REASONS, 'bad-attribute'];
    const key = longTermKey('1:0123456789abcdef:a:b', 'burrow', 'pw');
    const txid = new Uint8Array(12).fill(9);
    const peer = { address: '198.51.100.4', port: 5000 };
    const turnMessages = [
      encodeTurn(TurnMethod.ALLOCATE, 'request', txid, { username: '1:0123456789abcdef:a:b', realm: 'burrow', nonce: 'abcdefgh12345678', requestedTransport: 17, lifetime: 600 }, { key, fingerprint: true }),
      encodeTurn(TurnMethod.ALLOCATE, 'success', txid, { relayed: peer, mapped: { address: '2001:db8::1', port: 7 }, lifetime: 600 }, { key }),
      encodeTurn(TurnMethod.ALLOCATE, 'error', txid, { error: { code: 401, reason: 'Unauthorized' }, realm: 'burrow', nonce: 'n' }),
      encodeTurn(TurnMethod.CREATE_PERMISSION, 'request', txid, { peers: [peer, peer] }, { key }),
      encodeTurn(TurnMethod.CHANNEL_BIND, 'request', txid, { channel: 0x4001, peers: [peer] }, { key }),
      encodeTurn(TurnMethod.SEND, 'indication', txid, { peers: [peer], data: Buffer.alloc(100, 1) }),
      encodeTurn(TurnMethod.DATA, 'indication', txid, { peers: [peer], data: Buffer.alloc(3, 1) }),
    ];
    fc.assert(fc.property(inputs(fc.constantFrom(...turnMessages, ...stunMessages)), (b) => {
      const d = decodeTurn(b);
      if (!d.ok) {
        assert.ok(TURN_REASONS.includes(d.reason), d.reason);
        return;
      }
      const r = verifyTurnIntegrity(b, d.msg, key);
      assert.ok(['valid', 'invalid', 'missing'].includes(r), r);
      if (r === 'valid') assert.ok(turnMessages.some((m) => m.equals(Buffer.from(b))), 'a mutated TURN message verified');
    }), { numRuns: fuzzRuns(20_000) });
  });

  it('decodeChannelData never throws, gives a typed reason, and returns data inside the datagram', () => {
    const valid = fc.constantFrom(encodeChannelData(0x4000, Buffer.alloc(0)), encodeChannelData(0x4fff, Buffer.alloc(5, 1), true), encodeChannelData(0x4123, Buffer.alloc(1000, 2)));
    fc.assert(fc.property(inputs(valid), (b) => {
      const d = decodeChannelData(b);
      if (!d.ok) assert.ok(['too-short', 'not-channel-data', 'truncated', 'too-long'].includes(d.reason), d.reason);
      else assert.ok(d.data.length <= b.length - 4 && d.channel >= 0x4000 && d.channel <= 0x7ffe);
    }), { numRuns: fuzzRuns(20_000) });
  });

  it('parseBuiltinUsername never throws', () => {
    fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 80 }), fc.constantFrom('1:0123456789abcdef:a%3A:b%25', '99:0123456789abcdef:x:y')), (s) => {
      const id = parseBuiltinUsername(s);
      if (id) assert.ok(Number.isSafeInteger(id.expiry) && id.name.length > 0 && id.peer.length > 0);
    }), { numRuns: fuzzRuns(10_000) });
  });

  it('splitStunStream never throws, returns whole messages or a typed error, and loses no byte', () => {
    const stream = fc.array(validStun, { maxLength: 5 }).map((ms) => Buffer.concat(ms));
    fc.assert(fc.property(inputs(stream, 4000), (b) => {
      const r = splitStunStream(b);
      if ('error' in r) assert.ok(['not-stun', 'too-long'].includes(r.error), r.error);
      else assert.equal(r.messages.reduce((s, m) => s + m.length, 0) + r.rest.length, b.length);
    }), { numRuns: fuzzRuns(10_000) });
  });

  it('attribute value decoders (XOR and plain addresses, ERROR-CODE) never throw', () => {
    const txid = new Uint8Array(12).fill(3);
    const values = fc.constantFrom(Buffer.from('0001a1472112a443', 'hex'), Buffer.from('00020d21' + '20010db8'.padEnd(32, '0'), 'hex'), Buffer.from('00000194556e617574686f726973656400', 'hex'));
    fc.assert(fc.property(inputs(values, 64), (b) => {
      decodeXorAddress(b, txid);
      decodePlainAddress(b);
      const e = decodeErrorCode(b);
      if (e) assert.ok(e.code >= 0 && e.code < 1000);
    }), { numRuns: fuzzRuns(20_000) });
  });

  it('decodeCandidate never throws, gives a typed reason, and accepts only what it can re-encode', () => {
    const txid = new Uint8Array(12).fill(5);
    const CANDIDATE_REASONS = ['bad-length', 'unsupported-version', 'unknown-kind', 'reserved-not-zero', 'bad-priority', 'bad-address-length', 'bad-family'];
    const values = fc.constantFrom(
      encodeCandidate({ kind: 'host', priority: 2130706431, endpoint: { address: '192.0.2.10', port: 5000 } }, txid),
      encodeCandidate({ kind: 'relayed', priority: 255, endpoint: { address: '2001:db8::9', port: 49152 } }, txid),
      encodeCandidate({ kind: 'predicted', priority: MAX_PRIORITY, endpoint: { address: '198.51.100.2', port: 1024 } }, txid),
    );
    fc.assert(fc.property(inputs(values, 64), (b) => {
      const d = decodeCandidate(b, txid);
      if (!d.ok) assert.ok(CANDIDATE_REASONS.includes(d.reason), d.reason);
      else assert.deepEqual(Buffer.from(encodeCandidate(d.candidate, txid)), Buffer.from(b));
    }), { numRuns: fuzzRuns(20_000) });
  });

  it('address parsers (bytesToAddress, normaliseAddress, parseHostPort) never throw', () => {
    const text = fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom('192.0.2.1:3478', '[2001:db8::1]:9', '::ffff:192.0.2.7', 'example.org:65535', ':5000'));
    fc.assert(fc.property(fc.uint8Array({ maxLength: 20 }), text, (b, s) => {
      bytesToAddress(b);
      const n = normaliseAddress(s);
      if (n !== undefined) assert.equal(typeof n, 'string');
      const p = parseHostPort(s, 3478);
      if (p.ok) assert.ok(p.port >= 0 && p.port <= 65535);
      else assert.equal(typeof p.reason, 'string');
    }), { numRuns: fuzzRuns(20_000) });
  });

  it('decodeHello and readU64 never throw and give a typed reason', () => {
    const ctx = Buffer.from('ctx');
    const valid = fc.constant(encodeHello({ name: 'alice', peer: 'bob', versions: { min: 2, max: 2 }, ciphers: [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305], nonce: new Uint8Array(32).fill(1), publicKey: new Uint8Array(32).fill(2) }, KEYS.streamAuth, ctx));
    fc.assert(fc.property(inputs(valid, 300), (b) => {
      const d = decodeHello(b, KEYS.streamAuth, ctx);
      if (!d.ok) assert.ok(HELLO_REASONS.includes(d.reason), d.reason);
      const v = readU64(b.subarray(0, 8));
      if (v !== undefined) assert.ok(Number.isSafeInteger(v));
    }), { numRuns: fuzzRuns(10_000) });
  });

  it('RecordOpener refuses every altered record without throwing, whatever the cipher and however the bytes are split', () => {
    const key = new Uint8Array(32).fill(4);
    const prefix = new Uint8Array(4).fill(5);
    for (const cipher of [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305]) {
      const record = new RecordSealer(cipher, key, prefix, (k) => k).sealOne(RecordType.DATA, Buffer.from('hello, record'));
      fc.assert(fc.property(mutated(fc.constant(record)), fc.integer({ min: 1, max: 64 }), (b, step) => {
        const opener = new RecordOpener(cipher, key, prefix, (k) => k);
        const events = [];
        for (let at = 0; at < b.length; at += step) {
          const piece = b.subarray(at, Math.min(b.length, at + step));
          for (let used = 0; used < piece.length;) {
            const r = opener.take(piece, used);
            if (r.event) events.push(r.event);
            if (r.used === 0) break;
            used += r.used;
          }
        }
        for (const e of events) {
          assert.ok(['record', 'bad-length', 'bad-tag'].includes(e.kind));
          if (e.kind === 'record') assert.ok(record.equals(Buffer.from(b.subarray(0, record.length))), 'an altered record opened');
        }
      }), { numRuns: fuzzRuns(2_500) });
    }
  });

  it('SecureSession.receive never throws on any byte stream, before or after the handshake', () => {
    const a = party('alice', 'bob');
    const b = party('bob', 'alice');
    const helloA = Buffer.concat(a.start().flatMap((o) => (o.type === 'send' ? [o.data] : [])));
    const valid = fc.constant(helloA);
    fc.assert(fc.property(inputs(valid, 400), fc.boolean(), (bytes, fresh) => {
      const s = fresh ? party('bob', 'alice') : b;
      if (fresh) s.start();
      for (const o of s.receive(bytes)) assert.ok(['send', 'established', 'data', 'peer-eof', 'delivered', 'error'].includes(o.type));
    }), { numRuns: fuzzRuns(500) });
  });

  it('decodeFrame (transfer) never throws and gives a typed reason', () => {
    const valid = fc.constantFrom(...frames());
    fc.assert(fc.property(inputs(valid, 600), (b) => {
      const d = decodeFrame(b);
      if (!d.ok) assert.ok(FRAME_REASONS.includes(d.reason), d.reason);
      else assert.ok(d.used <= b.length);
    }), { numRuns: fuzzRuns(20_000) });
  });

  it('the T-STUN core takes any key bytes without throwing and keeps its limits', () => {
    const key = fc.uint8Array({ minLength: TSTUN_KEY_BYTES, maxLength: TSTUN_KEY_BYTES });
    fc.assert(fc.property(fc.array(inputs(key, 80), { maxLength: 6 }), (chunks) => {
      const core = new TstunCore({ seed: 1 });
      let now = 0;
      core.handleConnected(1, { address: '198.51.100.9', port: 4000 }, now);
      for (const c of chunks) {
        now += 10;
        for (const a of core.handleData(1, c, now)) assert.ok(['write', 'close', 'destroy', 'event'].includes(a.type));
      }
      core.handleClosed(1);
    }), { numRuns: fuzzRuns(5_000) });
  });

  it('the pcap reader (test tooling) never throws on a frame, and rejects a bad stream with an Error', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), fc.constantFrom(1, 101, 113, 276, 0), (b, linktype) => {
      parseFrame(b, linktype);
      try {
        new PcapReader().push(b);
      } catch (e) {
        assert.ok(e instanceof Error);
      }
    }), { numRuns: fuzzRuns(10_000) });
  });
});
