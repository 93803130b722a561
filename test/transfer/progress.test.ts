/** Progress output: the pure formatting, the rate meter, and both reporters (plain lines and the TTY bar). */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { formatBytes, formatDuration, progressLine, ProgressReporter, RateMeter } from '../../src/transfer/progress.js';

const MIB = 1024 * 1024;

function capture(tty = false): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  if (tty) Object.assign(stream, { isTTY: true, columns: 120 });
  return { stream, text: () => text };
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

  it('the plain progress line', () => {
    assert.equal(progressLine('sent', 123.4 * MIB, 1024 * MIB, 45.6 * MIB), 'sent 123.4 MiB of 1.0 GiB (45.6 MiB/s, ETA 20 s)');
    assert.equal(progressLine('received', 0, MIB, 0), 'received 0 B of 1.0 MiB (0 B/s, ETA unknown)');
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
    // A stall: 10 s without progress brings the rate down to the window's.
    for (let t = 1100; t <= 11_000; t += 100) m.sample(t, 100 * MIB);
    assert.equal(m.sample(11_000, 100 * MIB), 0);
    assert.equal(Math.round(m.sample(12_000, 110 * MIB) / MIB), 2);
  });
});

describe('ProgressReporter', () => {
  it('without a terminal: a start line, a line every ~2 s, and one per verified file', () => {
    const out = capture();
    let now = 0;
    const r = new ProgressReporter({ stream: out.stream, verb: 'sent', now: () => now });
    r.handle({ type: 'start', files: [{ name: 'a.bin', size: 100 * MIB, mode: 0o644 }], totalBytes: 100 * MIB });
    const at = (t: number, bytes: number): void => {
      now = t;
      r.handle({ type: 'progress', bytes, totalBytes: 100 * MIB });
    };
    at(500, 5 * MIB);
    at(2100, 21 * MIB);
    at(3000, 30 * MIB);
    at(4200, 42 * MIB);
    r.handle({ type: 'file-done', index: 0, name: 'a.bin', size: 100 * MIB });
    r.stop();
    assert.equal(out.text(), [
      'burrow: sending 1 file, 100.0 MiB',
      'burrow: sent 21.0 MiB of 100.0 MiB (10.0 MiB/s, ETA 8 s)',
      'burrow: sent 42.0 MiB of 100.0 MiB (10.0 MiB/s, ETA 6 s)',
      'burrow: a.bin (100.0 MiB): verified (SHA-256) and in place',
      '',
    ].join('\n'));
  });

  it('on a terminal: a cli-progress bar with bytes, rate and ETA, and no timer left after stop()', async () => {
    const out = capture(true);
    const timers = (): number => process.getActiveResourcesInfo().filter((x) => x === 'Timeout').length;
    const before = timers();
    let now = 0;
    const r = new ProgressReporter({ stream: out.stream, verb: 'received', now: () => now });
    r.handle({ type: 'start', files: [{ name: 'a', size: 10 * MIB, mode: 0o644 }], totalBytes: 10 * MIB });
    now = 1000;
    r.handle({ type: 'progress', bytes: 4 * MIB, totalBytes: 10 * MIB });
    r.handle({ type: 'file-done', index: 0, name: 'a', size: 10 * MIB });
    r.stop();
    r.stop();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(timers(), before);
    const text = out.text();
    assert.match(text, /received \[[█░]+\] 40% \| 4\.0 MiB of 10\.0 MiB \| 4\.0 MiB\/s \| ETA 2 s/);
    assert.doesNotMatch(text, /verified/, 'per-file lines would break the bar');
  });

  it('on a terminal, an all-empty transfer shows no bar', () => {
    const out = capture(true);
    const r = new ProgressReporter({ stream: out.stream, verb: 'sent' });
    r.handle({ type: 'start', files: [{ name: 'e', size: 0, mode: 0o644 }], totalBytes: 0 });
    r.stop();
    assert.equal(out.text(), '');
  });
});
