/**
 * The stream's record layer (protocol version 2) and its codec: golden bytes, an independent check of the
 * AES-GCM records against WebCrypto, round trips over every way the transport may split the bytes,
 * tampering at every position class, rekeying, and the HELLO's version and cipher negotiation.
 */
import assert from 'node:assert/strict';
import { createHmac, webcrypto } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  Cipher,
  decodeHello,
  decodeRecordHeader,
  encodeHello,
  encodeRecordHeader,
  MAX_RECORD_LENGTH,
  MAX_RECORD_PAYLOAD,
  negotiate,
  RecordType,
  REKEY_INTERVAL,
  type CipherId,
} from '../../src/codec/secure.js';
import { RecordOpener, RecordSealer, type OpenEvent } from '../../src/core/secure-records.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { fuzzRuns } from '../support/fuzz.js';

const KEYS = deriveNetworkKeys(Buffer.from('stream test secret'));
const CONTEXT = Buffer.from('rendezvous context');
const KEY = Buffer.alloc(32, 0x42);
const PREFIX = Buffer.from('0a0b0c0d', 'hex');
const CIPHERS: readonly CipherId[] = [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305];
const same = (k: Uint8Array): Uint8Array => k;

function pair(cipher: CipherId, rekey: (k: Uint8Array) => Uint8Array = same): { sealer: RecordSealer; opener: RecordOpener } {
  return { sealer: new RecordSealer(cipher, KEY, PREFIX, rekey), opener: new RecordOpener(cipher, KEY, PREFIX, rekey) };
}

/** Feeds `wire` to `opener` in pieces of the given sizes (cycled), collecting every event. */
function openAll(opener: RecordOpener, wire: Buffer, sizes: readonly number[] = [wire.length]): OpenEvent[] {
  const events: OpenEvent[] = [];
  let at = 0;
  let k = 0;
  while (at < wire.length) {
    const size = Math.max(1, sizes[k++ % sizes.length] ?? 1);
    const piece = wire.subarray(at, Math.min(wire.length, at + size));
    at += piece.length;
    for (let used = 0; used < piece.length;) {
      const r = opener.take(piece, used);
      if (r.event) events.push(r.event);
      if (r.used === 0) return events; // failed: takes nothing more
      used += r.used;
    }
  }
  return events;
}

const payloadOf = (events: OpenEvent[]): Buffer =>
  Buffer.concat(events.flatMap((e) => (e.kind === 'record' && e.type === RecordType.DATA ? [...e.payload] : [])));

function sealAll(sealer: RecordSealer, type: number, parts: readonly Uint8Array[]): Buffer {
  const out: Buffer[] = [];
  sealer.seal(type as 2, parts, out);
  return Buffer.concat(out);
}

describe('stream records (v2): golden bytes', () => {
  it('a HELLO has the documented layout, byte for byte', () => {
    const hello = encodeHello(
      { name: 'alice', peer: 'bob', versions: { min: 2, max: 2 }, ciphers: [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305], nonce: Buffer.alloc(32, 0x11), publicKey: Buffer.alloc(32, 0x22) },
      KEYS.streamAuth,
      CONTEXT,
    );
    const expected =
      '42525731' + '02' + '02' + '02' + '02' + '0102' + '05' + '616c696365' + '03' + '626f62' + '11'.repeat(32) + '22'.repeat(32) +
      'e74cb5a7ada8444bc732c3d9f29040298812f6bc7dfbf32c2210f9f7c994334b';
    assert.equal(hello.toString('hex'), expected);
    const mac = createHmac('sha256', KEYS.streamAuth).update('burrow/v2 hello').update(CONTEXT).update(hello.subarray(0, hello.length - 32)).digest();
    assert.deepEqual(hello.subarray(-32), mac);
  });

  it('records: length | sealed type and payload | tag, with sequence-number nonces (both ciphers)', () => {
    const golden: Record<CipherId, [string, string]> = {
      [Cipher.AES_256_GCM]: ['00000017196f7b1c6f269f9fd1667b6d66bf3cec7d3eb0b3d9226f', '00000019ab254a0de08e5e51f8fa7489dd6b2aaf710f349a2062294971'],
      [Cipher.CHACHA20_POLY1305]: ['00000017479010645d213826ea0dbfff5b1ed1ac4bd5ae175c2388', '0000001912dc053d91dcffb70a2614564f36739594d68c3a28ecdc43e6'],
    };
    for (const cipher of CIPHERS) {
      const sealer = new RecordSealer(cipher, KEY, PREFIX, same);
      assert.equal(sealer.sealOne(RecordType.DATA, Buffer.from('burrow')).toString('hex'), golden[cipher][0]);
      assert.equal(sealer.sealOne(RecordType.EOF, Buffer.from('0000000000000006', 'hex')).toString('hex'), golden[cipher][1]);
    }
  });

  it('an AES-256-GCM record is exactly what WebCrypto produces for the same key, nonce and associated data', async () => {
    const sealer = new RecordSealer(Cipher.AES_256_GCM, KEY, PREFIX, same);
    const payload = Buffer.alloc(200_000).map((_, i) => i * 7);
    sealer.sealOne(RecordType.DATA, Buffer.from('first')); // sequence 0
    const record = sealer.sealOne(RecordType.DATA, payload); // sequence 1
    const key = await webcrypto.subtle.importKey('raw', KEY, 'AES-GCM', false, ['encrypt']);
    const iv = Buffer.concat([PREFIX, Buffer.from('0000000000000001', 'hex')]);
    const sealed = await webcrypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: record.subarray(0, 4), tagLength: 128 }, key, Buffer.concat([Buffer.from([RecordType.DATA]), payload]));
    assert.deepEqual(record.subarray(4), Buffer.from(sealed));
    assert.equal(record.readUInt32BE(0), 1 + payload.length + 16);
  });

  it('record headers: the length counts type, payload and tag; impossible lengths are refused', () => {
    assert.equal(encodeRecordHeader(0).toString('hex'), '00000011');
    assert.equal(encodeRecordHeader(MAX_RECORD_PAYLOAD).readUInt32BE(0), MAX_RECORD_LENGTH);
    assert.throws(() => encodeRecordHeader(MAX_RECORD_PAYLOAD + 1), RangeError);
    assert.deepEqual(decodeRecordHeader(Buffer.from('000000', 'hex')), { ok: false, reason: 'need-more' });
    assert.deepEqual(decodeRecordHeader(Buffer.from('00000010', 'hex')), { ok: false, reason: 'bad-length', length: 16 });
    const tooLong = Buffer.alloc(4);
    tooLong.writeUInt32BE(MAX_RECORD_LENGTH + 1);
    assert.deepEqual(decodeRecordHeader(tooLong), { ok: false, reason: 'bad-length', length: MAX_RECORD_LENGTH + 1 });
    assert.deepEqual(decodeRecordHeader(encodeRecordHeader(5)), { ok: true, length: 22 });
  });
});

describe('stream records (v2): round trips', () => {
  it('any payloads, sealed from any chunks, open identically however the transport splits them (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...CIPHERS),
        fc.array(fc.array(fc.uint8Array({ maxLength: 3000 }), { maxLength: 5 }), { minLength: 1, maxLength: 4 }),
        fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 8 }),
        (cipher, records, splits) => {
          const { sealer, opener } = pair(cipher);
          const wire = Buffer.concat(records.map((parts) => sealAll(sealer, RecordType.DATA, parts)));
          const events = openAll(opener, wire, splits);
          assert.equal(events.length, records.length);
          assert.ok(events.every((e) => e.kind === 'record' && e.type === RecordType.DATA));
          assert.deepEqual(payloadOf(events), Buffer.concat(records.flat()));
          assert.equal(opener.midRecord, false);
          assert.equal(opener.sequence, records.length);
        },
      ),
      { numRuns: fuzzRuns(300) },
    );
  });

  it('the largest record (256 KiB) from one chunk and from many small ones; nothing is held once it verifies', () => {
    for (const cipher of CIPHERS) {
      const big = Buffer.alloc(MAX_RECORD_PAYLOAD).map((_, i) => i % 251);
      const { sealer, opener } = pair(cipher);
      const chunks = Array.from({ length: MAX_RECORD_PAYLOAD / 4096 }, (_, i) => big.subarray(i * 4096, (i + 1) * 4096));
      const wire = Buffer.concat([sealAll(sealer, RecordType.DATA, [big]), sealAll(sealer, RecordType.DATA, chunks)]);
      assert.equal(wire.length, 2 * (4 + MAX_RECORD_LENGTH));
      const events = openAll(opener, wire, [65536, 1, 1000, 300_000]);
      assert.equal(events.length, 2);
      assert.deepEqual(payloadOf(events), Buffer.concat([big, big]));
      assert.equal(opener.heldBytes, 0);
    }
  });

  it('an empty record and a one-byte record', () => {
    const { sealer, opener } = pair(Cipher.CHACHA20_POLY1305);
    const events = openAll(opener, Buffer.concat([sealAll(sealer, RecordType.DATA, []), sealer.sealOne(RecordType.DATA, Buffer.from('x'))]), [1]);
    assert.equal(events.length, 2);
    assert.deepEqual(payloadOf(events), Buffer.from('x'));
  });

  it('rekeys every interval on both sides in step, and a side that does not rekey fails right there', () => {
    // 2^18 records of up to 256 KiB: at most 64 GiB per key (docs/protocol.md §8).
    assert.equal(REKEY_INTERVAL, 2 ** 18);
    assert.ok(REKEY_INTERVAL * MAX_RECORD_PAYLOAD <= 2 ** 36);
    const interval = 1000;
    const rekey = (k: Uint8Array): Uint8Array => Buffer.from(k).map((b) => b ^ 0x5a);
    const sealer = new RecordSealer(Cipher.AES_256_GCM, KEY, PREFIX, rekey, interval);
    const opener = new RecordOpener(Cipher.AES_256_GCM, KEY, PREFIX, rekey, interval);
    const stale = new RecordOpener(Cipher.AES_256_GCM, KEY, PREFIX, same, interval);
    const one = Buffer.from([1]);
    for (let i = 0; i < interval; i++) {
      const wire = sealer.sealOne(RecordType.DATA, one);
      assert.equal(opener.take(wire).event?.kind, 'record');
      assert.equal(stale.take(wire).event?.kind, 'record');
    }
    const after = sealer.sealOne(RecordType.DATA, one);
    assert.equal(opener.take(after).event?.kind, 'record');
    assert.equal(stale.take(after).event?.kind, 'bad-tag');
  });
});

describe('stream records (v2): tampering', () => {
  /** Byte offsets in one record of `payload` bytes split over several update() slices, by class. */
  function positions(payloadBytes: number): Record<string, number[]> {
    const end = 4 + 1 + payloadBytes + 16;
    return {
      'length field': [0, 1, 2, 3],
      'sealed type byte': [4],
      'payload, first bytes': [5, 6],
      'payload, at the 64 KiB slice border': [5 + 65535, 5 + 65536],
      'payload, in the last slice': [5 + 140_000],
      'payload, last byte': [end - 17],
      tag: [end - 16, end - 8, end - 1],
    };
  }

  it('a bit flipped anywhere in a record fails it and releases none of its payload (every position class, both ciphers)', () => {
    const payload = Buffer.alloc(150_000, 0x61);
    for (const cipher of CIPHERS) {
      for (const [where, offsets] of Object.entries(positions(payload.length))) {
        for (const offset of offsets) {
          for (const bit of [0x01, 0x80]) {
            const { sealer, opener } = pair(cipher);
            const wire = Buffer.concat([sealer.sealOne(RecordType.DATA, Buffer.from('good')), sealer.sealOne(RecordType.DATA, payload)]);
            const at = 4 + 1 + 4 + 16 + offset; // behind the first record
            wire[at] = (wire[at] ?? 0) ^ bit;
            const events = openAll(opener, wire, [4096, 65536, 7]);
            const label = `${cipher} ${where} +${offset} ^${bit}`;
            assert.deepEqual(payloadOf(events), Buffer.from('good'), `${label}: released altered data`);
            const last = events.at(-1);
            if (where === 'length field') {
              // A shorter or impossible length fails at once; a longer one waits for bytes that never come.
              assert.ok(last?.kind !== 'record' || opener.midRecord, label);
            } else {
              assert.equal(last?.kind, 'bad-tag', label);
            }
          }
        }
      }
    }
  });

  it('reordered, replayed, dropped and truncated records are refused', () => {
    const { sealer } = pair(Cipher.AES_256_GCM);
    const r = [0, 1, 2].map((i) => sealer.sealOne(RecordType.DATA, Buffer.from(`record ${i}`)));
    const [r0 = Buffer.alloc(0), r1 = Buffer.alloc(0), r2 = Buffer.alloc(0)] = r;
    const open = (...records: Buffer[]): OpenEvent[] => openAll(new RecordOpener(Cipher.AES_256_GCM, KEY, PREFIX, same), Buffer.concat(records));
    assert.equal(open(r1).at(-1)?.kind, 'bad-tag');
    assert.equal(open(r0, r0).at(-1)?.kind, 'bad-tag');
    assert.equal(open(r0, r2).at(-1)?.kind, 'bad-tag');
    assert.deepEqual(open(r0, r1, r2).map((e) => e.kind), ['record', 'record', 'record']);
    const truncated = new RecordOpener(Cipher.AES_256_GCM, KEY, PREFIX, same);
    assert.deepEqual(openAll(truncated, r0.subarray(0, r0.length - 1)), []);
    assert.equal(truncated.midRecord, true);
  });

  it('a record sealed with the other cipher or the other direction’s prefix does not open', () => {
    const aes = new RecordSealer(Cipher.AES_256_GCM, KEY, PREFIX, same).sealOne(RecordType.DATA, Buffer.from('x'));
    assert.equal(new RecordOpener(Cipher.CHACHA20_POLY1305, KEY, PREFIX, same).take(aes).event?.kind, 'bad-tag');
    assert.equal(new RecordOpener(Cipher.AES_256_GCM, KEY, Buffer.from('0a0b0c0e', 'hex'), same).take(aes).event?.kind, 'bad-tag');
  });
});

describe('stream HELLO (v2): versions and ciphers', () => {
  const base = { name: 'alice', peer: 'bob', nonce: Buffer.alloc(32, 1), publicKey: Buffer.alloc(32, 2) };

  it('decodes what it encodes, keeping cipher ids it does not know', () => {
    const hello = { ...base, versions: { min: 2, max: 9 }, ciphers: [0x77, Cipher.CHACHA20_POLY1305] };
    const d = decodeHello(encodeHello(hello, KEYS.streamAuth, CONTEXT), KEYS.streamAuth, CONTEXT);
    assert.ok(d.ok);
    assert.deepEqual(d.hello.versions, { min: 2, max: 9 });
    assert.deepEqual(d.hello.ciphers, [0x77, Cipher.CHACHA20_POLY1305]);
    assert.equal(d.hello.name, 'alice');
  });

  it('negotiation: AES-256-GCM only when both prefer it; ChaCha20-Poly1305 as soon as one side does; the same answer on both sides', () => {
    const A = Cipher.AES_256_GCM;
    const C = Cipher.CHACHA20_POLY1305;
    const v = { min: 2, max: 2 };
    const cases: [number[], number[], number | 'none'][] = [
      [[A, C], [A, C], A],
      [[C, A], [C, A], C],
      [[A, C], [C, A], C],
      [[A], [A, C], A],
      [[C], [A, C], C],
      [[A], [C], 'none'],
      [[0x77, A], [0x77, C, A], A],
    ];
    for (const [x, y, want] of cases) {
      for (const [p, q] of [[x, y], [y, x]] as const) {
        const got = negotiate({ versions: v, ciphers: p }, { versions: v, ciphers: q });
        assert.deepEqual(got, want === 'none' ? { ok: false, reason: 'no-common-cipher' } : { ok: true, version: 2, cipher: want }, `${p.join(',')} vs ${q.join(',')}`);
      }
    }
  });

  it('negotiation: the highest common version; none in common is reported', () => {
    const c = [Cipher.AES_256_GCM];
    assert.deepEqual(negotiate({ versions: { min: 2, max: 2 }, ciphers: c }, { versions: { min: 2, max: 5 }, ciphers: c }), { ok: true, version: 2, cipher: Cipher.AES_256_GCM });
    assert.deepEqual(negotiate({ versions: { min: 2, max: 2 }, ciphers: c }, { versions: { min: 3, max: 5 }, ciphers: c }), { ok: false, reason: 'no-common-version' });
  });

  it('a version-1 HELLO (Burrow 0.1) is recognised as such only when its MAC is valid', () => {
    const body = Buffer.concat([Buffer.from('BRW1'), Buffer.from([0x01, 3]), Buffer.from('bob'), Buffer.from([5]), Buffer.from('alice'), Buffer.alloc(32, 1), Buffer.alloc(32, 2)]);
    const mac = createHmac('sha256', KEYS.streamAuth).update('burrow/v1 hello').update(CONTEXT).update(body).digest();
    assert.deepEqual(decodeHello(Buffer.concat([body, mac]), KEYS.streamAuth, CONTEXT), { ok: false, reason: 'version-1' });
    assert.deepEqual(decodeHello(Buffer.concat([body, Buffer.alloc(32)]), KEYS.streamAuth, CONTEXT), { ok: false, reason: 'bad-mac' });
    assert.deepEqual(decodeHello(body, KEYS.streamAuth, CONTEXT), { ok: false, reason: 'need-more' });
  });

  it('refuses malformed fields with typed reasons, and encodeHello refuses misuse', () => {
    const good = encodeHello({ ...base, versions: { min: 2, max: 2 }, ciphers: [Cipher.AES_256_GCM] }, KEYS.streamAuth, CONTEXT);
    const withByte = (at: number, value: number): Buffer => {
      const b = Buffer.from(good);
      b[at] = value;
      return b;
    };
    assert.deepEqual(decodeHello(withByte(5, 1), KEYS.streamAuth, CONTEXT), { ok: false, reason: 'bad-field' }); // min < 2
    assert.deepEqual(decodeHello(withByte(5, 3), KEYS.streamAuth, CONTEXT), { ok: false, reason: 'bad-field' }); // min > max
    assert.deepEqual(decodeHello(withByte(7, 0), KEYS.streamAuth, CONTEXT), { ok: false, reason: 'bad-field' }); // no cipher
    assert.deepEqual(decodeHello(withByte(7, 9), KEYS.streamAuth, CONTEXT), { ok: false, reason: 'bad-field' }); // too many
    assert.deepEqual(decodeHello(withByte(4, 3), KEYS.streamAuth, CONTEXT), { ok: false, reason: 'bad-magic' });
    assert.deepEqual(decodeHello(withByte(good.length - 1, (good.at(-1) ?? 0) ^ 1), KEYS.streamAuth, CONTEXT), { ok: false, reason: 'bad-mac' });
    for (let cut = 0; cut < good.length; cut++) assert.deepEqual(decodeHello(good.subarray(0, cut), KEYS.streamAuth, CONTEXT), { ok: false, reason: 'need-more' }, `cut ${cut}`);
    assert.throws(() => encodeHello({ ...base, versions: { min: 2, max: 2 }, ciphers: [] }, KEYS.streamAuth, CONTEXT), RangeError);
    assert.throws(() => encodeHello({ ...base, versions: { min: 1, max: 2 }, ciphers: [1] }, KEYS.streamAuth, CONTEXT), RangeError);
    assert.throws(() => encodeHello({ ...base, name: '', versions: { min: 2, max: 2 }, ciphers: [1] }, KEYS.streamAuth, CONTEXT), RangeError);
  });

  it('decodeRecordHeader and decodeHello never throw on arbitrary bytes (fuzz)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const h = decodeRecordHeader(bytes);
        assert.ok(h.ok ? h.length <= MAX_RECORD_LENGTH : ['need-more', 'bad-length'].includes(h.reason));
        const d = decodeHello(bytes, KEYS.streamAuth, CONTEXT);
        assert.ok(d.ok || ['need-more', 'bad-magic', 'bad-field', 'bad-name', 'bad-mac', 'version-1'].includes(d.reason));
      }),
      { numRuns: fuzzRuns(10_000) },
    );
  });
});
