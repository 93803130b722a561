/** The transfer framing (protocol version 3): golden bytes, round trips, typed rejections, safe paths, a decoder that never throws. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzRuns } from '../support/fuzz.js';
import {
  checkFileName,
  checkPath,
  decodeFrame,
  encodeFrame,
  MAX_DATA_BYTES,
  MAX_DEPTH,
  MAX_ENTRIES,
  MAX_MANIFEST_BYTES,
  MAX_PATH_BYTES,
  type EntryKind,
  type Frame,
  type ManifestEntry,
} from '../../src/transfer/codec.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/** A check key for manifests: 0x00, 0x01, … 0x1f. */
const KEY = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const bytes = (h: string): Buffer => Buffer.from(h.replace(/\s+/g, ''), 'hex');

/** A MANIFEST frame from raw entry bytes, for inputs the encoder refuses to make. */
function rawManifest(entries: Buffer[], opts: { magic?: string; version?: number; count?: number; extra?: Buffer; key?: Buffer } = {}): Buffer {
  const count = Buffer.alloc(4);
  count.writeUInt32BE(opts.count ?? entries.length);
  const version = opts.version ?? 3;
  // Version 3 carries the check key after the version; older versions did not.
  const key = opts.key ?? (version === 3 ? KEY : Buffer.alloc(0));
  const payload = Buffer.concat([Buffer.from(opts.magic ?? 'BRWF'), Buffer.from([version]), key, count, ...entries, opts.extra ?? Buffer.alloc(0)]);
  const header = Buffer.from([0x01, 0, 0, 0, 0]);
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

function rawEntry(path: Buffer | string, size: bigint, mode: number, kind = 0): Buffer {
  const n = typeof path === 'string' ? Buffer.from(path) : path;
  const e = Buffer.alloc(1 + 2 + n.length + 10);
  e.writeUInt8(kind, 0);
  e.writeUInt16BE(n.length, 1);
  n.copy(e, 3);
  e.writeBigUInt64BE(size, 3 + n.length);
  e.writeUInt16BE(mode, 3 + n.length + 8);
  return e;
}

const file = (path: string, size = 0, mode = 0o644): ManifestEntry => ({ kind: 'file', path, size, mode });
const dir = (path: string, mode = 0o755): ManifestEntry => ({ kind: 'directory', path, size: 0, mode });

describe('transfer codec v3: golden bytes', () => {
  it('MANIFEST with a directory, a file in it and a stream', () => {
    const frame = encodeFrame({ type: 'manifest', entries: [dir('d'), file('d/a.txt', 5), { kind: 'stream', path: 'stdin', size: 0, mode: 0o600 }], checkKey: KEY });
    assert.equal(
      hex(frame),
      '01' + '0000005d' + '42525746' + '03' + hex(KEY) + '00000003' +
        '01' + '0001' + '64' + '0000000000000000' + '01ed' +
        '00' + '0007' + '642f612e747874' + '0000000000000005' + '01a4' +
        '02' + '0005' + '737464696e' + '0000000000000000' + '0180',
    );
  });

  it('FILE_START, DATA, FILE_END, ACCEPT (with and without offers), FILE_OK, FAIL, DONE', () => {
    assert.equal(hex(encodeFrame({ type: 'file-start', index: 2, offset: 0x1000 })), '03' + '0000000c' + '00000002' + '0000000000001000');
    assert.equal(hex(encodeFrame({ type: 'data', length: 0x20000 })), '04' + '00020000');
    assert.equal(hex(encodeFrame({ type: 'file-end', index: 3, size: 5, check: new Uint8Array(16).fill(0xab) })), '02' + '0000001c' + '00000003' + '0000000000000005' + 'ab'.repeat(16));
    assert.equal(hex(encodeFrame({ type: 'accept', offers: [] })), '11' + '00000004' + '00000000');
    assert.equal(
      hex(encodeFrame({ type: 'accept', offers: [{ index: 1, offset: 7, sha256: new Uint8Array(32).fill(0xcd) }] })),
      '11' + '00000030' + '00000001' + '00000001' + '0000000000000007' + 'cd'.repeat(32),
    );
    assert.equal(hex(encodeFrame({ type: 'file-ok', index: 7 })), '12' + '00000004' + '00000007');
    assert.equal(hex(encodeFrame({ type: 'fail', reason: 'exists', index: undefined, detail: 'x' })), '13' + '00000006' + '00' + 'ffffffff' + '78');
    assert.equal(hex(encodeFrame({ type: 'fail', reason: 'declined', index: 1, detail: '' })), '13' + '00000005' + '04' + '00000001');
    assert.equal(hex(encodeFrame({ type: 'done' })), '14' + '00000000');
  });
});

const component = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }).filter((s) => checkFileName(s) === undefined);
/** A valid tree: directories before their contents, unique paths. */
const manifests: fc.Arbitrary<ManifestEntry[]> = fc
  .array(fc.record({ parent: fc.nat(), name: component, kind: fc.constantFrom<EntryKind>('file', 'directory', 'file'), size: fc.maxSafeNat(), mode: fc.integer({ min: 0, max: 0o777 }) }), { maxLength: 15 })
  .map((raw) => {
    const out: ManifestEntry[] = [];
    const dirs: string[] = [''];
    const seen = new Set<string>();
    for (const r of raw) {
      const parent = dirs[r.parent % dirs.length] ?? '';
      const path = parent === '' ? r.name : `${parent}/${r.name}`;
      if (seen.has(path) || checkPath(path) !== undefined) continue;
      seen.add(path);
      out.push({ kind: r.kind, path, size: r.kind === 'file' ? r.size : 0, mode: r.mode });
      if (r.kind === 'directory') dirs.push(path);
    }
    return out;
  });
const idx = fc.integer({ min: 0, max: MAX_ENTRIES - 1 });
const sha = fc.uint8Array({ minLength: 32, maxLength: 32 });
const tag = fc.uint8Array({ minLength: 16, maxLength: 16 });
const frames: fc.Arbitrary<Frame> = fc.oneof(
  fc.tuple(manifests, sha).map(([entries, checkKey]): Frame => ({ type: 'manifest', entries, checkKey })),
  fc.record({ index: idx, offset: fc.maxSafeNat() }).map((r): Frame => ({ type: 'file-start', ...r })),
  fc.integer({ min: 1, max: MAX_DATA_BYTES }).map((length): Frame => ({ type: 'data', length })),
  fc.record({ index: idx, size: fc.maxSafeNat(), check: tag }).map((r): Frame => ({ type: 'file-end', ...r })),
  fc.uniqueArray(fc.record({ index: idx, offset: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), sha256: sha }), { selector: (o) => o.index, maxLength: 5 }).map((offers): Frame => ({ type: 'accept', offers })),
  idx.map((index): Frame => ({ type: 'file-ok', index })),
  fc.record({
    reason: fc.constantFrom('exists' as const, 'write-failed' as const, 'hash-mismatch' as const, 'protocol' as const, 'declined' as const),
    index: fc.option(idx, { nil: undefined }),
    detail: fc.string({ maxLength: 100 }),
  }).map((r): Frame => ({ type: 'fail', reason: r.reason, index: r.index, detail: r.detail })),
  fc.constant<Frame>({ type: 'done' }),
);

/** Frames with Uint8Arrays as hex, for deepEqual. */
function normal(f: Frame): unknown {
  if (f.type === 'file-end') return { ...f, check: hex(f.check) };
  if (f.type === 'manifest') return { ...f, checkKey: hex(f.checkKey) };
  if (f.type === 'accept') return { ...f, offers: f.offers.map((o) => ({ ...o, sha256: hex(o.sha256) })) };
  return f;
}

describe('transfer codec v3: round trips and properties', () => {
  it('decode(encode(frame)) is frame, using every byte (DATA: its header)', () => {
    fc.assert(fc.property(frames, fc.uint8Array({ maxLength: 8 }), (frame, trailer) => {
      const encoded = encodeFrame(frame);
      const d = decodeFrame(Buffer.concat([encoded, trailer]));
      assert.ok(d.ok, JSON.stringify(d));
      assert.equal(d.used, encoded.length);
      assert.deepEqual(normal(d.frame), normal(frame));
    }), { numRuns: fuzzRuns(500) });
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

describe('transfer codec v2: rejections with typed reasons', () => {
  const cases: [string, Buffer, string][] = [
    ['unknown type', bytes('7f 00000000'), 'unknown-type'],
    ['a manifest header claiming more than the limit (before the payload arrives)', Buffer.from([0x01, 0xff, 0xff, 0xff, 0xff]), 'frame-too-large'],
    ['an empty DATA frame', bytes('04 00000000'), 'bad-length'],
    ['a DATA frame over 1 MiB', bytes('04 00100001'), 'frame-too-large'],
    ['ACCEPT too short', bytes('11 00000001 00'), 'bad-length'],
    ['ACCEPT whose count disagrees with its length', bytes('11 00000004 00000001'), 'bad-length'],
    ['ACCEPT offering offset 0', Buffer.concat([bytes('11 00000030 00000001 00000001 0000000000000000'), Buffer.alloc(32)]), 'bad-offer'],
    ['ACCEPT offering one entry twice', Buffer.concat([bytes('11 0000005c 00000002 00000001 0000000000000001'), Buffer.alloc(32), bytes('00000001 0000000000000002'), Buffer.alloc(32)]), 'bad-offer'],
    ['FILE_START of the wrong length', bytes('03 00000004 00000000'), 'bad-length'],
    ['FILE_START at an offset beyond 2^53 - 1', bytes('03 0000000c 00000000 0020000000000000'), 'size-too-large'],
    ['FILE_OK of the wrong length', bytes('12 00000003 000000'), 'bad-length'],
    ['FILE_END of the wrong length', bytes('02 00000024 00000000'), 'bad-length'],
    ['DONE with a payload', bytes('14 00000001 00'), 'bad-length'],
    ['FAIL too short', bytes('13 00000004 00000000'), 'bad-length'],
    ['FAIL too long', Buffer.concat([bytes('13 00000406'), Buffer.alloc(0x406)]), 'frame-too-large'],
    ['FAIL with an unknown reason', bytes('13 00000005 09 ffffffff'), 'bad-fail-reason'],
    ['FAIL with bad UTF-8', bytes('13 00000006 00 ffffffff c3'), 'bad-utf8'],
    ['FILE_OK index beyond the limit', bytes('12 00000004 000186a0'), 'bad-index'],
    ['bad magic', rawManifest([], { magic: 'BRWX' }), 'bad-magic'],
    ['a version-1 manifest (Burrow 0.1)', rawManifest([], { version: 1 }), 'unsupported-version'],
    ['a version-2 manifest (SHA-256 per file, no check key)', rawManifest([rawEntry('a', 1n, 0o644)], { version: 2 }), 'unsupported-version'],
    ['a version-3 manifest cut short in its check key', rawManifest([], { key: KEY.subarray(0, 20), count: 0 }), 'truncated-entry'],
    ['too many entries', rawManifest([], { count: MAX_ENTRIES + 1 }), 'too-many-entries'],
    ['a count larger than the entries', rawManifest([rawEntry('a', 1n, 0o644)], { count: 2 }), 'truncated-entry'],
    ['an entry cut short', rawManifest([rawEntry('a', 1n, 0o644).subarray(0, 8)]), 'truncated-entry'],
    ['bytes after the last entry', rawManifest([rawEntry('a', 1n, 0o644)], { extra: Buffer.from([0]) }), 'trailing-bytes'],
    ['an unknown kind', rawManifest([rawEntry('a', 0n, 0o644, 7)]), 'bad-kind'],
    ['a size beyond 2^53 - 1', rawManifest([rawEntry('a', 2n ** 53n, 0o644)]), 'size-too-large'],
    ['a directory with a size', rawManifest([rawEntry('d', 1n, 0o755, 1)]), 'size-too-large'],
    ['a stream with a size', rawManifest([rawEntry('s', 1n, 0o644, 2)]), 'size-too-large'],
    ['a mode with more than permission bits', rawManifest([rawEntry('a', 1n, 0o4755)]), 'bad-mode'],
    ['a path twice', rawManifest([rawEntry('a', 1n, 0o644), rawEntry('a', 2n, 0o644)]), 'duplicate-path'],
    ['a file inside a directory not listed before it', rawManifest([rawEntry('d/a', 1n, 0o644), rawEntry('d', 0n, 0o755, 1)]), 'parent-missing'],
    ['a file inside a file', rawManifest([rawEntry('f', 1n, 0o644), rawEntry('f/a', 1n, 0o644)]), 'parent-missing'],
    ['a path that is not UTF-8', rawManifest([rawEntry(Buffer.from([0x66, 0xff]), 1n, 0o644)]), 'bad-utf8'],
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

describe('paths: nothing may leave the output directory', () => {
  const unsafe: [string, string][] = [
    ['', 'empty'],
    ['.', 'dot'],
    ['..', 'dot-dot'],
    ['../etc/passwd', 'dot-dot'],
    ['a/../../etc', 'dot-dot'],
    ['a/./b', 'dot'],
    ['/abs', 'empty'],
    ['/etc/passwd', 'empty'],
    ['a//b', 'empty'],
    ['a/', 'empty'],
    ['..\\..\\boot.ini', 'separator'],
    ['a\\b', 'separator'],
    ['C:\\Windows', 'separator'],
    ['a\u0000b', 'control-character'],
    ['line\nbreak', 'control-character'],
    ['esc\u001b[2J', 'control-character'],
    ['del\u007f', 'control-character'],
    ['é'.repeat(128), 'too-long'],
    [Array.from({ length: MAX_DEPTH + 1 }, () => 'd').join('/'), 'too-deep'],
    [Array.from({ length: 20 }, () => 'x'.repeat(200)).join('/'), 'path-too-long'],
  ];
  for (const [path, problem] of unsafe) {
    it(`${JSON.stringify(path.length > 24 ? path.slice(0, 24) + '…' : path)} is refused (${problem}), by checkPath and by the decoder`, () => {
      assert.equal(checkPath(path), problem);
      const d = decodeFrame(rawManifest([rawEntry('fine', 0n, 0o644), rawEntry(path, 0n, 0o644)]));
      assert.ok(!d.ok);
      // A path whose parent is not listed may be refused for that first; an unsafe one never passes.
      if (d.reason === 'bad-name') assert.deepEqual(d, { ok: false, reason: 'bad-name', problem, index: 1 });
      else assert.equal(d.reason, 'parent-missing');
      assert.throws(() => encodeFrame({ type: 'manifest', entries: [file(path)], checkKey: KEY }), RangeError);
    });
  }

  it('ordinary names and paths pass', () => {
    for (const name of ['a', 'report.pdf', '.hidden', 'a.b.c', 'x..y', '...', 'spaces are fine', 'ünïcode 名前', 'é'.repeat(127), '-dash', '~tilde']) {
      assert.equal(checkFileName(name), undefined, name);
    }
    assert.equal(checkPath('photos/2024/IMG 0001.jpg'), undefined);
    assert.equal(checkPath(Array.from({ length: MAX_DEPTH }, () => 'd').join('/')), undefined);
    assert.ok(Buffer.byteLength(Array.from({ length: 15 }, () => 'x'.repeat(200)).join('/')) <= MAX_PATH_BYTES);
  });

  it('property: a decoded manifest never holds an unsafe path, and lists each directory before its contents', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.string({ unit: 'binary', maxLength: 14 }), fc.integer({ min: 0, max: 2 })), { minLength: 1, maxLength: 6 }), (raw) => {
      const d = decodeFrame(rawManifest(raw.map(([p, kind]) => rawEntry(p, 0n, 0o644, kind))));
      if (d.ok && d.frame.type === 'manifest') {
        const seen = new Set<string>();
        for (const e of d.frame.entries) {
          assert.equal(checkPath(e.path), undefined);
          assert.ok(!e.path.startsWith('/') && !e.path.includes('\\') && !e.path.split('/').includes('..') && !e.path.includes('\0'));
          const parent = e.path.includes('/') ? e.path.slice(0, e.path.lastIndexOf('/')) : '';
          assert.ok(parent === '' || seen.has(parent));
          if (e.kind === 'directory') seen.add(e.path);
        }
      }
    }), { numRuns: fuzzRuns(2000) });
  });

  it('the encoder refuses what no valid sender sends', () => {
    const bad: ManifestEntry[][] = [
      [file('a', -1)],
      [file('a', 1.5)],
      [file('a', 1, 0o1000)],
      [file('a', 1), file('a', 1)],
      [file('d/a', 1)],
      [{ kind: 'directory', path: 'd', size: 3, mode: 0o755 }],
    ];
    for (const entries of bad) assert.throws(() => encodeFrame({ type: 'manifest', entries, checkKey: KEY }), RangeError);
    assert.throws(() => encodeFrame({ type: 'manifest', entries: [], checkKey: KEY.subarray(1) }), RangeError);
    assert.throws(() => encodeFrame({ type: 'file-end', index: 0, size: 0, check: new Uint8Array(15) }), RangeError);
    assert.throws(() => encodeFrame({ type: 'file-end', index: 0, size: 0, check: new Uint8Array(32) }), RangeError);
    assert.throws(() => encodeFrame({ type: 'file-ok', index: -1 }), RangeError);
    assert.throws(() => encodeFrame({ type: 'data', length: 0 }), RangeError);
    assert.throws(() => encodeFrame({ type: 'accept', offers: [{ index: 0, offset: 0, sha256: new Uint8Array(32) }] }), RangeError);
  });
});
