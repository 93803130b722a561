/**
 * `burrow send` / `burrow receive` as commands: flag and file checks before connecting, the offer and
 * its prompt (or --yes), output on a non-terminal stderr and in an 80-column pseudo-terminal,
 * FILE_EXISTS, `send -` and directories through a real rendezvous server on loopback.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, describe, it } from 'node:test';
import { displayWidth } from '../../src/cli/progress.js';
import { runReceive } from '../../src/cli/receive.js';
import { runSend, type Connect } from '../../src/cli/send.js';
import type { Io } from '../../src/cli/common.js';
import { BurrowError } from '../../src/errors.js';
import { startServer } from '../../src/node/server.js';
import type { SecureStream } from '../../src/node/secure-stream.js';
import { BURROW, runCli, startCli } from '../support/cli.js';
import { listDir, liveHandles, scratch, SECRET, securePair } from './support.js';

type TestIo = Io & { stdin?: NodeJS.ReadableStream & { isTTY?: boolean }; err: () => string; out: () => string };

function makeIo(env: NodeJS.ProcessEnv = { BURROW_SECRET: SECRET }, stdin?: NodeJS.ReadableStream & { isTTY?: boolean }): TestIo {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => (out += d.toString()));
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  return { stdout, stderr, env, signal: new AbortController().signal, out: () => out, err: () => err, ...(stdin ? { stdin } : {}) };
}

/** A stdin that says it is a terminal and answers the prompt with `answer`. */
function ttyAnswering(answer: string): PassThrough & { isTTY: boolean } {
  const stdin = Object.assign(new PassThrough(), { isTTY: true });
  setTimeout(() => stdin.write(`${answer}\n`), 300);
  return stdin;
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
    // The message and its hint, as the CLI prints them.
    const hint = (err.details as { hint?: unknown }).hint;
    assert.match(`${err.message} ${typeof hint === 'string' ? hint : ''}`, pattern);
    return true;
  });
}

const FLAGS = ['--server', '127.0.0.1:9', '--as', 'alice', '--to', 'bob'];

describe('burrow send / receive: checks before connecting', () => {
  it('send needs files or directories that exist, with distinct, safe names; - once, and --name only with -', async () => {
    const d = await scratch();
    try {
      await writeFile(join(d.dir, 'a.txt'), 'a');
      await mkdir(join(d.dir, 'sub'));
      await writeFile(join(d.dir, 'sub', 'a.txt'), 'other a');
      await writeFile(join(d.dir, 'back\\slash'), 'x');
      await usageError(runSend([...FLAGS], makeIo(), neverConnect), /missing required argument 'FILE'/);
      await usageError(runSend([join(d.dir, 'missing'), ...FLAGS], makeIo(), neverConnect), /cannot send ".*missing": no such file/);
      await usageError(runSend([join(d.dir, 'a.txt'), join(d.dir, 'sub', 'a.txt'), ...FLAGS], makeIo(), neverConnect), /would both arrive as "a\.txt"/);
      await usageError(runSend([join(d.dir, 'sub'), join(d.dir, 'sub'), ...FLAGS], makeIo(), neverConnect), /would both arrive as "sub"/);
      await usageError(runSend([join(d.dir, 'back\\slash'), ...FLAGS], makeIo(), neverConnect), /its name contains a slash or a backslash/);
      await usageError(runSend(['-', ...FLAGS], makeIo(), neverConnect), /stdin\) is not available/);
      await usageError(runSend(['-', '-', ...FLAGS], makeIo(undefined, new PassThrough()), neverConnect), /given twice/);
      await usageError(runSend([join(d.dir, 'a.txt'), '--name', 'x', ...FLAGS], makeIo(), neverConnect), /--name names what is read from stdin/);
      await usageError(runSend(['-', '--name', '../x', ...FLAGS], makeIo(undefined, new PassThrough()), neverConnect), /its name contains a slash or a backslash/);
      await usageError(runSend([join(d.dir, 'a.txt'), '--as', 'alice', '--to', 'bob'], makeIo(), neverConnect), /--server HOST:PORT is required/);
      await usageError(runSend([join(d.dir, 'a.txt'), '--server', 'x:1', '--as', 'alice'], makeIo(), neverConnect), /--to NAME is required/);
      await usageError(runSend([join(d.dir, 'a.txt'), ...FLAGS, '--timeout', 'soon'], makeIo(), neverConnect), /--timeout/);
      await usageError(runSend([join(d.dir, 'a.txt'), ...FLAGS], makeIo({}), neverConnect), /no network secret/);
    } finally {
      await d.remove();
    }
  });

  it('receive needs --yes when stdin is not a terminal (it could not ask), before connecting', async () => {
    await usageError(runReceive([...FLAGS], makeIo(), neverConnect), /asks before accepting files, but stdin is not a terminal.*--yes/);
    await usageError(runReceive([...FLAGS], makeIo(undefined, new PassThrough()), neverConnect), /--yes/);
  });

  it('receive needs an existing, writable --out directory', async () => {
    const d = await scratch();
    try {
      await writeFile(join(d.dir, 'file'), '');
      await usageError(runReceive([...FLAGS, '--yes', '--out', join(d.dir, 'nope')], makeIo(), neverConnect), /does not exist/);
      await usageError(runReceive([...FLAGS, '-y', '--out', join(d.dir, 'file')], makeIo(), neverConnect), /is not a directory/);
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
        runReceive(['--server', '127.0.0.1:9', '--as', 'bob', '--to', 'alice', '--out', out.dir, '--yes'], recvIo, connectTo(pair.receiver, 'alice')),
      ]);
      await pair.closed();
      assert.deepEqual(codes, [0, 0]);
      assert.deepEqual(await listDir(out.dir), ['a.bin', 'empty']);
      assert.deepEqual(await readFile(join(out.dir, 'a.bin')), await readFile(join(src.dir, 'a.bin')));
      assert.equal(sendIo.out() + recvIo.out(), '');
      assert.match(sendIo.err(), /^burrow: waiting for "bob" through 127\.0\.0\.1:9 \(up to 30 s\)\nburrow: connected to bob at 127\.0\.0\.1:2 directly/);
      assert.match(sendIo.err(), /burrow: sending 2 files, 97\.7 KiB\n/);
      assert.match(sendIo.err(), /burrow: a\.bin \(97\.7 KiB\): verified end to end and in place\nburrow: empty \(0 B\): verified/);
      assert.match(sendIo.err(), /burrow: sent 2 files \(97\.7 KiB\) to bob in [\d.]+ m?s \([\d.]+ [KMG]?i?B\/s\); bob verified each end to end and has it in place\n$/);
      assert.match(recvIo.err(), /burrow: alice offers:\nburrow: {3}a\.bin {2}\(97\.7 KiB\)\nburrow: {3}empty {2}\(0 B\)\nburrow: 2 files, 97\.7 KiB, into /);
      assert.match(recvIo.err(), /burrow: received 2 files \(97\.7 KiB\) from alice into .* in [\d.]+ m?s \([\d.]+ [KMG]?i?B\/s\), each verified end to end\n$/);
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
        runReceive(['--server', 'x:1', '--as', 'bob', '--to', 'alice', '--out', out.dir, '--yes'], makeIo(), connectTo(pair.receiver, 'alice')),
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
        runReceive(['--server', addr, '--as', 'bob', '--to', 'alice', '--out', out.dir, '--timeout', '10', '--yes'], makeIo()),
      ]);
      assert.deepEqual(codes, [0, 0]);
      assert.deepEqual(await readFile(join(out.dir, 'payload.bin')), data);
    } finally {
      await server.close();
      await src.remove();
      await out.remove();
    }
  });

  for (const [answer, accepted] of [['y', true], ['n', false]] as const) {
    it(`on a terminal receive shows the offer and asks; "${answer}" ${accepted ? 'accepts' : 'declines'}`, async () => {
      const src = await scratch();
      const out = await scratch();
      try {
        await mkdir(join(src.dir, 'docs'));
        await writeFile(join(src.dir, 'docs', 'a.txt'), 'hello');
        const pair = await securePair();
        const recvIo = makeIo(undefined, ttyAnswering(answer));
        const [s, r] = await Promise.allSettled([
          runSend([join(src.dir, 'docs'), ...FLAGS], makeIo(), connectTo(pair.sender, 'bob')),
          runReceive(['--server', 'x:1', '--as', 'bob', '--to', 'alice', '--out', out.dir], recvIo, connectTo(pair.receiver, 'alice')),
        ]);
        await pair.closed();
        // eslint-disable-next-line no-control-regex -- readline's cursor codes before the prompt
        assert.match(recvIo.err(), /alice offers:\nburrow: {3}docs\/ {2}\(directory\)\nburrow: {3}docs\/a\.txt {2}\(5 B\)\nburrow: 1 file, 5 B, into .*\n(\x1b\[\d*[A-Z])*burrow: accept\? \[y\/N\] /);
        if (accepted) {
          assert.deepEqual([s.status, r.status], ['fulfilled', 'fulfilled']);
          assert.equal(await readFile(join(out.dir, 'docs', 'a.txt'), 'utf8'), 'hello');
        } else {
          assert.ok(s.status === 'rejected' && r.status === 'rejected');
          assert.match(String(s.reason), /"bob" declined the transfer/);
          assert.match(String(r.reason), /you declined/);
          assert.deepEqual(await listDir(out.dir), []);
        }
      } finally {
        await src.remove();
        await out.remove();
      }
    });
  }

  it('the real binary: `send -` of stdin and a directory tree arrive identical through a rendezvous server', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET] });
    const src = await scratch();
    const out = await scratch();
    try {
      const addr = `127.0.0.1:${server.address.port}`;
      const data = randomBytes(3 * 1024 * 1024 + 11);
      const common = ['--server', addr, '--timeout', '10'];
      const receiving = runCli(['receive', ...common, '--as', 'bob', '--to', 'alice', '--out', out.dir, '--yes'], { BURROW_SECRET: SECRET });
      const sending = runCli(['send', '-', '--name', 'piped.bin', ...common, '--as', 'alice', '--to', 'bob'], { BURROW_SECRET: SECRET }, data);
      const [s, r] = await Promise.all([sending, receiving]);
      assert.equal(s.code, 0, s.stderr);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await listDir(out.dir), ['piped.bin']);
      assert.ok((await readFile(join(out.dir, 'piped.bin'))).equals(data));
      assert.match(r.stderr, /piped\.bin {2}\(stream, size unknown\)/);
    } finally {
      await server.close();
      await src.remove();
      await out.remove();
    }
  });

  it('in an 80-column pseudo-terminal the progress line fits, keeps the ETA and names the file', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET] });
    const src = await scratch();
    const out = await scratch();
    try {
      const addr = `127.0.0.1:${server.address.port}`;
      const name = 'a-file-with-a-name-long-enough-to-need-shortening-on-a-narrow-terminal.bin';
      // 256 MiB, sparse: it costs no disk to make and takes long enough to draw a few lines.
      const fh = await open(join(src.dir, name), 'w');
      await fh.truncate(256 * 1024 * 1024);
      await fh.write(randomBytes(4096), 0, 4096, 0);
      await fh.close();
      const common = `--server ${addr} --timeout 20`;
      const receiving = startCli(['receive', ...common.split(' '), '--as', 'bob', '--to', 'alice', '--out', out.dir, '--yes'], { BURROW_SECRET: SECRET });
      const env: NodeJS.ProcessEnv = { ...process.env, BURROW_SECRET: SECRET, TERM: 'xterm' };
      delete env.NODE_EXTRA_CA_CERTS;
      // script(1) runs the sender on a pseudo-terminal; stty gives it 80 columns.
      const inner = `stty cols 80 rows 24; exec "${process.execPath}" "${BURROW}" send "${join(src.dir, name)}" ${common} --as alice --to bob`;
      const sender = spawn('script', ['-qfec', inner, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      let tty = '';
      sender.stdout.on('data', (d: Buffer) => (tty += d.toString()));
      const [code] = await Promise.all([new Promise<number | null>((resolve) => sender.on('close', resolve)), receiving.done]);
      assert.equal(code, 0, tty);
      // Every state of the status line: split at carriage returns, drop the clear-to-end-of-line.
      const states = tty.split(/\r\n|\n|\r/).map((l) => l.replaceAll('\x1b[K', '')).filter((l) => /^sent \d+%/.test(l));
      assert.ok(states.length >= 2, `status lines: ${JSON.stringify(states)}\n${tty}`);
      for (const line of states) {
        assert.ok(displayWidth(line) <= 79, `wider than 80 columns: ${line}`);
        assert.match(line, /B\/s ETA (\d|\?)/, line);
        assert.match(line, /a-file-with.*…\S*terminal\.bin$/, line);
      }
      assert.ok(states.some((l) => /ETA \d+ (ms|s|min)/.test(l)), `no computed ETA in ${JSON.stringify(states)}`);
      assert.equal(createHash('sha256').update(await readFile(join(out.dir, name))).digest('hex').length, 64);
    } finally {
      await server.close();
      await src.remove();
      await out.remove();
    }
  });
});
