/**
 * sendFiles/receiveFiles end to end over real encrypted streams on loopback: contents, modes, --force,
 * interruptions, tampering, unsafe names; nothing partial under a final name, no temp files, no leaks.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { BurrowError } from '../../src/errors.js';
import { decodeFrame, encodeFrame, FrameType } from '../../src/transfer/codec.js';
import type { TransferEvent } from '../../src/transfer/driver.js';
import { isTemporaryName, receiveFiles } from '../../src/transfer/receive.js';
import { prepareFiles, sendFiles } from '../../src/transfer/send.js';
import { listDir, liveHandles, scratch, securePair } from './support.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function rejection(p: Promise<unknown>): Promise<BurrowError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof BurrowError, `expected a BurrowError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a rejection');
}

/** Source files in one scratch dir, an empty output dir in another. */
async function fixture(files: Record<string, { data: Buffer; mode?: number }>) {
  const src = await scratch();
  const out = await scratch();
  for (const [name, f] of Object.entries(files)) {
    const path = join(src.dir, name);
    await writeFile(path, f.data);
    await chmod(path, f.mode ?? 0o644);
  }
  const sendList = await prepareFiles(Object.keys(files).map((n) => join(src.dir, n)));
  return {
    src: src.dir,
    out: out.dir,
    sendList,
    remove: async () => {
      await src.remove();
      await out.remove();
    },
  };
}

describe('file transfer over a loopback SecureStream', () => {
  const before = liveHandles().length;
  after(async () => {
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(liveHandles().length, before, `leaked: ${liveHandles().join(', ')}`);
  });

  it('delivers several files, including an empty one, with their modes and exact contents', async () => {
    const contents = {
      'empty.txt': { data: Buffer.alloc(0), mode: 0o600 },
      'one byte': { data: Buffer.from('x'), mode: 0o644 },
      'run.sh': { data: randomBytes(65536 + 17), mode: 0o755 },
      'ünïcode-名前.bin': { data: randomBytes(3 * 1024 * 1024 + 5), mode: 0o640 },
    };
    const f = await fixture(contents);
    try {
      const pair = await securePair();
      const sent: TransferEvent[] = [];
      const received: TransferEvent[] = [];
      const [s, r] = await Promise.all([
        sendFiles(pair.sender, { files: f.sendList, peer: 'bob', onEvent: (e) => sent.push(e) }),
        receiveFiles(pair.receiver, { outDir: f.out, peer: 'alice', onEvent: (e) => received.push(e) }),
      ]);
      await pair.closed();
      assert.deepEqual(await listDir(f.out), Object.keys(contents).sort());
      for (const [name, c] of Object.entries(contents)) {
        const path = join(f.out, name);
        assert.equal(sha(await readFile(path)), sha(c.data), name);
        assert.equal((await stat(path)).mode & 0o777, c.mode, `${name} mode`);
      }
      const total = Object.values(contents).reduce((n, c) => n + c.data.length, 0);
      assert.equal(s.bytes, total);
      assert.equal(r.bytes, total);
      assert.deepEqual(s.files.map((x) => x.sha256), r.files.map((x) => x.sha256));
      assert.deepEqual(r.files.map((x) => x.path), Object.keys(contents).map((n) => join(f.out, n)));
      for (const events of [sent, received]) {
        assert.equal(events[0]?.type, 'start');
        assert.deepEqual(events.flatMap((e) => (e.type === 'file-done' ? [e.name] : [])), Object.keys(contents));
        const last = events.filter((e) => e.type === 'progress').at(-1);
        assert.deepEqual(last, { type: 'progress', bytes: total, totalBytes: total });
      }
    } finally {
      await f.remove();
    }
  });

  it('closes both streams cleanly as soon as the transfer succeeds', async () => {
    const f = await fixture({ 'a.bin': { data: randomBytes(3 * 1024 * 1024) } });
    try {
      const pair = await securePair();
      const started = performance.now();
      await Promise.all([
        sendFiles(pair.sender, { files: f.sendList, peer: 'bob' }),
        receiveFiles(pair.receiver, { outDir: f.out, peer: 'alice', lingerMs: 3000 }),
      ]);
      await pair.closed();
      assert.equal(pair.receiver.writableFinished, true, 'the sender confirmed every report');
      assert.ok(performance.now() - started < 1500, `took ${Math.round(performance.now() - started)} ms`);
    } finally {
      await f.remove();
    }
  });

  it('refuses to overwrite an existing file without force, on both sides, before any data moves', async () => {
    const f = await fixture({ 'a.txt': { data: Buffer.from('new a') }, 'b.txt': { data: randomBytes(500_000) } });
    try {
      await writeFile(join(f.out, 'b.txt'), 'old b');
      const pair = await securePair();
      let progress = 0;
      const [se, re] = await Promise.all([
        rejection(sendFiles(pair.sender, { files: f.sendList, peer: 'bob', onEvent: (e) => { if (e.type === 'progress') progress++; } })),
        rejection(receiveFiles(pair.receiver, { outDir: f.out, peer: 'alice' })),
      ]);
      await pair.closed();
      assert.equal(re.code, 'FILE_EXISTS');
      assert.match(re.message, /b\.txt" already exists.*--force.*--out/);
      assert.equal(se.code, 'FILE_EXISTS', se.message);
      assert.match(se.message, /"bob" already has a file named "b\.txt".*--force/);
      assert.equal(progress, 0, 'no data was sent');
      assert.deepEqual(await listDir(f.out), ['b.txt']);
      assert.equal(await readFile(join(f.out, 'b.txt'), 'utf8'), 'old b');
    } finally {
      await f.remove();
    }
  });

  it('replaces existing files with force, and applies the new mode', async () => {
    const data = randomBytes(200_000);
    const f = await fixture({ 'b.txt': { data, mode: 0o700 } });
    try {
      await writeFile(join(f.out, 'b.txt'), 'old b', { mode: 0o644 });
      const pair = await securePair();
      await Promise.all([
        sendFiles(pair.sender, { files: f.sendList, peer: 'bob' }),
        receiveFiles(pair.receiver, { outDir: f.out, peer: 'alice', force: true }),
      ]);
      await pair.closed();
      assert.deepEqual(await listDir(f.out), ['b.txt']);
      assert.equal(sha(await readFile(join(f.out, 'b.txt'))), sha(data));
      assert.equal((await stat(join(f.out, 'b.txt'))).mode & 0o777, 0o700);
    } finally {
      await f.remove();
    }
  });

  it('does not replace a file that appears under the name during the transfer (checked again at rename)', async () => {
    const f = await fixture({ 'late.bin': { data: randomBytes(300_000) } });
    try {
      const pair = await securePair();
      const late = join(f.out, 'late.bin');
      const [se, re] = await Promise.all([
        rejection(sendFiles(pair.sender, { files: f.sendList, peer: 'bob' })),
        rejection(receiveFiles(pair.receiver, {
          outDir: f.out,
          peer: 'alice',
          // After the names were checked, someone else creates the file.
          onEvent: (e) => { if (e.type === 'start') writeFileSync(late, 'someone else'); },
        })),
      ]);
      await pair.closed();
      assert.equal(re.code, 'FILE_EXISTS');
      assert.equal(se.code, 'FILE_EXISTS');
      assert.equal(await readFile(late, 'utf8'), 'someone else');
      assert.deepEqual(await listDir(f.out), ['late.bin']);
    } finally {
      await f.remove();
    }
  });

  it('leaves neither a partial file nor a temporary one when the sender’s connection breaks mid-file', async () => {
    const f = await fixture({ 'first.bin': { data: randomBytes(1000) }, 'big.bin': { data: randomBytes(8 * 1024 * 1024) } });
    try {
      const pair = await securePair();
      let broke = false;
      const [se, re] = await Promise.all([
        rejection(sendFiles(pair.sender, { files: f.sendList, peer: 'bob' })),
        rejection(receiveFiles(pair.receiver, {
          outDir: f.out,
          peer: 'alice',
          onEvent: (e) => {
            if (e.type === 'progress' && e.bytes > 2 * 1024 * 1024 && !broke) {
              broke = true;
              pair.senderSocket.destroy();
            }
          },
        })),
      ]);
      await pair.closed();
      assert.equal(broke, true);
      assert.equal(re.code, 'STREAM_BROKEN', re.message);
      assert.equal(se.code, 'STREAM_BROKEN', se.message);
      // The first file was complete and verified, so it stays; the broken one left no trace.
      assert.deepEqual(await listDir(f.out), ['first.bin']);
    } finally {
      await f.remove();
    }
  });

  it('aborts on a flipped byte (STREAM_TAMPERED) and renames nothing into place', async () => {
    const f = await fixture({ 'data.bin': { data: randomBytes(4 * 1024 * 1024) } });
    try {
      const pair = await securePair({ flipAt: 1024 * 1024 });
      const [se, re] = await Promise.all([
        rejection(sendFiles(pair.sender, { files: f.sendList, peer: 'bob' })),
        rejection(receiveFiles(pair.receiver, { outDir: f.out, peer: 'alice' })),
      ]);
      await pair.closed();
      assert.equal(re.code, 'STREAM_TAMPERED', re.message);
      assert.ok(se.code === 'STREAM_BROKEN' || se.code === 'STREAM_TAMPERED', se.message);
      assert.deepEqual(await listDir(f.out), []);
    } finally {
      await f.remove();
    }
  });

  for (const side of ['receiver', 'sender'] as const) {
    it(`cleans up when the ${side}’s signal aborts mid-file (SIGINT)`, async () => {
      const f = await fixture({ 'big.bin': { data: randomBytes(8 * 1024 * 1024) } });
      try {
        const pair = await securePair();
        const stop = new AbortController();
        const onEvent = (e: TransferEvent): void => {
          if (e.type === 'progress' && e.bytes > 1024 * 1024) stop.abort();
        };
        const mine = side === 'sender' ? { signal: stop.signal, onEvent } : {};
        const theirs = side === 'receiver' ? { signal: stop.signal, onEvent } : {};
        const [se, re] = await Promise.all([
          rejection(sendFiles(pair.sender, { files: f.sendList, peer: 'bob', ...mine })),
          rejection(receiveFiles(pair.receiver, { outDir: f.out, peer: 'alice', ...theirs })),
        ]);
        await pair.closed();
        assert.equal((side === 'sender' ? se : re).code, 'ABORTED');
        assert.equal((side === 'sender' ? re : se).code, 'STREAM_BROKEN');
        assert.deepEqual(await listDir(f.out), []);
      } finally {
        await f.remove();
      }
    });
  }

  it('refuses a manifest naming a path outside the output directory, and tells the sender', async () => {
    const out = await scratch();
    try {
      const pair = await securePair();
      // A hostile (but authenticated) sender: the encoder refuses such names, so the bytes are made by hand.
      const name = Buffer.from('../escaped.txt');
      const payload = Buffer.concat([Buffer.from('BRWF'), Buffer.from([1, 0, 0, 0, 1]), Buffer.from([0, name.length]), name, Buffer.alloc(8), Buffer.from([1, 0xa4])]);
      const header = Buffer.from([FrameType.MANIFEST, 0, 0, 0, 0]);
      header.writeUInt32BE(payload.length, 1);
      pair.sender.write(Buffer.concat([header, payload]));
      const answer = new Promise<Buffer>((resolve) => pair.sender.once('data', resolve));
      const re = await rejection(receiveFiles(pair.receiver, { outDir: out.dir, peer: 'alice', lingerMs: 200 }));
      assert.equal(re.code, 'FILE_FAILED');
      assert.match(re.message, /contains a path separator/);
      assert.equal((await answer)[0], FrameType.FAIL);
      pair.sender.destroy();
      await pair.closed();
      assert.deepEqual(await listDir(out.dir), []);
    } finally {
      await out.remove();
    }
  });

  it('discards a file whose SHA-256 does not match the sender’s, and tells the sender', async () => {
    const out = await scratch();
    try {
      const pair = await securePair();
      pair.sender.write(encodeFrame({ type: 'manifest', files: [{ name: 'a', size: 3, mode: 0o644 }] }));
      pair.sender.write(Buffer.from('abc'));
      pair.sender.write(encodeFrame({ type: 'file-end', index: 0, sha256: new Uint8Array(32) }));
      const frames: Buffer[] = [];
      pair.sender.on('data', (d: Buffer) => frames.push(d));
      const re = await rejection(receiveFiles(pair.receiver, { outDir: out.dir, peer: 'alice', lingerMs: 200 }));
      assert.equal(re.code, 'FILE_FAILED');
      assert.match(re.message, /SHA-256 different from the sender's/);
      // ACCEPT, then FAIL naming the reason and the file.
      const answers = Buffer.concat(frames);
      const accept = decodeFrame(answers);
      assert.ok(accept.ok && accept.frame.type === 'accept');
      const fail = decodeFrame(answers.subarray(accept.used));
      assert.ok(fail.ok && fail.frame.type === 'fail');
      assert.equal(fail.frame.reason, 'hash-mismatch');
      assert.equal(fail.frame.index, 0);
      pair.sender.destroy();
      await pair.closed();
      assert.deepEqual(await listDir(out.dir), []);
    } finally {
      await out.remove();
    }
  });

  it('stops when the sender breaks the protocol (a FILE_END for the wrong file)', async () => {
    const out = await scratch();
    try {
      const pair = await securePair();
      pair.sender.write(encodeFrame({ type: 'manifest', files: [{ name: 'a', size: 3, mode: 0o644 }, { name: 'b', size: 0, mode: 0o644 }] }));
      pair.sender.write(Buffer.from('abc'));
      pair.sender.write(encodeFrame({ type: 'file-end', index: 1, sha256: new Uint8Array(32) }));
      const re = await rejection(receiveFiles(pair.receiver, { outDir: out.dir, peer: 'alice', lingerMs: 200 }));
      assert.equal(re.code, 'STREAM_BROKEN');
      assert.match(re.message, /ended file 2 while sending file 1/);
      pair.sender.destroy();
      await pair.closed();
      assert.deepEqual((await listDir(out.dir)).filter(isTemporaryName), []);
      assert.deepEqual(await listDir(out.dir), []);
    } finally {
      await out.remove();
    }
  });
});
