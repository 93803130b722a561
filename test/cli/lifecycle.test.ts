/**
 * Lifecycle honesty (issue 9, item 1) the way a new user meets it: the real `burrow` binary, a real `burrow serve`, real
 * sockets and real signals on loopback.
 *
 * - carol ends (--timeout 1, SIGINT, SIGKILL); dave, started 1-3 s later with --timeout 8, exits 4 saying that carol
 *   left or never registered, never 5 (the firewall diagnosis).
 * - A second `--as alice` replaces the first, which is told so and exits 13.
 * - `send` facing `punch` (or `pipe`) is reported on both sides (exit 15), with what to run instead; no raw bytes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeMessage } from '../../src/codec/messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { startCli, startServe, type CliRun } from '../support/cli.js';
import { registerRequest } from '../support/shapes.js';

const SECRET = 'lifecycle test secret, long enough';
const ENV = { BURROW_SECRET: SECRET };
let server: Awaited<ReturnType<typeof startServe>>;
let dir = '';

before(async () => {
  server = await startServe(SECRET);
  dir = await mkdtemp(join(tmpdir(), 'burrow-life-'));
});
after(async () => {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});

function punch(as: string, to: string, timeout: number, extra: string[] = []): ReturnType<typeof startCli> {
  return startCli(['punch', '--server', server.address, '--as', as, '--to', to, '--timeout', String(timeout), ...extra], ENV);
}

/** The error line of a failed run. */
function errorLine(r: CliRun): string {
  return r.stderr.split('\n').find((l) => l.startsWith('burrow: error:')) ?? `(no error line; stderr: ${r.stderr})`;
}

interface Case {
  readonly how: 'timeout' | 'SIGINT' | 'SIGKILL';
  readonly daveAfterMs: number;
}

/** carol starts, ends as `how`; dave starts `daveAfterMs` after carol's end with --timeout 8. Returns both runs. */
async function scenario(c: Case, carolName: string, daveName: string): Promise<{ carol: CliRun; dave: CliRun }> {
  const carol = punch(carolName, daveName, c.how === 'timeout' ? 1 : 30);
  await carol.waitFor('registered with the server', 10_000);
  if (c.how === 'SIGINT') carol.child.kill('SIGINT');
  if (c.how === 'SIGKILL') carol.child.kill('SIGKILL');
  const carolRun = await carol.done;
  await sleep(c.daveAfterMs);
  const dave = await punch(daveName, carolName, 8).done;
  return { carol: carolRun, dave };
}

describe('no false diagnosis: a peer that has gone is reported as gone (exit 4), never as a firewall (exit 5)', () => {
  it('carol ends by --timeout 1, SIGINT or SIGKILL; dave started 1-3 s later with --timeout 8 exits 4', async (t) => {
    const cases: Case[] = [
      { how: 'timeout', daveAfterMs: 1000 },
      { how: 'timeout', daveAfterMs: 3000 },
      { how: 'SIGINT', daveAfterMs: 1000 },
      { how: 'SIGINT', daveAfterMs: 3000 },
      { how: 'SIGKILL', daveAfterMs: 1000 },
      { how: 'SIGKILL', daveAfterMs: 2000 },
      { how: 'SIGKILL', daveAfterMs: 3000 },
    ];
    const runs = await Promise.all(cases.map((c, i) => scenario(c, `carol${i}`, `dave${i}`)));
    for (const [i, c] of cases.entries()) {
      const { carol, dave } = runs[i]!;
      const label = `carol ${c.how}, dave ${c.daveAfterMs} ms later`;
      t.diagnostic(`${label}: carol exit ${String(carol.code ?? carol.signal)}, dave exit ${String(dave.code)} in ${dave.ms} ms: ${errorLine(dave)}`);
      if (c.how === 'timeout') assert.equal(carol.code, 4, `${label}: ${errorLine(carol)}`);
      if (c.how === 'SIGINT') assert.equal(carol.code, 130, label);
      if (c.how === 'SIGKILL') assert.equal(carol.signal, 'SIGKILL', label);
      assert.notEqual(dave.code, 5, `${label}: the firewall diagnosis: ${errorLine(dave)}`);
      assert.equal(dave.code, 4, `${label}: ${errorLine(dave)}`);
      assert.match(errorLine(dave), new RegExp(`carol${i} registered but left before a path was found|"carol${i}" did not appear .* never registered`), label);
      if (c.how !== 'SIGKILL') {
        // carol withdrew: dave never even meets her registration.
        assert.match(errorLine(dave), /never registered/, label);
      }
    }
  });

  it('carol registered and vanished while dave waits (killed without a word): dave says she left, as JSON too (PEER_LEFT, exit 4)', async () => {
    // On loopback two real peers connect within milliseconds, so this carol is a bare socket that registers exactly as
    // `burrow punch` does (MODE punch, REFRESH-INTERVAL 2 s) and then goes silent, as a killed process does.
    const dave = startCli(['punch', '--server', server.address, '--as', 'dave-w', '--to', 'carol-w', '--timeout', '20', '--format', 'json'], ENV);
    await dave.waitFor('registered with the server', 10_000);
    const carol = await silentPeer('carol-w', 'dave-w');
    const r = await dave.done;
    assert.equal(r.code, 4, r.stderr);
    const parsed = JSON.parse(r.stdout.trim()) as { error: { code: string; exitCode: number; message: string } };
    assert.equal(parsed.error.code, 'PEER_LEFT');
    assert.equal(parsed.error.exitCode, 4);
    assert.match(parsed.error.message, /^carol-w registered but left before a path was found/);
    // Her registration lived 3 refresh periods (6 s); dave's next refresh (every 2 s while checking) learnt it.
    assert.ok(r.ms > 5000 && r.ms < 12_000, `dave took ${r.ms} ms`);
    carol.close();
  });

  it('carol withdraws after the introduction (her REPORT): dave hears it at once and says she left (exit 4)', async () => {
    const dave = punch('dave-r', 'carol-r', 20);
    await dave.waitFor('registered with the server', 10_000);
    const carol = await silentPeer('carol-r', 'dave-r');
    await dave.waitFor('found carol-r', 10_000);
    const at = Date.now();
    await carol.withdraw();
    const r = await dave.done;
    assert.equal(r.code, 4, r.stderr);
    assert.match(errorLine(r), /carol-r registered but left before a path was found: it ended its attempt/);
    assert.ok(Date.now() - at < 2000, `dave took ${Date.now() - at} ms after the withdrawal`);
    carol.close();
  });
});

/** A peer that registers once, as `burrow punch` does, and then says nothing more (unless told to withdraw). */
async function silentPeer(name: string, target: string): Promise<{ withdraw: () => Promise<void>; close: () => void }> {
  const keys = deriveNetworkKeys(Buffer.from(SECRET));
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const [host, port] = [server.address.slice(0, server.address.lastIndexOf(':')), Number(server.address.slice(server.address.lastIndexOf(':') + 1))];
  const nonce = randomBytes(16);
  const send = (data: Uint8Array): Promise<void> => new Promise((resolve) => { socket.send(data, port, host, () => { resolve(); }); });
  const answered = new Promise<void>((resolve) => socket.once('message', () => { resolve(); }));
  await send(registerRequest(keys, { name, target, timestamp: Date.now(), nonce, mode: 'punch', refreshMs: 2000 }));
  await answered;
  return {
    withdraw: () => send(encodeMessage({ kind: 'report', txid: randomBytes(12), networkId: keys.networkId, name, sessionNonce: nonce, timestamp: Date.now(), outcome: 'withdrawn' }, { key: keys.clientToServer })),
    close: () => { socket.close(); },
  };
}

describe('a second live registration under the same name', () => {
  it('the first alice is told she was replaced and exits 13; the second goes on', async () => {
    const first = punch('alice', 'bob', 20);
    await first.waitFor('registered with the server', 10_000);
    const second = punch('alice', 'bob', 3, ['--format', 'json']);
    const r1 = await first.done;
    assert.equal(r1.code, 13, r1.stderr);
    assert.match(errorLine(r1), /replaced: another peer registered as "alice"/);
    assert.match(r1.stderr, /burrow: hint: .*give each peer its own --as name/);
    const r2 = await second.done;
    assert.equal(r2.code, 4, 'the second alice waited for bob until its own timeout');
    assert.ok(r1.ms < r2.ms);
  });

  it('with --format json the displaced side prints DISPLACED with exit code 13', async () => {
    const first = punch('alice-j', 'bob', 20, ['--format', 'json']);
    await first.waitFor('registered with the server', 10_000);
    const second = punch('alice-j', 'bob', 1);
    const r1 = await first.done;
    const parsed = JSON.parse(r1.stdout.trim()) as { error: { code: string; exitCode: number } };
    assert.deepEqual([r1.code, parsed.error.code, parsed.error.exitCode], [13, 'DISPLACED', 13]);
    await second.done;
  });
});

describe('a second live registration under the same name, over TCP', () => {
  it('pipe: the first alice is told she was replaced and exits 13', async () => {
    const first = startCli(['pipe', '--server', server.address, '--as', 'alice-t', '--to', 'bob-t', '--timeout', '20'], ENV, Buffer.alloc(0));
    await sleep(1000); // the TCP commands print nothing until they connect
    const second = startCli(['pipe', '--server', server.address, '--as', 'alice-t', '--to', 'bob-t', '--timeout', '2'], ENV, Buffer.alloc(0));
    const r1 = await first.done;
    assert.equal(r1.code, 13, r1.stderr);
    assert.match(errorLine(r1), /replaced: another peer registered as "alice-t"/);
    assert.equal((await second.done).code, 4);
  });
});

describe('both sides say what they run', () => {
  it('send facing punch: both sides report the mismatch (exit 15) and what to run instead', async () => {
    const file = join(dir, 'hello.txt');
    await writeFile(file, 'hello\n');
    const send = startCli(['send', file, '--server', server.address, '--as', 'carol-m', '--to', 'dave-m', '--timeout', '10'], ENV);
    await send.waitFor('waiting for', 10_000);
    const p = await punch('dave-m', 'carol-m', 10).done;
    const s = await send.done;
    assert.equal(p.code, 15, p.stderr);
    assert.equal(s.code, 15, s.stderr);
    assert.match(errorLine(p), /carol-m is running `send`; run `receive` here/);
    assert.match(errorLine(s), /dave-m is running `punch`; run `punch` here/);
    assert.match(s.stderr, /hint: run `burrow punch --as carol-m --to dave-m` here, or have dave-m run `burrow receive`/);
    assert.doesNotMatch(errorLine(p), /never registered/);
  });

  it('pipe facing send: the pipe prints no protocol bytes, and both sides say what the other runs', async () => {
    const file = join(dir, 'data.bin');
    await writeFile(file, Buffer.alloc(4096, 7));
    const send = startCli(['send', file, '--server', server.address, '--as', 'carol-p', '--to', 'dave-p', '--timeout', '10'], ENV);
    await send.waitFor('waiting for', 10_000);
    const pipe = await startCli(['pipe', '--server', server.address, '--as', 'dave-p', '--to', 'carol-p', '--timeout', '10'], ENV, Buffer.alloc(0)).done;
    const s = await send.done;
    assert.equal(pipe.code, 15, pipe.stderr);
    assert.equal(pipe.stdoutBytes.length, 0, 'raw bytes on stdout');
    assert.equal(s.code, 15, s.stderr);
    assert.match(errorLine(pipe), /carol-p is running `send`; run `receive` here/);
    assert.match(errorLine(s), /dave-p is running `pipe`; run `pipe` here/);
  });
});
