/**
 * `burrow send` / `burrow receive` as commands: flag and file checks before connecting, output on a
 * non-terminal stderr, FILE_EXISTS, and a run through a real rendezvous server on loopback.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, describe, it } from 'node:test';
import { runReceive } from '../../src/cli/receive.js';
import { runSend, type Connect } from '../../src/cli/send.js';
import type { Io } from '../../src/cli/common.js';
import { BurrowError } from '../../src/errors.js';
import { startServer } from '../../src/node/server.js';
import type { SecureStream } from '../../src/node/secure-stream.js';
import { listDir, liveHandles, scratch, SECRET, securePair } from './support.js';

function makeIo(env: NodeJS.ProcessEnv = { BURROW_SECRET: SECRET }): Io & { err: () => string; out: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => (out += d.toString()));
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  return { stdout, stderr, env, signal: new AbortController().signal, out: () => out, err: () => err };
}

const neverConnect: Connect = () => Promise.reject(new Error('must not connect'));

/** A Connect that hands out one end of a loopback pair, like connectStream after a punch. */
function connectTo(stream: SecureStream, peer: string): Connect {
  return () => Promise.resolve({
    stream,
    result: { localAddress: '127.0.0.1', localPort: 1, remoteAddress: '127.0.0.1', remotePort: 2, path: 'direct', elapsedMs: 3, peer, transport: 'tcp' },
  });
}

async function usageError(p: Promise<number>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof BurrowError, String(err));
    assert.equal(err.code, 'USAGE');
    assert.match(err.message, pattern);
    return true;
  });
}

const FLAGS = ['--server', '127.0.0.1:9', '--as', 'alice', '--to', 'bob'];

describe('burrow send / receive: checks before connecting', () => {
  it('send needs files that exist, are regular, and have distinct, safe names', async () => {
    const d = await scratch();
    try {
      await writeFile(join(d.dir, 'a.txt'), 'a');
      await mkdir(join(d.dir, 'sub'));
      await writeFile(join(d.dir, 'sub', 'a.txt'), 'other a');
      await writeFile(join(d.dir, 'x..y'), 'dots');
      await usageError(runSend([...FLAGS], makeIo(), neverConnect), /missing required argument 'FILE'/);
      await usageError(runSend([join(d.dir, 'missing'), ...FLAGS], makeIo(), neverConnect), /cannot send ".*missing": no such file/);
      await usageError(runSend([join(d.dir, 'sub'), ...FLAGS], makeIo(), neverConnect), /it is a directory.*tar/);
      await usageError(runSend([join(d.dir, 'a.txt'), join(d.dir, 'sub', 'a.txt'), ...FLAGS], makeIo(), neverConnect), /would both arrive as "a\.txt"/);
      await usageError(runSend([join(d.dir, 'x..y'), ...FLAGS], makeIo(), neverConnect), /its name contains "\.\."/);
      await usageError(runSend([join(d.dir, 'a.txt'), '--as', 'alice', '--to', 'bob'], makeIo(), neverConnect), /--server HOST:PORT is required/);
      await usageError(runSend([join(d.dir, 'a.txt'), '--server', 'x:1', '--as', 'alice'], makeIo(), neverConnect), /--to NAME is required/);
      await usageError(runSend([join(d.dir, 'a.txt'), ...FLAGS, '--timeout', 'soon'], makeIo(), neverConnect), /--timeout/);
      await usageError(runSend([join(d.dir, 'a.txt'), ...FLAGS], makeIo({}), neverConnect), /no network secret/);
    } finally {
      await d.remove();
    }
  });

  it('receive needs an existing, writable --out directory', async () => {
    const d = await scratch();
    try {
      await writeFile(join(d.dir, 'file'), '');
      await usageError(runReceive([...FLAGS, '--out', join(d.dir, 'nope')], makeIo(), neverConnect), /does not exist/);
      await usageError(runReceive([...FLAGS, '--out', join(d.dir, 'file')], makeIo(), neverConnect), /is not a directory/);
      await assert.rejects(runReceive([...FLAGS, '--bogus'], makeIo(), neverConnect), { code: 'USAGE' });
    } finally {
      await d.remove();
    }
  });
});

describe('burrow send / receive: whole runs', () => {
  const before = liveHandles().length;
  after(async () => {
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(liveHandles().length, before, `leaked: ${liveHandles().join(', ')}`);
  });

  it('exit 0 on both sides, with progress and a summary on stderr and nothing on stdout', async () => {
    const src = await scratch();
    const out = await scratch();
    try {
      await writeFile(join(src.dir, 'a.bin'), randomBytes(100_000));
      await writeFile(join(src.dir, 'empty'), '');
      const pair = await securePair();
      const sendIo = makeIo();
      const recvIo = makeIo();
      const codes = await Promise.all([
        runSend([join(src.dir, 'a.bin'), join(src.dir, 'empty'), ...FLAGS], sendIo, connectTo(pair.sender, 'bob')),
        runReceive(['--server', '127.0.0.1:9', '--as', 'bob', '--to', 'alice', '--out', out.dir], recvIo, connectTo(pair.receiver, 'alice')),
      ]);
      await pair.closed();
      assert.deepEqual(codes, [0, 0]);
      assert.deepEqual(await listDir(out.dir), ['a.bin', 'empty']);
      assert.deepEqual(await readFile(join(out.dir, 'a.bin')), await readFile(join(src.dir, 'a.bin')));
      assert.equal(sendIo.out() + recvIo.out(), '');
      assert.match(sendIo.err(), /^burrow: waiting for "bob" through 127\.0\.0\.1:9 \(up to 30 s\)\nburrow: connected to bob at 127\.0\.0\.1:2 directly/);
      assert.match(sendIo.err(), /burrow: sending 2 files, 97\.7 KiB\n/);
      assert.match(sendIo.err(), /burrow: a\.bin \(97\.7 KiB\): verified \(SHA-256\) and in place\nburrow: empty \(0 B\): verified/);
      assert.match(sendIo.err(), /burrow: sent 2 files \(97\.7 KiB\) to bob in [\d.]+ m?s \([\d.]+ [KMG]?i?B\/s\); bob verified each \(SHA-256\) and has it in place\n$/);
      assert.match(recvIo.err(), /burrow: received 2 files \(97\.7 KiB\) from alice into .* in [\d.]+ m?s \([\d.]+ [KMG]?i?B\/s\), each verified \(SHA-256\)\n$/);
    } finally {
      await src.remove();
      await out.remove();
    }
  });

  it('an existing file: receive fails with FILE_EXISTS (exit 2) and so does send, naming the file', async () => {
    const src = await scratch();
    const out = await scratch();
    try {
      await writeFile(join(src.dir, 'a.txt'), 'new');
      await writeFile(join(out.dir, 'a.txt'), 'old');
      const pair = await securePair();
      const [s, r] = await Promise.allSettled([
        runSend([join(src.dir, 'a.txt'), ...FLAGS], makeIo(), connectTo(pair.sender, 'bob')),
        runReceive(['--server', 'x:1', '--as', 'bob', '--to', 'alice', '--out', out.dir], makeIo(), connectTo(pair.receiver, 'alice')),
      ]);
      await pair.closed();
      for (const result of [s, r]) {
        assert.ok(result.status === 'rejected');
        const err: unknown = result.reason;
        assert.ok(err instanceof BurrowError);
        assert.equal(err.code, 'FILE_EXISTS');
        assert.match(err.message, /"a\.txt"|a\.txt" already exists/);
      }
      assert.equal(await readFile(join(out.dir, 'a.txt'), 'utf8'), 'old');
    } finally {
      await src.remove();
      await out.remove();
    }
  });

  it('through a real rendezvous server and connectStream on loopback', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET] });
    const src = await scratch();
    const out = await scratch();
    try {
      const data = randomBytes(2 * 1024 * 1024);
      await writeFile(join(src.dir, 'payload.bin'), data);
      const addr = `127.0.0.1:${server.address.port}`;
      const codes = await Promise.all([
        runSend([join(src.dir, 'payload.bin'), '--server', addr, '--as', 'alice', '--to', 'bob', '--timeout', '10'], makeIo()),
        runReceive(['--server', addr, '--as', 'bob', '--to', 'alice', '--out', out.dir, '--timeout', '10'], makeIo()),
      ]);
      assert.deepEqual(codes, [0, 0]);
      assert.deepEqual(await readFile(join(out.dir, 'payload.bin')), data);
    } finally {
      await server.close();
      await src.remove();
      await out.remove();
    }
  });
});
