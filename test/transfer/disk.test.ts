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

/** What the writer's check saw: copies of each piece, in order. */
class Recorder {
  readonly pieces: Buffer[] = [];
  update(data: Uint8Array): void {
    this.pieces.push(Buffer.from(data));
  }
  get all(): Buffer {
    return Buffer.concat(this.pieces);
  }
}

/** Writes `data` after `prefix` (a resumed start) in pieces of random sizes; returns the writer. */
async function writeInPieces(path: string, prefix: Buffer, data: Buffer, end: 'finish' | 'settle', direct = true, check = new Recorder()): Promise<FileWriter> {
  await writeFile(path, prefix);
  const handle = await open(path, constants.O_RDWR | constants.O_NOFOLLOW);
  const writer = new FileWriter(handle, prefix.length, { direct, check });
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
          const check = new Recorder();
          const writer = await writeInPieces(path, prefix, data, 'finish', true, check);
          const got = await readFile(path);
          assert.equal(got.length, prefix.length + data.length, `${path}: size`);
          assert.ok(got.equals(Buffer.concat([prefix, data])), `${path}: content`);
          // The check saw every byte written in this run once, in file order, as handed to the kernel.
          assert.ok(check.all.equals(data), `${path}: check input`);
          if (writer.mode === 'direct') assert.ok(check.pieces.some((p) => p.length === 4 * MiB), `${path}: whole aligned blocks checked as written`);
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

  it('written() hands everything to the kernel (the check complete) without a flush; finish() after it adds nothing twice', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'burrow-disk-'));
    try {
      const path = join(dir, 'written');
      const data = randomBytes(4 * 1024 * 1024 + 5000);
      await writeFile(path, '');
      const handle = await open(path, constants.O_RDWR);
      const check = new Recorder();
      try {
        const writer = new FileWriter(handle, 0, { check });
        await writer.write(data);
        await writer.written();
        assert.ok(check.all.equals(data));
        assert.ok((await readFile(path)).equals(data));
        await writer.finish();
        assert.ok(check.all.equals(data), 'nothing checked twice');
      } finally {
        await handle.close();
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
      const check = new Recorder();
      const writer = await writeInPieces(path, Buffer.from('abc'), data, 'finish', false, check);
      assert.equal(writer.mode, 'buffered');
      assert.ok(check.all.equals(data), 'the check saw what was written');
      assert.ok((await readFile(path)).equals(Buffer.concat([Buffer.from('abc'), data])));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
