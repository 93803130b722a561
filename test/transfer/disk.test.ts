/** FileWriter on a real file system: direct I/O for the bulk, the ordinary descriptor for unaligned heads and tails. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FileWriter } from '../../src/transfer/disk.js';

/** Whether this directory's file system takes O_DIRECT (tmpfs on older kernels does not). */
async function directWorks(dir: string): Promise<boolean> {
  if (process.platform !== 'linux') return false;
  const probe = join(dir, 'probe');
  await writeFile(probe, '');
  try {
    const h = await open(probe, constants.O_WRONLY | constants.O_DIRECT);
    await h.close();
    return true;
  } catch {
    return false;
  } finally {
    await rm(probe, { force: true });
  }
}

/** Writes `data` after `prefix` (a resumed start) in pieces of random sizes; returns the writer. */
async function writeInPieces(path: string, prefix: Buffer, data: Buffer, end: 'finish' | 'settle', direct = true): Promise<FileWriter> {
  await writeFile(path, prefix);
  const handle = await open(path, constants.O_RDWR | constants.O_NOFOLLOW);
  const writer = new FileWriter(handle, prefix.length, { direct });
  try {
    for (let at = 0; at < data.length;) {
      const n = Math.min(data.length - at, 1 + Math.floor(Math.random() * 300_000));
      // Each piece is a fresh buffer, as the stream delivers them.
      await writer.write(Buffer.from(data.subarray(at, at + n)));
      at += n;
    }
    if (end === 'finish') await writer.finish();
    else await writer.settle();
  } finally {
    await handle.close();
  }
  return writer;
}

describe('FileWriter', () => {
  it('writes files of every size intact, from aligned and unaligned starts, direct where the file system allows', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'burrow-disk-'));
    try {
      const canDirect = await directWorks(dir);
      const MiB = 1024 * 1024;
      for (const prefixBytes of [0, 1000, 8192]) {
        for (const size of [1, 4095, 4096, 4 * MiB, 4 * MiB + 1, 9 * MiB + 123]) {
          const path = join(dir, `f-${prefixBytes}-${size}`);
          const prefix = randomBytes(prefixBytes);
          const data = randomBytes(size);
          const writer = await writeInPieces(path, prefix, data, 'finish');
          const got = await readFile(path);
          assert.equal(got.length, prefix.length + data.length, `${path}: size`);
          assert.ok(got.equals(Buffer.concat([prefix, data])), `${path}: content`);
          // Direct I/O starts with the first full 4 MiB block; smaller files never need it.
          if (size >= 4 * MiB + 4096) assert.equal(writer.mode, canDirect ? 'direct' : 'buffered', `${path}: mode`);
          if (size < 4 * MiB - 4096) assert.equal(writer.mode, canDirect ? 'try' : 'buffered', `${path}: mode`);
          await rm(path);
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('settle() writes everything queued, the unaligned tail included, so a partial file stays whole', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'burrow-disk-'));
    try {
      const path = join(dir, 'partial');
      const data = randomBytes(5 * 1024 * 1024 + 10);
      await writeInPieces(path, Buffer.alloc(0), data, 'settle');
      assert.ok((await readFile(path)).equals(data));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('with direct: false writes through the ordinary descriptor', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'burrow-disk-'));
    try {
      const path = join(dir, 'buffered');
      const data = randomBytes(6 * 1024 * 1024 + 5);
      const writer = await writeInPieces(path, Buffer.from('abc'), data, 'finish', false);
      assert.equal(writer.mode, 'buffered');
      assert.ok((await readFile(path)).equals(Buffer.concat([Buffer.from('abc'), data])));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
