/** STUN framing: golden bytes from RFC 5769, round trips, integrity and fingerprint. */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzRuns } from '../support/fuzz.js';
import { bytesToAddress, normaliseAddress, parseHostPort } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage } from '../../src/codec/messages.js';
import { crc32, decodeStun, encodeStun, findAttribute, messageType, verifyIntegrity } from '../../src/codec/stun.js';

// RFC 5769 section 2.2, "Sample IPv4 Response" (MESSAGE-INTEGRITY is HMAC-SHA1 with the password below).
const RFC5769_IPV4_RESPONSE = Buffer.from(
  '0101003c2112a442b7e7a701bc34d686fa87dfae' +
    '8022000b7465737420766563746f7220' +
    '002000080001a147e112a643' +
    '000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7' +
    '80280004c07d4c96',
  'hex',
);
const RFC5769_PASSWORD = 'VOkJxbRl1RmTxUk/WvJxBt';

describe('STUN codec (RFC 8489)', () => {
  it('decodes the RFC 5769 IPv4 sample response and checks its FINGERPRINT', () => {
    const d = decodeMessage(RFC5769_IPV4_RESPONSE);
    assert.ok(d.ok, d.ok ? '' : d.reason);
    assert.equal(d.msg.kind, 'binding-ok');
    assert.deepEqual(d.msg.mapped, { address: '192.0.2.1', port: 32853 });
    // The vector's own HMAC-SHA1 proves the bytes above are the RFC's.
    const mi = findAttribute(d.stun, 0x0008);
    assert.ok(mi);
    const header = Buffer.from(RFC5769_IPV4_RESPONSE.subarray(0, 20));
    header.writeUInt16BE(mi.offset + 24 - 20, 2);
    const mac = createHmac('sha1', RFC5769_PASSWORD).update(header).update(RFC5769_IPV4_RESPONSE.subarray(20, mi.offset)).digest();
    assert.deepEqual(Buffer.from(mi.value), mac);
  });

  it('rejects the RFC 5769 response when one byte changes (FINGERPRINT)', () => {
    const bad = Buffer.from(RFC5769_IPV4_RESPONSE);
    bad[30] = (bad[30] ?? 0) ^ 1;
    assert.deepEqual(decodeStun(bad), { ok: false, reason: 'bad-fingerprint' });
  });

  it('builds a bare Binding request byte for byte', () => {
    const txid = Buffer.from('0102030405060708090a0b0c', 'hex');
    const bytes = encodeMessage({ kind: 'binding', txid, fingerprint: false });
    assert.equal(bytes.toString('hex'), '000100002112a442' + '0102030405060708090a0b0c');
  });

  it('encodes XOR-MAPPED-ADDRESS for IPv4 and IPv6 as RFC 8489 section 14.2 says', () => {
    const txid = Buffer.from('b7e7a701bc34d686fa87dfae', 'hex');
    const v4 = encodeMessage({ kind: 'binding-ok', txid, mapped: { address: '192.0.2.1', port: 32853 } });
    assert.equal(v4.subarray(20).toString('hex'), '002000080001a147e112a643');
    // RFC 5769 section 2.3's IPv6 address and port.
    const v6 = encodeMessage({ kind: 'binding-ok', txid, mapped: { address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 } });
    assert.equal(v6.subarray(20).toString('hex'), '002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9');
  });

  it('type field interleaves method and class bits', () => {
    assert.equal(messageType(0x001, 'request'), 0x0001);
    assert.equal(messageType(0x001, 'success'), 0x0101);
    assert.equal(messageType(0x001, 'error'), 0x0111);
    assert.equal(messageType(0x0b1, 'request'), 0x0261);
  });

  it('MESSAGE-INTEGRITY-SHA256 verifies with the right key only, and FINGERPRINT may follow it', () => {
    const key = Buffer.alloc(32, 7);
    const txid = Buffer.alloc(12, 1);
    const msg = encodeStun(0x0b3, 'request', txid, [{ type: 0x4b06, value: Buffer.alloc(8, 2) }], { integrityKey: key, fingerprint: true });
    const d = decodeStun(msg);
    assert.ok(d.ok);
    assert.equal(verifyIntegrity(msg, d.msg, key), 'valid');
    assert.equal(verifyIntegrity(msg, d.msg, Buffer.alloc(32, 8)), 'invalid');
    const plain = encodeStun(0x0b3, 'request', txid, []);
    const dp = decodeStun(plain);
    assert.ok(dp.ok);
    assert.equal(verifyIntegrity(plain, dp.msg, key), 'missing');
  });

  it('CRC-32 matches the standard check value', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  });

  it('rejects framing errors with a typed reason', () => {
    const ok = encodeMessage({ kind: 'binding', txid: Buffer.alloc(12), fingerprint: false });
    assert.deepEqual(decodeStun(new Uint8Array(0)), { ok: false, reason: 'too-short' });
    assert.deepEqual(decodeStun(Buffer.alloc(19)), { ok: false, reason: 'too-short' });
    assert.deepEqual(decodeStun(Buffer.alloc(1201)), { ok: false, reason: 'too-long' });
    assert.deepEqual(decodeStun(Buffer.alloc(20)), { ok: false, reason: 'not-stun' });
    const longer = Buffer.concat([ok, Buffer.alloc(4)]);
    assert.deepEqual(decodeStun(longer), { ok: false, reason: 'bad-length' });
    const truncated = Buffer.from(ok);
    truncated.writeUInt16BE(8, 2);
    assert.deepEqual(decodeStun(Buffer.concat([truncated, Buffer.from([0x80, 0x22, 0x00, 0x10, 0, 0, 0, 0])])), { ok: false, reason: 'truncated-attribute' });
  });
});

describe('addresses', () => {
  it('normalises IPv6 text to RFC 5952 and unwraps IPv4-mapped addresses', () => {
    assert.equal(normaliseAddress('2001:0db8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
    assert.equal(normaliseAddress('2001:db8:0:1:0:0:0:1'), '2001:db8:0:1::1');
    assert.equal(normaliseAddress('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(normaliseAddress('::'), '::');
    assert.equal(normaliseAddress('1.2.3'), undefined);
    assert.equal(normaliseAddress('1:2:3:4:5:6:7:8:9'), undefined);
    assert.equal(normaliseAddress('256.1.1.1'), undefined);
  });

  it('parses HOST:PORT forms', () => {
    assert.deepEqual(parseHostPort('192.0.2.1:3478'), { ok: true, host: '192.0.2.1', port: 3478 });
    assert.deepEqual(parseHostPort('[2001:db8::1]:9'), { ok: true, host: '2001:db8::1', port: 9 });
    assert.deepEqual(parseHostPort(':5000'), { ok: true, host: '', port: 5000 });
    assert.deepEqual(parseHostPort('5000'), { ok: true, host: '', port: 5000 });
    assert.deepEqual(parseHostPort('example.org', 3478), { ok: true, host: 'example.org', port: 3478 });
    assert.equal(parseHostPort('host:99999').ok, false);
    assert.equal(parseHostPort('host:x').ok, false);
  });

  it('formats and parses any 16 bytes back to the same address (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        const text = bytesToAddress(bytes);
        const again = normaliseAddress(text);
        const isMapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
        assert.equal(again, isMapped ? bytesToAddress(bytes.subarray(12)) : text);
      }),
      { numRuns: fuzzRuns(2000) },
    );
  });
});
