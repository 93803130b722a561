/** Progress output (src/cli/progress.ts): the pure formatting, the width fitting, the rate meter, and both reporters. */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { displayWidth, formatBytes, formatDuration, logLine, ProgressReporter, RateMeter, shorten, statusLine } from '../../src/cli/progress.js';
import type { ManifestEntry } from '../../src/transfer/codec.js';
import { fuzzRuns } from '../support/fuzz.js';

const MIB = 1024 * 1024;
const file = (path: string, size: number): ManifestEntry => ({ kind: 'file', path, size, mode: 0o644 });

function capture(tty = false, columns = 120): { stream: PassThrough & { isTTY?: boolean; columns?: number }; text: () => string } {
  const stream = new PassThrough() as PassThrough & { isTTY?: boolean; columns?: number };
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  if (tty) Object.assign(stream, { isTTY: true, columns });
  return { stream, text: () => text };
}

/** What a terminal shows after the output: the last state of each line (\r rewrites, \x1b[K clears). */
function screen(text: string): string[] {
  const lines: string[] = [];
  for (const raw of text.split('\n')) {
    const parts = raw.split('\r');
    lines.push((parts.at(-1) ?? '').replaceAll('\x1b[K', ''));
  }
  return lines;
}

describe('progress formatting', () => {
  it('bytes in binary units', () => {
    const cases: [number, string][] = [
      [0, '0 B'],
      [1023, '1023 B'],
      [1024, '1.0 KiB'],
      [1536, '1.5 KiB'],
      [123.4 * MIB, '123.4 MiB'],
      [1024 * MIB - 1, '1.0 GiB'],
      [1024 * MIB, '1.0 GiB'],
      [5.5 * 1024 ** 4, '5.5 TiB'],
    ];
    for (const [n, s] of cases) assert.equal(formatBytes(n), s, String(n));
  });

  it('durations', () => {
    const cases: [number, string][] = [[0, '0 s'], [0.025, '25 ms'], [4.24, '4.2 s'], [8, '8 s'], [12.4, '12 s'], [185, '3 min 05 s'], [7620, '2 h 07 min']];
    for (const [n, s] of cases) assert.equal(formatDuration(n), s, String(n));
  });

  it('the log line (no terminal), with and without a known size', () => {
    assert.equal(logLine('sent', 123.4 * MIB, 1024 * MIB, 45.6 * MIB), 'sent 123.4 MiB of 1.0 GiB (45.6 MiB/s, ETA 20 s)');
    assert.equal(logLine('received', 0, MIB, 0), 'received 0 B of 1.0 MiB (0 B/s, ETA unknown)');
    assert.equal(logLine('sent', 5 * MIB, undefined, MIB), 'sent 5.0 MiB (1.0 MiB/s)');
  });

  it('the terminal line at 80 columns keeps the rate, the ETA and the current file', () => {
    const line = statusLine({ verb: 'received', bytes: 123.4 * MIB, total: 1024 * MIB, rate: 45.6 * MIB, name: 'photos/2024/holiday/IMG_0001.jpg' }, 80);
    assert.equal(line, 'received 12% 123.4 MiB/1.0 GiB 45.6 MiB/s ETA 20 s photos/2024/h…y/IMG_0001.jpg');
    assert.ok(displayWidth(line) <= 79);
  });

  it('a long name is shortened in the middle, keeping its end; the ETA always stays', () => {
    const name = `very/deep/${'directory/'.repeat(10)}the-file-you-care-about.tar.gz`;
    for (const columns of [200, 120, 80, 60, 40, 30]) {
      const line = statusLine({ verb: 'sent', bytes: 999 * MIB, total: 5000 * MIB, rate: 1023.9 * MIB, name }, columns);
      assert.ok(displayWidth(line) <= columns - 1, `${columns}: ${line}`);
      assert.match(line, /ETA 4 s/, `${columns}: ${line}`);
      assert.match(line, /MiB\/s/, `${columns}: ${line}`);
      if (columns >= 60 && columns <= 120) assert.match(line, /…/);
      if (columns >= 80) assert.match(line, /\.tar\.gz$/);
    }
  });

  it('property: never wider than the terminal, whatever the name (wide and combining characters too)', () => {
    fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 120 }), fc.integer({ min: 20, max: 300 }), fc.nat(), fc.option(fc.nat(), { nil: undefined }), (name, columns, bytes, total) => {
      // eslint-disable-next-line no-control-regex -- names never carry control characters (checkFileName)
      const clean = name.replace(/[\u0000-\u001f\u007f]/g, '');
      const line = statusLine({ verb: 'received', bytes, total, rate: bytes / 3, name: clean }, columns);
      assert.ok(displayWidth(line) <= columns - 1, `${columns}: ${line}`);
    }), { numRuns: fuzzRuns(2000) });
  });

  it('display width and middle shortening', () => {
    assert.equal(displayWidth('abc'), 3);
    assert.equal(displayWidth('名前'), 4);
    assert.equal(displayWidth('e\u0301'), 1);
    assert.equal(shorten('abcdefghij', 5), 'ab…ij');
    assert.equal(shorten('名前名前名前', 5), '名…前');
    assert.equal(shorten('short', 10), 'short');
  });

  it('many updates within the first 100 ms do not move the baseline', () => {
    const m = new RateMeter(5000);
    m.sample(0, 0);
    for (let t = 1; t <= 50; t++) m.sample(t, t * MIB);
    assert.equal(m.sample(1000, 100 * MIB), 100 * MIB);
  });

  it('the rate is over the recent window, not the whole transfer', () => {
    const m = new RateMeter(5000);
    m.sample(0, 0);
    assert.equal(m.sample(1000, 100 * MIB), 100 * MIB);
    for (let t = 1100; t <= 11_000; t += 100) m.sample(t, 100 * MIB);
    assert.equal(m.sample(11_000, 100 * MIB), 0);
    assert.equal(Math.round(m.sample(12_000, 110 * MIB) / MIB), 2);
  });
});

describe('ProgressReporter', () => {
  it('without a terminal: a start line, a line every ~2 s naming the file, and one per verified file', () => {
    const out = capture();
    let now = 0;
    const r = new ProgressReporter({ stream: out.stream, verb: 'sent', now: () => now });
    r.handle({ type: 'start', entries: [{ kind: 'directory', path: 'd', size: 0, mode: 0o755 }, file('d/a.bin', 100 * MIB)], totalBytes: 100 * MIB, resumedBytes: 0 });
    r.handle({ type: 'file-start', index: 1, path: 'd/a.bin', size: 100 * MIB, offset: 0 });
    const at = (t: number, bytes: number): void => {
      now = t;
      r.handle({ type: 'progress', bytes, totalBytes: 100 * MIB });
    };
    at(500, 5 * MIB);
    at(2100, 21 * MIB);
    at(3000, 30 * MIB);
    at(4200, 42 * MIB);
    r.handle({ type: 'file-done', index: 1, path: 'd/a.bin', size: 100 * MIB });
    r.stop();
    assert.equal(out.text(), [
      'burrow: sending 1 file in 1 directory, 100.0 MiB',
      'burrow: sent 21.0 MiB of 100.0 MiB (10.0 MiB/s, ETA 8 s), now d/a.bin',
      'burrow: sent 42.0 MiB of 100.0 MiB (10.0 MiB/s, ETA 6 s), now d/a.bin',
      'burrow: d/a.bin (100.0 MiB): verified end to end and in place',
      '',
    ].join('\n'));
  });

  it('on an 80-column terminal: one line rewritten in place, with ETA and the file; cleared at the end; no timers', async () => {
    const out = capture(true, 80);
    const timers = (): number => process.getActiveResourcesInfo().filter((x) => x === 'Timeout').length;
    const before = timers();
    let now = 0;
    const r = new ProgressReporter({ stream: out.stream, verb: 'received', now: () => now });
    r.handle({ type: 'start', entries: [file('a-rather-long-file-name-for-an-eighty-column-terminal.iso', 10 * MIB)], totalBytes: 10 * MIB, resumedBytes: 0 });
    r.handle({ type: 'file-start', index: 0, path: 'a-rather-long-file-name-for-an-eighty-column-terminal.iso', size: 10 * MIB, offset: 0 });
    now = 1000;
    r.handle({ type: 'progress', bytes: 4 * MIB, totalBytes: 10 * MIB });
    const drawn = out.text();
    r.handle({ type: 'file-done', index: 0, path: 'a', size: 10 * MIB });
    r.stop();
    r.stop();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(timers(), before);
    const last = screen(drawn).at(-1) ?? '';
    assert.match(last, /^received 40% 4\.0 MiB\/10\.0 MiB 4\.0 MiB\/s ETA 2 s a-rather.*….*terminal\.iso$/);
    assert.ok(displayWidth(last) <= 79);
    assert.doesNotMatch(out.text(), /verified/, 'per-file lines on a terminal');
    assert.deepEqual(screen(out.text()), ['']);
  });

  it('resumed bytes and leftovers are said in whole lines, above the status line', () => {
    const out = capture(true, 100);
    const r = new ProgressReporter({ stream: out.stream, verb: 'sent', now: () => 0 });
    r.handle({ type: 'start', entries: [file('big', 10 * MIB)], totalBytes: 10 * MIB, resumedBytes: 4 * MIB });
    r.handle({ type: 'file-start', index: 0, path: 'big', size: 10 * MIB, offset: 4 * MIB });
    r.handle({ type: 'leftover-removed', path: '/out/.burrow-00.part', bytes: 1000 });
    r.stop();
    const lines = screen(out.text());
    assert.deepEqual(lines.slice(0, 3), [
      'burrow: resuming: 4.0 MiB already there from an interrupted run',
      'burrow: big: resuming after the 4.0 MiB already there',
      'burrow: removed /out/.burrow-00.part (1000 B), a partial file of an earlier interrupted transfer that this one did not resume',
    ]);
  });
});
