/** The transfer framing: golden bytes, round trips, typed rejections, and a decoder that never throws. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzRuns } from '../support/fuzz.js';
import {
  checkFileName,
  decodeFrame,
  encodeFrame,
  MAX_FILES,
  MAX_MANIFEST_BYTES,
  type Frame,
  type ManifestEntry,
} from '../../src/transfer/codec.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const bytes = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ''), 'hex');

/** A MANIFEST frame from raw entry bytes, for inputs the encoder refuses to make. */
function rawManifest(entries: Buffer[], opts: { magic?: string; version?: number; count?: number; extra?: Buffer } = {}): Buffer {
  const count = Buffer.alloc(4);
  count.writeUInt32BE(opts.count ?? entries.length);
  const payload = Buffer.concat([Buffer.from(opts.magic ?? 'BRWF'), Buffer.from([opts.version ?? 1]), count, ...entries, opts.extra ?? Buffer.alloc(0)]);
  const header = Buffer.from([0x01, 0, 0, 0, 0]);
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

function rawEntry(name: Buffer | string, size: bigint, mode: number): Buffer {
  const n = typeof name === 'string' ? Buffer.from(name) : name;
  const e = Buffer.alloc(2 + n.length + 10);
  e.writeUInt16BE(n.length, 0);
  n.copy(e, 2);
  e.writeBigUInt64BE(size, 2 + n.length);
  e.writeUInt16BE(mode, 2 + n.length + 8);
  return e;
}

describe('transfer codec: golden bytes', () => {
  it('MANIFEST', () => {
    const frame = encodeFrame({ type: 'manifest', files: [{ name: 'a.txt', size: 5, mode: 0o644 }] });
    assert.equal(hex(frame), '01' + '0000001a' + '42525746' + '01' + '00000001' + '0005' + '612e747874' + '0000000000000005' + '01a4');
  });
  it('FILE_END, ACCEPT, FILE_OK, FAIL', () => {
    assert.equal(hex(encodeFrame({ type: 'file-end', index: 3, sha256: new Uint8Array(32).fill(0xab) })), '02' + '00000024' + '00000003' + 'ab'.repeat(32));
    assert.equal(hex(encodeFrame({ type: 'accept' })), '11' + '00000000');
    assert.equal(hex(encodeFrame({ type: 'file-ok', index: 7 })), '12' + '00000004' + '00000007');
    assert.equal(hex(encodeFrame({ type: 'fail', reason: 'exists', index: undefined, detail: 'x' })), '13' + '00000006' + '00' + 'ffffffff' + '78');
    assert.equal(hex(encodeFrame({ type: 'fail', reason: 'protocol', index: 1, detail: '' })), '13' + '00000005' + '03' + '00000001');
  });
});

const safeName = fc
  .string({ unit: 'grapheme', minLength: 1, maxLength: 40 })
  .filter((s) => checkFileName(s) === undefined);
const entries = fc.uniqueArray(
  fc.record({ name: safeName, size: fc.maxSafeNat(), mode: fc.integer({ min: 0, max: 0o777 }) }).map((e) => ({ ...e })),
  { selector: (e) => e.name, maxLength: 20 },
);
const frames: fc.Arbitrary<Frame> = fc.oneof(
  entries.map((files): Frame => ({ type: 'manifest', files })),
  fc.record({ index: fc.integer({ min: 0, max: MAX_FILES - 1 }), sha256: fc.uint8Array({ minLength: 32, maxLength: 32 }) }).map((r): Frame => ({ type: 'file-end', index: r.index, sha256: r.sha256 })),
  fc.constant<Frame>({ type: 'accept' }),
  fc.integer({ min: 0, max: MAX_FILES - 1 }).map((index): Frame => ({ type: 'file-ok', index })),
  fc.record({
    reason: fc.constantFrom('exists' as const, 'write-failed' as const, 'hash-mismatch' as const, 'protocol' as const),
    index: fc.option(fc.integer({ min: 0, max: MAX_FILES - 1 }), { nil: undefined }),
    detail: fc.string({ maxLength: 100 }),
  }).map((r): Frame => ({ type: 'fail', reason: r.reason, index: r.index, detail: r.detail })),
);

describe('transfer codec: round trips and properties', () => {
  it('decode(encode(frame)) is frame, using every byte', () => {
    fc.assert(fc.property(frames, fc.uint8Array({ maxLength: 8 }), (frame, trailer) => {
      const encoded = encodeFrame(frame);
      const d = decodeFrame(Buffer.concat([encoded, trailer]));
      assert.ok(d.ok, JSON.stringify(d));
      assert.equal(d.used, encoded.length);
      const normal = (f: Frame): unknown => (f.type === 'file-end' ? { ...f, sha256: hex(f.sha256) } : f);
      assert.deepEqual(normal(d.frame), normal(frame));
    }));
  });

  it('every proper prefix of a frame asks for more, never misreads', () => {
    fc.assert(fc.property(frames, (frame) => {
      const encoded = encodeFrame(frame);
      for (let n = 0; n < encoded.length; n++) assert.deepEqual(decodeFrame(encoded.subarray(0, n)), { ok: false, reason: 'need-more' });
    }), { numRuns: fuzzRuns(50) });
  });

  it('never throws on arbitrary bytes, nor on mutated frames', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
      decodeFrame(b);
    }), { numRuns: fuzzRuns(2000) });
    fc.assert(fc.property(frames, fc.nat(), fc.integer({ min: 1, max: 255 }), (frame, at, xor) => {
      const b = Buffer.from(encodeFrame(frame));
      const i = at % b.length;
      b[i] = (b[i] ?? 0) ^ xor;
      const d = decodeFrame(b);
      assert.ok(d.ok || typeof d.reason === 'string');
    }), { numRuns: fuzzRuns(2000) });
  });

  it('a FAIL detail is cut to 1024 bytes on a character boundary', () => {
    const d = decodeFrame(encodeFrame({ type: 'fail', reason: 'write-failed', index: 0, detail: 'é'.repeat(1000) }));
    assert.ok(d.ok && d.frame.type === 'fail');
    assert.equal(d.frame.detail, 'é'.repeat(512));
  });
});

describe('transfer codec: rejections with typed reasons', () => {
  const cases: [string, Buffer, string][] = [
    ['unknown type', bytes('7f 00000000'), 'unknown-type'],
    ['a manifest header claiming more than the limit (before the payload arrives)', Buffer.from([0x01, 0xff, 0xff, 0xff, 0xff]), 'frame-too-large'],
    ['ACCEPT with a payload', bytes('11 00000001 00'), 'bad-length'],
    ['FILE_OK of the wrong length', bytes('12 00000003 000000'), 'bad-length'],
    ['FILE_END of the wrong length', bytes('02 00000004 00000000'), 'bad-length'],
    ['FAIL too short', bytes('13 00000004 00000000'), 'bad-length'],
    ['FAIL too long', Buffer.concat([bytes('13 00000406'), Buffer.alloc(0x406)]), 'frame-too-large'],
    ['FAIL with an unknown reason', bytes('13 00000005 09 ffffffff'), 'bad-fail-reason'],
    ['FAIL with bad UTF-8', bytes('13 00000006 00 ffffffff c3'), 'bad-utf8'],
    ['FILE_OK index beyond the limit', bytes('12 00000004 00002710'), 'too-many-files'],
    ['bad magic', rawManifest([], { magic: 'BRWX' }), 'bad-magic'],
    ['another version', rawManifest([], { version: 2 }), 'unsupported-version'],
    ['too many files', rawManifest([], { count: MAX_FILES + 1 }), 'too-many-files'],
    ['a count larger than the entries', rawManifest([rawEntry('a', 1n, 0o644)], { count: 2 }), 'truncated-entry'],
    ['an entry cut short', rawManifest([rawEntry('a', 1n, 0o644).subarray(0, 8)]), 'truncated-entry'],
    ['bytes after the last entry', rawManifest([rawEntry('a', 1n, 0o644)], { extra: Buffer.from([0]) }), 'trailing-bytes'],
    ['a size beyond 2^53 - 1', rawManifest([rawEntry('a', 2n ** 53n, 0o644)]), 'size-too-large'],
    ['a mode with more than permission bits', rawManifest([rawEntry('a', 1n, 0o4755)]), 'bad-mode'],
    ['a name twice', rawManifest([rawEntry('a', 1n, 0o644), rawEntry('a', 2n, 0o644)]), 'duplicate-name'],
    ['a name that is not UTF-8', rawManifest([rawEntry(Buffer.from([0x66, 0xff]), 1n, 0o644)]), 'bad-utf8'],
  ];
  for (const [what, input, reason] of cases) {
    it(what, () => {
      const d = decodeFrame(input);
      assert.ok(!d.ok);
      assert.equal(d.reason, reason);
    });
  }

  it('the largest manifest header is accepted and waits for its payload', () => {
    const h = Buffer.from([0x01, 0, 0, 0, 0]);
    h.writeUInt32BE(MAX_MANIFEST_BYTES, 1);
    assert.deepEqual(decodeFrame(h), { ok: false, reason: 'need-more' });
  });
});

describe('file names: nothing may leave the output directory', () => {
  const unsafe: [string, string][] = [
    ['', 'empty'],
    ['.', 'dot'],
    ['..', 'dot-dot'],
    ['../etc/passwd', 'separator'],
    ['..\\..\\boot.ini', 'separator'],
    ['a/b', 'separator'],
    ['/abs', 'separator'],
    ['a\\b', 'separator'],
    ['x..y', 'dot-dot'],
    ['...', 'dot-dot'],
    ['a\u0000b', 'control-character'],
    ['line\nbreak', 'control-character'],
    ['esc\u001b[2J', 'control-character'],
    ['del\u007f', 'control-character'],
    ['é'.repeat(128), 'too-long'],
  ];
  for (const [name, problem] of unsafe) {
    it(`${JSON.stringify(name.length > 20 ? name.slice(0, 20) + '…' : name)} is refused (${problem}), by checkFileName and by the decoder`, () => {
      assert.equal(checkFileName(name), problem);
      const d = decodeFrame(rawManifest([rawEntry('fine', 0n, 0o644), rawEntry(name, 0n, 0o644)]));
      assert.deepEqual(d, { ok: false, reason: 'bad-name', problem, index: 1 });
      assert.throws(() => encodeFrame({ type: 'manifest', files: [{ name, size: 0, mode: 0o644 }] }), RangeError);
    });
  }

  it('ordinary names pass', () => {
    for (const name of ['a', 'report.pdf', '.hidden', 'a.b.c', 'spaces are fine', 'ünïcode 名前', 'é'.repeat(127), '-dash', '~tilde']) {
      assert.equal(checkFileName(name), undefined, name);
    }
  });

  it('property: a decoded manifest never holds an unsafe name', () => {
    fc.assert(fc.property(fc.array(fc.string({ unit: 'binary', maxLength: 12 }), { minLength: 1, maxLength: 5 }), (names) => {
      const d = decodeFrame(rawManifest(names.map((n) => rawEntry(n, 0n, 0o644))));
      if (d.ok && d.frame.type === 'manifest') {
        for (const f of d.frame.files) {
          assert.equal(checkFileName(f.name), undefined);
          assert.ok(!f.name.includes('/') && !f.name.includes('\\') && !f.name.includes('..') && !f.name.includes('\0'));
        }
      }
    }), { numRuns: fuzzRuns(2000) });
  });

  it('the encoder refuses what no valid sender sends', () => {
    const bad: ManifestEntry[][] = [
      [{ name: 'a', size: -1, mode: 0o644 }],
      [{ name: 'a', size: 1.5, mode: 0o644 }],
      [{ name: 'a', size: 1, mode: 0o1000 }],
      [{ name: 'a', size: 1, mode: 0o644 }, { name: 'a', size: 1, mode: 0o644 }],
    ];
    for (const files of bad) assert.throws(() => encodeFrame({ type: 'manifest', files }), RangeError);
    assert.throws(() => encodeFrame({ type: 'file-end', index: 0, sha256: new Uint8Array(31) }), RangeError);
    assert.throws(() => encodeFrame({ type: 'file-ok', index: -1 }), RangeError);
  });
});
