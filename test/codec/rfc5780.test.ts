/**
 * RFC 5780 attributes (src/codec/rfc5780.ts): golden bytes, round trips, and fuzzing of the readers (never throw,
 * only typed reasons). Also NAT-MAPPING's allocation byte (src/codec/messages.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeMessage, encodeMessage, type RegisterRequest } from '../../src/codec/messages.js';
import {
  decodeChangeRequest,
  decodeResponsePort,
  encodeChangeRequest,
  encodeResponsePort,
  encodeTestRequest,
  readRfc5780Answer,
  readRfc5780Request,
  rfc5780AnswerLength,
} from '../../src/codec/rfc5780.js';
import { Attr, decodeStun, encodePlainAddress, encodeStun, encodeXorAddress } from '../../src/codec/stun.js';
import { fuzzRuns } from '../support/fuzz.js';

const TXID = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const REASONS = ['bad-change-request-length', 'bad-response-port-length', 'bad-response-origin', 'bad-other-address', 'bad-mapped-address', 'no-mapped-address'];

describe('RFC 5780 attributes: golden bytes', () => {
  it('CHANGE-REQUEST: flags A (change IP, 0x04) and B (change port, 0x02) in the last byte', () => {
    assert.equal(hex(encodeChangeRequest({ ip: true, port: true })), '00000006');
    assert.equal(hex(encodeChangeRequest({ ip: true, port: false })), '00000004');
    assert.equal(hex(encodeChangeRequest({ ip: false, port: true })), '00000002');
    assert.equal(hex(encodeChangeRequest({ ip: false, port: false })), '00000000');
  });

  it('RESPONSE-PORT: the port, then two reserved bytes', () => {
    assert.equal(hex(encodeResponsePort(40000)), '9c400000');
    assert.equal(hex(encodeResponsePort(0)), '00000000');
  });

  it('a change-IP-and-port request is 28 bytes, like coturn\'s', () => {
    const req = encodeTestRequest(TXID, { change: { ip: true, port: true } });
    assert.equal(hex(req), '000100082112a4420102030405060708090a0b0c0003000400000006');
    assert.equal(req.length, 28);
  });

  it('a change-port request with RESPONSE-PORT', () => {
    assert.equal(hex(encodeTestRequest(TXID, { change: { ip: false, port: true }, responsePort: 40000 })), '000100102112a4420102030405060708090a0b0c0003000400000002002700049c400000');
  });

  it('padded requests are as long as the answer they ask for (SOFTWARE of spaces)', () => {
    for (const family of [4, 6] as const) {
      const req = encodeTestRequest(TXID, { change: { ip: true, port: false }, padTo: rfc5780AnswerLength(family) });
      assert.equal(req.length, rfc5780AnswerLength(family));
      const d = decodeStun(req);
      assert.ok(d.ok);
      assert.equal(d.msg.attributes.find((a) => a.type === Attr.SOFTWARE)?.value.every((b) => b === 0x20), true);
    }
    assert.equal(rfc5780AnswerLength(4), 56);
    assert.equal(rfc5780AnswerLength(6), 92);
  });

  it('an RFC 5780 answer: XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS (56 bytes for IPv4)', () => {
    const answer = encodeStun(1, 'success', TXID, [
      { type: Attr.XOR_MAPPED_ADDRESS, value: encodeXorAddress({ address: '192.0.2.1', port: 32853 }, TXID) },
      { type: Attr.RESPONSE_ORIGIN, value: encodePlainAddress({ address: '203.0.113.2', port: 3479 }) },
      { type: Attr.OTHER_ADDRESS, value: encodePlainAddress({ address: '203.0.113.2', port: 3479 }) },
    ]);
    assert.equal(hex(answer), '010100242112a4420102030405060708090a0b0c002000080001a147e112a643802b000800010d97cb007102802c000800010d97cb007102');
    const d = decodeStun(answer);
    assert.ok(d.ok);
    const r = readRfc5780Answer(d.msg);
    assert.deepEqual(r, { ok: true, answer: { mapped: { address: '192.0.2.1', port: 32853 }, origin: { address: '203.0.113.2', port: 3479 }, other: { address: '203.0.113.2', port: 3479 } } });
  });

  it('NAT-MAPPING carries the port allocation in byte 1; old values (byte 1 zero) read as unknown', () => {
    const reg: RegisterRequest = { kind: 'register', txid: TXID, networkId: new Uint8Array(8), name: 'a', target: 'b', sessionNonce: new Uint8Array(16), timestamp: 1, candidates: [], mapping: 'endpoint-dependent', allocation: 'random' };
    const bytes = encodeMessage(reg);
    assert.ok(hex(bytes).endsWith('4b08000402030000'));
    const d = decodeMessage(bytes);
    assert.ok(d.ok && d.msg.kind === 'register');
    assert.equal(d.msg.allocation, 'random');
    const old = encodeMessage({ kind: 'register', txid: TXID, networkId: new Uint8Array(8), name: 'a', target: 'b', sessionNonce: new Uint8Array(16), timestamp: 1, candidates: [], mapping: 'endpoint-dependent' });
    assert.ok(hex(old).endsWith('4b08000402000000'));
    const d2 = decodeMessage(old);
    assert.ok(d2.ok && d2.msg.kind === 'register');
    assert.equal(d2.msg.allocation, undefined);
  });
});

describe('RFC 5780 attributes: readers', () => {
  it('round-trip the request attributes', () => {
    for (const change of [{ ip: true, port: true }, { ip: false, port: true }, { ip: true, port: false }, { ip: false, port: false }]) {
      for (const responsePort of [undefined, 0, 1, 65535]) {
        const d = decodeStun(encodeTestRequest(TXID, { change, ...(responsePort !== undefined ? { responsePort } : {}) }));
        assert.ok(d.ok);
        assert.deepEqual(readRfc5780Request(d.msg), { ok: true, request: { asked: true, change, responsePort } });
      }
    }
  });

  it('a bare Binding asks for nothing', () => {
    const d = decodeStun(encodeStun(1, 'request', TXID, []));
    assert.ok(d.ok);
    assert.deepEqual(readRfc5780Request(d.msg), { ok: true, request: { asked: false, change: { ip: false, port: false }, responsePort: undefined } });
  });

  it('reserved CHANGE-REQUEST bits are ignored; wrong lengths are typed reasons', () => {
    assert.deepEqual(decodeChangeRequest(Uint8Array.from([0xff, 0xff, 0xff, 0xf9])), { ok: true, change: { ip: false, port: false } });
    assert.deepEqual(decodeChangeRequest(new Uint8Array(8)), { ok: false, reason: 'bad-change-request-length' });
    assert.deepEqual(decodeResponsePort(new Uint8Array(2)), { ok: false, reason: 'bad-response-port-length' });
    const bad = decodeStun(encodeStun(1, 'success', TXID, [{ type: Attr.XOR_MAPPED_ADDRESS, value: encodeXorAddress({ address: '192.0.2.1', port: 1 }, TXID) }, { type: Attr.OTHER_ADDRESS, value: new Uint8Array(5) }]));
    assert.ok(bad.ok);
    assert.deepEqual(readRfc5780Answer(bad.msg), { ok: false, reason: 'bad-other-address' });
    const none = decodeStun(encodeStun(1, 'success', TXID, []));
    assert.ok(none.ok);
    assert.deepEqual(readRfc5780Answer(none.msg), { ok: false, reason: 'no-mapped-address' });
  });

  it('an RFC 3489 answer (MAPPED-ADDRESS only) still gives the mapping', () => {
    const d = decodeStun(encodeStun(1, 'success', TXID, [{ type: Attr.MAPPED_ADDRESS, value: encodePlainAddress({ address: '2001:db8::1', port: 9 }) }]));
    assert.ok(d.ok);
    assert.deepEqual(readRfc5780Answer(d.msg), { ok: true, answer: { mapped: { address: '2001:db8::1', port: 9 }, origin: undefined, other: undefined } });
  });

  it('fuzz: attribute values of any bytes never throw and give ok or a typed reason', () => {
    const types = [Attr.CHANGE_REQUEST, Attr.RESPONSE_PORT, Attr.XOR_MAPPED_ADDRESS, Attr.MAPPED_ADDRESS, Attr.RESPONSE_ORIGIN, Attr.OTHER_ADDRESS, Attr.PADDING];
    fc.assert(
      fc.property(fc.array(fc.record({ type: fc.constantFrom(...types), value: fc.uint8Array({ maxLength: 28 }) }), { maxLength: 6 }), fc.boolean(), (attrs, success) => {
        const d = decodeStun(encodeStun(1, success ? 'success' : 'request', TXID, attrs));
        assert.ok(d.ok);
        for (const r of [readRfc5780Request(d.msg), readRfc5780Answer(d.msg)]) {
          if (!r.ok) assert.ok(REASONS.includes(r.reason), r.reason);
        }
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });

  it('fuzz: mutated valid requests and answers never throw', () => {
    const seeds = [
      encodeTestRequest(TXID, { change: { ip: true, port: true }, responsePort: 5 }),
      encodeStun(1, 'success', TXID, [
        { type: Attr.XOR_MAPPED_ADDRESS, value: encodeXorAddress({ address: '2001:db8::2', port: 7 }, TXID) },
        { type: Attr.RESPONSE_ORIGIN, value: encodePlainAddress({ address: '2001:db8::3', port: 3478 }) },
        { type: Attr.OTHER_ADDRESS, value: encodePlainAddress({ address: '2001:db8::4', port: 3479 }) },
      ]),
    ];
    fc.assert(
      fc.property(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), (seed, flips) => {
        const buf = Buffer.from(seed);
        for (const [at, byte] of flips) buf[20 + (at % (buf.length - 20))] = byte;
        const d = decodeStun(buf);
        if (!d.ok) return;
        for (const r of [readRfc5780Request(d.msg), readRfc5780Answer(d.msg)]) {
          if (!r.ok) assert.ok(REASONS.includes(r.reason), r.reason);
        }
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });
});
