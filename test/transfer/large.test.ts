/**
 * 1 GiB through sendEntries/receiveFiles with bounded memory. Both sides run in this one process (node
 * --test gives each file its own), so its peak RSS bounds each side's. The source is sparse (holes
 * plus random blocks), so it costs no disk to make; the copy is written out in full.
 *
 * BURROW_TRANSFER_TEST_MIB=N changes the size (default 1024). Takes ~10 s on a 2-core CI VM.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { receiveFiles } from '../../src/transfer/receive.js';
import { prepareSend, sendEntries } from '../../src/transfer/send.js';
import { scratch, securePair } from './support.js';

const MIB = 1024 * 1024;
const SIZE = Number(process.env.BURROW_TRANSFER_TEST_MIB ?? 1024) * MIB;
const RSS_LIMIT = 150 * MIB;

async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: MIB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe('a large transfer', () => {
  it(`moves ${SIZE / MIB} MiB with peak RSS under ${RSS_LIMIT / MIB} MiB`, { timeout: 120_000 }, async (t) => {
    const src = await scratch();
    const out = await scratch();
    try {
      // Sparse file: holes plus a random MiB every 64 MiB (and at the very end).
      const path = join(src.dir, 'big.bin');
      const fh = await open(path, 'w');
      await fh.truncate(SIZE);
      for (let at = 0; at < SIZE; at += 64 * MIB) await fh.write(randomBytes(MIB), 0, MIB, at);
      await fh.write(randomBytes(4096), 0, 4096, SIZE - 4096);
      await fh.close();
      const expected = await sha256Of(path);

      const { entries } = await prepareSend([path]);
      const pair = await securePair();
      let peak = process.memoryUsage().rss;
      const sampler = setInterval(() => {
        peak = Math.max(peak, process.memoryUsage().rss);
      }, 50);
      const started = performance.now();
      let summary;
      let received;
      try {
        [summary, received] = await Promise.all([
          sendEntries(pair.sender, { entries, peer: 'bob' }),
          receiveFiles(pair.receiver, { outDir: out.dir, peer: 'alice' }),
        ]);
      } finally {
        clearInterval(sampler);
      }
      const seconds = (performance.now() - started) / 1000;
      await pair.closed();
      const maxRss = process.resourceUsage().maxRSS * 1024;
      t.diagnostic(`${SIZE / MIB} MiB in ${seconds.toFixed(2)} s = ${(SIZE / MIB / seconds).toFixed(0)} MiB/s (sender and receiver in one process)`);
      t.diagnostic(`peak RSS: sampled ${(peak / MIB).toFixed(0)} MiB, getrusage maxRSS ${(maxRss / MIB).toFixed(0)} MiB`);

      assert.equal(summary.bytes, SIZE);
      assert.deepEqual(await readdir(out.dir), ['big.bin']);
      assert.equal(summary.files[0]?.check, received.files[0]?.check);
      assert.equal(await sha256Of(join(out.dir, 'big.bin')), expected);
      assert.ok(maxRss < RSS_LIMIT, `peak RSS ${(maxRss / MIB).toFixed(0)} MiB`);
    } finally {
      await src.remove();
      await out.remove();
    }
  });
});
