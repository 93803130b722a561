/**
 * sendEntries/receiveFiles end to end over real encrypted streams on loopback: files, directory trees
 * with modes and empty directories, stdin, --force, refusals, interruptions (the partial file kept and
 * resumed), tampering, unsafe paths and symbolic-link tricks; nothing partial under a final name, no
 * leaked sockets or timers.
 */
import { exitCodeFor } from '../../src/cli/exit-codes.js';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, describe, it } from 'node:test';
import { BurrowError } from '../../src/errors.js';
import { decodeFrame, encodeFrame, FrameType, type ManifestEntry } from '../../src/transfer/codec.js';
import type { TransferEvent, TransferSummary } from '../../src/transfer/driver.js';
import { isTemporaryName, partNameOf, receiveFiles, type ReceiveOptions } from '../../src/transfer/receive.js';
import { prepareSend, sendEntries, type SendEntry } from '../../src/transfer/send.js';
import { listDir, liveHandles, scratch, securePair } from './support.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const MIB = 1024 * 1024;

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
  const prepared = await prepareSend(Object.keys(files).map((n) => join(src.dir, n)));
  return {
    src: src.dir,
    out: out.dir,
    entries: prepared.entries,
    remove: async () => {
      await src.remove();
      await out.remove();
    },
  };
}

/** Both sides over a fresh loopback pair. */
async function transfer(entries: readonly SendEntry[], receive: Omit<ReceiveOptions, 'peer'>, send: { signal?: AbortSignal; onEvent?: (e: TransferEvent) => void } = {}): Promise<[TransferSummary, TransferSummary]> {
  const pair = await securePair();
  try {
    return await Promise.all([sendEntries(pair.sender, { entries, peer: 'bob', ...send }), receiveFiles(pair.receiver, { peer: 'alice', ...receive })]);
  } finally {
    await pair.closed();
  }
}

/** Every path under `dir` with its kind, mode and SHA-256, for comparing trees. */
async function tree(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name);
    const info = await lstat(path);
    const rel = prefix === '' ? name : `${prefix}/${name}`;
    if (info.isDirectory()) {
      out.push(`${rel}/ ${(info.mode & 0o777).toString(8)}`);
      out.push(...(await tree(path, rel)));
    } else {
      out.push(`${rel} ${(info.mode & 0o777).toString(8)} ${sha(await readFile(path))}`);
    }
  }
  return out;
}

describe('file transfer v3 over a loopback SecureStream', () => {
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
      'ünïcode-名前.bin': { data: randomBytes(3 * MIB + 5), mode: 0o640 },
    };
    const f = await fixture(contents);
    try {
      const sent: TransferEvent[] = [];
      const received: TransferEvent[] = [];
      const [s, r] = await transfer(f.entries, { outDir: f.out, onEvent: (e) => received.push(e) }, { onEvent: (e) => sent.push(e) });
      assert.deepEqual(await listDir(f.out), Object.keys(contents).sort());
      for (const [name, c] of Object.entries(contents)) {
        const path = join(f.out, name);
        assert.equal(sha(await readFile(path)), sha(c.data), name);
        assert.equal((await stat(path)).mode & 0o777, c.mode, `${name} mode`);
      }
      const total = Object.values(contents).reduce((n, c) => n + c.data.length, 0);
      for (const summary of [s, r]) {
        assert.equal(summary.bytes, total);
        assert.equal(summary.sentBytes, total);
        assert.equal(summary.resumedBytes, 0);
      }
      assert.deepEqual(s.files.map((x) => x.check), r.files.map((x) => x.check), 'both sides computed the same check');
      assert.equal(new Set(r.files.map((x) => x.check)).size, r.files.length, 'one check per file (keyed by its index)');
      assert.deepEqual(r.files.map((x) => x.source), Object.keys(contents).map((n) => join(f.out, n)));
      for (const events of [sent, received]) {
        assert.equal(events[0]?.type, 'start');
        assert.deepEqual(events.flatMap((e) => (e.type === 'file-done' ? [e.path] : [])), Object.keys(contents));
        assert.deepEqual(events.flatMap((e) => (e.type === 'file-start' ? [e.path] : [])), Object.keys(contents));
        const last = events.filter((e) => e.type === 'progress').at(-1);
        assert.deepEqual(last, { type: 'progress', bytes: total, totalBytes: total });
      }
    } finally {
      await f.remove();
    }
  });

  it('a directory of 200 files in nested folders, with modes and an empty folder, arrives identical', async () => {
    const src = await scratch();
    const out = await scratch();
    try {
      const root = join(src.dir, 'project');
      await mkdir(root);
      const dirs = ['', 'a', 'a/b', 'a/b/c', 'd', 'd/e', 'd/e/f', 'd/e/f/g'];
      for (const d of dirs.slice(1)) await mkdir(join(root, d), { recursive: true });
      await mkdir(join(root, 'empty'));
      await mkdir(join(root, 'a', 'empty too'));
      await chmod(join(root, 'd'), 0o750);
      await chmod(join(root, 'empty'), 0o711);
      for (let i = 0; i < 200; i++) {
        const where = dirs[i % dirs.length] ?? '';
        const path = join(root, where, `file-${String(i).padStart(3, '0')}${i % 7 === 0 ? '.sh' : '.dat'}`);
        await writeFile(path, randomBytes(i % 10 === 0 ? 300_000 + i : i * 37));
        await chmod(path, [0o644, 0o600, 0o755, 0o640, 0o444][i % 5] ?? 0o644);
      }
      const prepared = await prepareSend([root]);
      assert.deepEqual(prepared.skipped, []);
      assert.equal(prepared.entries.filter((e) => e.kind === 'file').length, 200);
      const [s, r] = await transfer(prepared.entries, { outDir: out.dir });
      assert.deepEqual(await tree(join(out.dir, 'project')), await tree(root));
      assert.equal((await stat(join(out.dir, 'project', 'empty'))).mode & 0o777, 0o711);
      assert.equal((await stat(join(out.dir, 'project', 'd'))).mode & 0o777, 0o750);
      assert.equal(s.files.length, 200);
      assert.equal(r.directories, 10); // project, a, a/b, a/b/c, a/empty too, d, d/e, d/e/f, d/e/f/g, empty
      assert.deepEqual((await readdir(out.dir, { recursive: true })).filter((n) => isTemporaryName(n.split('/').at(-1) ?? '')), []);
    } finally {
      await src.remove();
      await out.remove();
    }
  });

  it('stdin (send -) arrives identical under its name, however it is chunked', async () => {
    const out = await scratch();
    try {
      const data = randomBytes(5 * MIB + 123);
      const stdin = new PassThrough();
      const prepared = await prepareSend(['-'], { stdin, stdinName: 'backup.tar' });
      assert.deepEqual(prepared.entries.map((e) => [e.kind, e.path]), [['stream', 'backup.tar']]);
      const feeding = (async () => {
        for (let at = 0; at < data.length;) {
          const n = [1, 100, 65_536, 2 * MIB, 7][at % 5] ?? 1;
          if (!stdin.write(data.subarray(at, at + n))) await new Promise((r) => stdin.once('drain', r));
          at += n;
        }
        stdin.end();
      })();
      const events: TransferEvent[] = [];
      const [s, r] = await transfer(prepared.entries, { outDir: out.dir, onEvent: (e) => events.push(e) });
      await feeding;
      assert.deepEqual(await listDir(out.dir), ['backup.tar']);
      assert.equal(sha(await readFile(join(out.dir, 'backup.tar'))), sha(data));
      assert.equal(s.bytes, data.length);
      assert.match(r.files[0]?.check ?? '', /^[0-9a-f]{32}$/);
      assert.equal(r.files[0]?.check, s.files[0]?.check);
      assert.deepEqual(events[0], { type: 'start', entries: [{ kind: 'stream', path: 'backup.tar', size: 0, mode: 0o644 }], totalBytes: undefined, resumedBytes: 0 });
    } finally {
      await out.remove();
    }
  });

  it('prepareSend: "." and "dir/" are sent under the directory’s own name', async () => {
    const src = await scratch();
    const cwd = process.cwd();
    try {
      const root = join(src.dir, 'named');
      await mkdir(root);
      await writeFile(join(root, 'a'), 'a');
      process.chdir(root);
      assert.deepEqual((await prepareSend(['.'])).entries.map((e) => e.path), ['named', 'named/a']);
      assert.deepEqual((await prepareSend([`${root}/`])).entries.map((e) => e.path), ['named', 'named/a']);
    } finally {
      process.chdir(cwd);
      await src.remove();
    }
  });

  it('prepareSend: skips and reports symbolic links and special files inside a directory, never follows them', async () => {
    const src = await scratch();
    try {
      const root = join(src.dir, 'd');
      await mkdir(root);
      await writeFile(join(root, 'real.txt'), 'real');
      await symlink('/etc/passwd', join(root, 'passwd-link'));
      await symlink('..', join(root, 'up'));
      await writeFile(join(root, 'back\\slash'), 'x');
      const p = await prepareSend([root]);
      assert.deepEqual(p.entries.map((e) => e.path), ['d', 'd/real.txt']);
      assert.deepEqual(p.skipped.map((s) => [s.source.slice(root.length + 1), s.why]).sort(), [
        ['back\\slash', 'its path contains a slash or a backslash'],
        ['passwd-link', 'a symbolic link (not followed)'],
        ['up', 'a symbolic link (not followed)'],
      ]);
    } finally {
      await src.remove();
    }
  });

  it('refuses to overwrite an existing file without force, on both sides, before any data moves', async () => {
    const f = await fixture({ 'a.txt': { data: Buffer.from('new a') }, 'b.txt': { data: randomBytes(500_000) } });
    try {
      await writeFile(join(f.out, 'b.txt'), 'old b');
      const pair = await securePair();
      let progress = 0;
      const [se, re] = await Promise.all([
        rejection(sendEntries(pair.sender, { entries: f.entries, peer: 'bob', onEvent: (e) => { if (e.type === 'progress') progress++; } })),
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
      await transfer(f.entries, { outDir: f.out, force: true });
      assert.deepEqual(await listDir(f.out), ['b.txt']);
      assert.equal(sha(await readFile(join(f.out, 'b.txt'))), sha(data));
      assert.equal((await stat(join(f.out, 'b.txt'))).mode & 0o777, 0o700);
    } finally {
      await f.remove();
    }
  });

  it('declining at the prompt writes nothing and tells the sender; confirm sees the offer', async () => {
    const f = await fixture({ 'a.txt': { data: Buffer.from('a') } });
    try {
      const pair = await securePair();
      let seen: unknown;
      const [se, re] = await Promise.all([
        rejection(sendEntries(pair.sender, { entries: f.entries, peer: 'bob' })),
        rejection(receiveFiles(pair.receiver, { outDir: f.out, peer: 'alice', confirm: (incoming) => { seen = incoming; return false; } })),
      ]);
      await pair.closed();
      assert.deepEqual(seen, { entries: [{ kind: 'file', path: 'a.txt', size: 1, mode: 0o644 }], totalBytes: 1, resumable: [] });
      assert.ok(exitCodeFor(se.code) === 1 && exitCodeFor(re.code) === 1);
      assert.equal(re.code, 'ABORTED');
      assert.match(re.message, /you declined/);
      assert.match(se.message, /"bob" declined the transfer/);
      assert.deepEqual(await listDir(f.out), []);
    } finally {
      await f.remove();
    }
  });

  it('does not replace a file that appears under the name during the transfer (checked again at rename)', async () => {
    const f = await fixture({ 'late.bin': { data: randomBytes(300_000) } });
    try {
      const late = join(f.out, 'late.bin');
      const pair = await securePair();
      const [se, re] = await Promise.all([
        rejection(sendEntries(pair.sender, { entries: f.entries, peer: 'bob' })),
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
    } finally {
      await f.remove();
    }
  });

  it('interrupted mid-file: verified files stay, the partial one is kept hidden, and the next run resumes it', async () => {
    const big = randomBytes(12 * MIB);
    const f = await fixture({ 'first.bin': { data: randomBytes(1000) }, 'big.bin': { data: big, mode: 0o640 } });
    try {
      const pair = await securePair();
      let broke = false;
      const [se, re] = await Promise.all([
        rejection(sendEntries(pair.sender, { entries: f.entries, peer: 'bob' })),
        rejection(receiveFiles(pair.receiver, {
          outDir: f.out,
          peer: 'alice',
          onEvent: (e) => {
            if (e.type === 'progress' && e.bytes > 5 * MIB && !broke) {
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
      // The first file was complete and verified; the broken one is only a hidden partial file,
      // holding a prefix of the real data.
      const part = partNameOf('big.bin');
      assert.deepEqual(await listDir(f.out), [part, 'first.bin']);
      const kept = await readFile(join(f.out, part));
      assert.ok(kept.length > 4 * MIB && kept.length < big.length, `kept ${kept.length}`);
      assert.ok(kept.equals(big.subarray(0, kept.length)), 'the partial file is not a prefix of the real data');
      assert.equal((await stat(join(f.out, part))).mode & 0o777, 0o600);

      // The same send again: first.bin is already there (identical, so skipped), big.bin resumes
      // after the kept prefix.
      const offered: unknown[] = [];
      const [s, r] = await transfer(f.entries, { outDir: f.out, confirm: (i) => { offered.push(...i.resumable); return true; } });
      assert.deepEqual(offered, [{ path: 'first.bin', bytes: 1000, complete: true }, { path: 'big.bin', bytes: kept.length, complete: false }]);
      assert.equal(s.resumedBytes, 1000 + kept.length);
      assert.equal(s.sentBytes, big.length - kept.length);
      assert.equal(r.resumedBytes, 1000 + kept.length);
      assert.equal(r.files[0]?.resumedFrom, 1000);
      const got = r.files[1];
      assert.ok(got);
      assert.equal(got.resumedFrom, kept.length);
      assert.equal(got.check, s.files[1]?.check);
      assert.deepEqual(await listDir(f.out), ['big.bin', 'first.bin']);
      assert.equal(sha(await readFile(join(f.out, 'big.bin'))), sha(big));
      assert.equal((await stat(join(f.out, 'big.bin'))).mode & 0o777, 0o640);
    } finally {
      await f.remove();
    }
  });

  it('a file of the same name and size but other contents is not taken for the sender’s: FILE_EXISTS, or replaced with force', async () => {
    const data = randomBytes(100_000);
    const f = await fixture({ 'same-size.bin': { data } });
    try {
      await writeFile(join(f.out, 'same-size.bin'), randomBytes(100_000));
      const pair = await securePair();
      const [se, re] = await Promise.all([
        rejection(sendEntries(pair.sender, { entries: f.entries, peer: 'bob' })),
        rejection(receiveFiles(pair.receiver, { outDir: f.out, peer: 'alice' })),
      ]);
      await pair.closed();
      assert.equal(re.code, 'FILE_EXISTS');
      assert.equal(se.code, 'FILE_EXISTS');
      assert.notEqual(sha(await readFile(join(f.out, 'same-size.bin'))), sha(data));
      const [s] = await transfer(f.entries, { outDir: f.out, force: true });
      assert.equal(s.sentBytes, data.length);
      assert.equal(sha(await readFile(join(f.out, 'same-size.bin'))), sha(data));
      // And once identical, a third run sends nothing again.
      const [s3] = await transfer(f.entries, { outDir: f.out });
      assert.equal(s3.sentBytes, 0);
      assert.equal(s3.resumedBytes, data.length);
    } finally {
      await f.remove();
    }
  });

  it('a kept partial file that does not match the sender’s file is not resumed: it is sent whole', async () => {
    const data = randomBytes(3 * MIB);
    const f = await fixture({ 'x.bin': { data } });
    try {
      const wrong = Buffer.from(data.subarray(0, MIB));
      wrong[500] = (wrong[500] ?? 0) ^ 1;
      await writeFile(join(f.out, partNameOf('x.bin')), wrong);
      const [s, r] = await transfer(f.entries, { outDir: f.out });
      assert.equal(s.resumedBytes, 0);
      assert.equal(s.sentBytes, data.length);
      assert.equal(r.resumedBytes, 0);
      assert.deepEqual(await listDir(f.out), ['x.bin']);
      assert.equal(sha(await readFile(join(f.out, 'x.bin'))), sha(data));
    } finally {
      await f.remove();
    }
  });

  it('leftover partial files of other transfers are reported and removed after success; a symlinked one is never read', async () => {
    const f = await fixture({ 'new.txt': { data: Buffer.from('new') } });
    try {
      await writeFile(join(f.out, '.burrow-0123456789abcdef.part'), Buffer.alloc(1000));
      await symlink('/etc/passwd', join(f.out, partNameOf('new.txt')));
      const events: TransferEvent[] = [];
      const [s] = await transfer(f.entries, { outDir: f.out, onEvent: (e) => events.push(e) });
      assert.equal(s.resumedBytes, 0);
      assert.deepEqual(events.filter((e) => e.type === 'leftover-removed'), [{ type: 'leftover-removed', path: join(f.out, '.burrow-0123456789abcdef.part'), bytes: 1000 }]);
      assert.deepEqual(await listDir(f.out), ['new.txt']);
    } finally {
      await f.remove();
    }
  });

  it('aborts on a flipped byte (STREAM_TAMPERED): nothing under a final name, and the kept part holds no altered byte', async () => {
    const data = randomBytes(4 * MIB);
    const f = await fixture({ 'data.bin': { data } });
    try {
      const pair = await securePair({ flipAt: 2 * MIB });
      const [se, re] = await Promise.all([
        rejection(sendEntries(pair.sender, { entries: f.entries, peer: 'bob' })),
        rejection(receiveFiles(pair.receiver, { outDir: f.out, peer: 'alice' })),
      ]);
      await pair.closed();
      assert.equal(re.code, 'STREAM_TAMPERED', re.message);
      assert.ok(se.code === 'STREAM_BROKEN' || se.code === 'STREAM_TAMPERED', se.message);
      const names = await listDir(f.out);
      assert.ok(!names.includes('data.bin'));
      for (const n of names) {
        const kept = await readFile(join(f.out, n));
        assert.ok(kept.equals(data.subarray(0, kept.length)), 'altered data reached the disk');
        assert.ok(kept.length < 2 * MIB);
      }
    } finally {
      await f.remove();
    }
  });

  for (const side of ['receiver', 'sender'] as const) {
    it(`stops cleanly when the ${side}’s signal aborts mid-file (SIGINT), keeping only a hidden verified prefix`, async () => {
      const data = randomBytes(8 * MIB);
      const f = await fixture({ 'big.bin': { data } });
      try {
        const pair = await securePair();
        const stop = new AbortController();
        const onEvent = (e: TransferEvent): void => {
          if (e.type === 'progress' && e.bytes > MIB) stop.abort();
        };
        const mine = side === 'sender' ? { signal: stop.signal, onEvent } : {};
        const theirs = side === 'receiver' ? { signal: stop.signal, onEvent } : {};
        const [se, re] = await Promise.all([
          rejection(sendEntries(pair.sender, { entries: f.entries, peer: 'bob', ...mine })),
          rejection(receiveFiles(pair.receiver, { outDir: f.out, peer: 'alice', ...theirs })),
        ]);
        await pair.closed();
        assert.equal((side === 'sender' ? se : re).code, 'ABORTED');
        assert.equal((side === 'sender' ? re : se).code, 'STREAM_BROKEN');
        const names = await listDir(f.out);
        assert.ok(names.every(isTemporaryName), names.join());
        for (const n of names) assert.ok((await readFile(join(f.out, n))).equals(data.subarray(0, (await stat(join(f.out, n))).size)));
      } finally {
        await f.remove();
      }
    });
  }

  /** A hostile (but authenticated) sender: frames made by hand, as the encoder refuses such manifests. */
  function rawManifest(entries: { kind: number; path: string; size?: bigint; mode?: number }[], version = 3): Buffer {
    const parts = entries.map((e) => {
      const p = Buffer.from(e.path);
      const b = Buffer.alloc(3 + p.length + 10);
      b.writeUInt8(e.kind, 0);
      b.writeUInt16BE(p.length, 1);
      p.copy(b, 3);
      b.writeBigUInt64BE(e.size ?? 0n, 3 + p.length);
      b.writeUInt16BE(e.mode ?? 0o644, 3 + p.length + 8);
      return b;
    });
    const count = Buffer.alloc(4);
    count.writeUInt32BE(entries.length);
    // Version 2 (the previous release) had no check key.
    const payload = Buffer.concat([Buffer.from('BRWF'), Buffer.from([version]), version === 3 ? Buffer.alloc(32, 9) : Buffer.alloc(0), count, ...parts]);
    const header = Buffer.from([FrameType.MANIFEST, 0, 0, 0, 0]);
    header.writeUInt32BE(payload.length, 1);
    return Buffer.concat([header, payload]);
  }

  for (const [what, path, pattern] of [
    ['a path with ..', '../escaped.txt', /has a "\.\." component/],
    ['an absolute path', '/tmp/escaped.txt', /empty component/],
    ['a Windows path', '..\\escaped.txt', /a slash or a backslash/],
  ] as const) {
    it(`refuses a manifest with ${what}, and tells the sender`, async () => {
      const out = await scratch();
      try {
        const pair = await securePair();
        pair.sender.write(rawManifest([{ kind: 0, path }]));
        const answer = new Promise<Buffer>((resolve) => pair.sender.once('data', resolve));
        const re = await rejection(receiveFiles(pair.receiver, { outDir: out.dir, peer: 'alice', lingerMs: 200 }));
        assert.equal(re.code, 'FILE_FAILED');
        assert.match(re.message, pattern);
        assert.equal((await answer)[0], FrameType.FAIL);
        pair.sender.destroy();
        await pair.closed();
        assert.deepEqual(await listDir(out.dir), []);
      } finally {
        await out.remove();
      }
    });
  }

  it('refuses a manifest of transfer protocol version 2 (the previous release) with a clear message, and tells the sender', async () => {
    const out = await scratch();
    try {
      const pair = await securePair();
      pair.sender.write(rawManifest([{ kind: 0, path: 'old.txt', size: 3n }], 2));
      const answer = new Promise<Buffer>((resolve) => pair.sender.once('data', resolve));
      const re = await rejection(receiveFiles(pair.receiver, { outDir: out.dir, peer: 'alice', lingerMs: 200 }));
      assert.equal(re.code, 'STREAM_BROKEN');
      assert.match(re.message, /another version of the transfer protocol \(update both sides\)/);
      const fail = decodeFrame(await answer);
      assert.ok(fail.ok && fail.frame.type === 'fail');
      assert.equal(fail.frame.reason, 'protocol');
      pair.sender.destroy();
      await pair.closed();
      assert.deepEqual(await listDir(out.dir), []);
    } finally {
      await out.remove();
    }
  });

  it('never writes through a symbolic link in --out: a directory entry that is a symlink is refused', async () => {
    const out = await scratch();
    const elsewhere = await scratch();
    try {
      await symlink(elsewhere.dir, join(out.dir, 'docs'));
      const src = await scratch();
      try {
        await mkdir(join(src.dir, 'docs'));
        await writeFile(join(src.dir, 'docs', 'secret.txt'), 'x');
        const prepared = await prepareSend([join(src.dir, 'docs')]);
        const pair = await securePair();
        const [se, re] = await Promise.all([
          rejection(sendEntries(pair.sender, { entries: prepared.entries, peer: 'bob' })),
          rejection(receiveFiles(pair.receiver, { outDir: out.dir, peer: 'alice' })),
        ]);
        await pair.closed();
        assert.equal(re.code, 'FILE_EXISTS');
        assert.match(re.message, /should be a directory, but it is a symbolic link/);
        assert.equal(se.code, 'FILE_EXISTS');
        assert.deepEqual(await listDir(elsewhere.dir), [], 'wrote through the symlink');
      } finally {
        await src.remove();
      }
    } finally {
      await out.remove();
      await elsewhere.remove();
    }
  });

  it('discards a file whose check does not match the sender’s (its part too), and tells the sender', async () => {
    const out = await scratch();
    try {
      const pair = await securePair();
      const entries: ManifestEntry[] = [{ kind: 'file', path: 'a', size: 3, mode: 0o644 }];
      pair.sender.write(encodeFrame({ type: 'manifest', entries, checkKey: new Uint8Array(32).fill(1) }));
      const frames: Buffer[] = [];
      pair.sender.on('data', (d: Buffer) => {
        frames.push(d);
        if (frames.length === 1) {
          pair.sender.write(encodeFrame({ type: 'file-start', index: 0, offset: 0 }));
          pair.sender.write(Buffer.concat([encodeFrame({ type: 'data', length: 3 }), Buffer.from('abc')]));
          pair.sender.write(encodeFrame({ type: 'file-end', index: 0, size: 3, check: new Uint8Array(16) }));
        }
      });
      const re = await rejection(receiveFiles(pair.receiver, { outDir: out.dir, peer: 'alice', lingerMs: 200 }));
      assert.equal(re.code, 'FILE_FAILED');
      assert.match(re.message, /did not match what the sender read/);
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

  it('stops when the sender breaks the protocol (an entry started out of order)', async () => {
    const out = await scratch();
    try {
      const pair = await securePair();
      pair.sender.write(encodeFrame({ type: 'manifest', entries: [{ kind: 'file', path: 'a', size: 3, mode: 0o644 }, { kind: 'file', path: 'b', size: 0, mode: 0o644 }], checkKey: new Uint8Array(32) }));
      pair.sender.once('data', () => {
        pair.sender.write(encodeFrame({ type: 'file-start', index: 1, offset: 0 }));
      });
      const re = await rejection(receiveFiles(pair.receiver, { outDir: out.dir, peer: 'alice', lingerMs: 200 }));
      assert.equal(re.code, 'STREAM_BROKEN');
      assert.match(re.message, /started entry 2 where entry 1 was due/);
      pair.sender.destroy();
      await pair.closed();
      assert.deepEqual(await listDir(out.dir), []);
    } finally {
      await out.remove();
    }
  });
});
