/**
 * The conventions of the CLIs people already use, on the real binary: JSON errors that carry the exit code,
 * 130/143 on SIGINT/SIGTERM, 127/126 for a handoff command that is missing or cannot run, environment
 * defaults, address hints, a word within 3 s when the server is silent, keygen --out, secret trimming and
 * warnings, and --quiet.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, startCli, startServe, type CliRun } from '../support/cli.js';

const SECRET = 'conventions test secret';
let dir = '';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-conv-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface JsonError {
  error: { code: string; exitCode: number; message: string; hint: string };
}

/** stdout must be exactly one JSON error object whose exitCode is the process's. */
function jsonError(r: CliRun): JsonError['error'] {
  const lines = r.stdout.split('\n').filter((l) => l.length > 0);
  assert.equal(lines.length, 1, `one line on stdout, got: ${r.stdout}`);
  const parsed = JSON.parse(lines[0]!) as JsonError;
  assert.deepEqual(Object.keys(parsed), ['error']);
  assert.equal(parsed.error.exitCode, r.code);
  assert.equal(typeof parsed.error.message, 'string');
  assert.equal(typeof parsed.error.hint, 'string');
  return parsed.error;
}

/** A UDP port nobody answers on (bound, then closed). */
async function silentPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const { port } = s.address();
  await new Promise<void>((resolve) => s.close(() => { resolve(); }));
  return port;
}

describe('errors as JSON', () => {
  it('--format json failures print one JSON object on stdout carrying code, exit code, message and hint', async () => {
    const server = await startServe(SECRET);
    try {
      const [usage, ipv6, auth, absent, stun, keygen] = await Promise.all([
        runCli(['punch', '--server', server.address, '--as', 'a', '--bogus', '--format', 'json']),
        runCli(['wg', '--interface', 'wg0', '--server', '::1:3478', '--format=json'], { BURROW_SECRET: SECRET }),
        runCli(['punch', '--server', server.address, '--as', 'a', '--to', 'b', '--format', 'json', '--timeout', '5'], { BURROW_SECRET: 'another secret, not the server one' }),
        runCli(['punch', '--server', server.address, '--as', 'a', '--to', 'b', '--format', 'json', '--timeout', '0.5'], { BURROW_SECRET: SECRET }),
        runCli(['stun', `127.0.0.1:${await silentPort()}`, '--timeout', '0.5', '--format', 'json']),
        runCli(['keygen', '--format', 'json']),
      ]);
      assert.deepEqual([usage.code, ipv6.code, auth.code, absent.code, stun.code], [2, 2, 3, 4, 1]);
      assert.equal(jsonError(usage).code, 'USAGE');
      assert.match(jsonError(usage).message, /unknown option '--bogus'/);
      assert.equal(jsonError(ipv6).hint, 'write [::1]:3478 (an IPv6 address with a port goes in brackets)');
      assert.equal(jsonError(auth).code, 'AUTH_FAILED');
      assert.match(jsonError(auth).hint, /same secret/);
      assert.equal(jsonError(absent).code, 'PEER_NOT_FOUND');
      assert.match(jsonError(absent).hint, /--as b --to a/);
      assert.equal(jsonError(stun).code, 'SERVER_UNREACHABLE');
      // People still read the error on stderr, once.
      for (const r of [usage, auth, absent]) assert.equal(r.stderr.split('burrow: error:').length, 2, r.stderr);
      assert.equal(keygen.code, 0);
      assert.match((JSON.parse(keygen.stdout) as { secret: string }).secret, /^[A-Za-z0-9_-]{43}$/);
    } finally {
      await server.stop();
    }
  });

  it('text failures say what happened, then the next step naming flags', async () => {
    const r = await runCli(['punch', '--server', '127.0.0.1:0', '--as', 'a', '--to', 'b']);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^burrow: error: --server "127\.0\.0\.1:0": port 0 is not a port a server can listen on\nburrow: hint: give the server's port, e\.g\. 127\.0\.0\.1:3478\n$/);
    const v6 = await runCli(['pipe', '--server', '2001:db8::7:3478', '--as', 'a', '--to', 'b']);
    assert.equal(v6.code, 2);
    assert.match(v6.stderr, /hint: write \[2001:db8::7\]:3478/);
    const stun0 = await runCli(['stun', '127.0.0.1:0']);
    assert.equal(stun0.code, 2);
    assert.match(stun0.stderr, /port 0/);
  });
});

describe('signals and the handoff', () => {
  it('SIGINT during a punch exits 130, SIGTERM 143 (as JSON too)', async () => {
    const server = await startServe(SECRET);
    try {
      const args = ['punch', '--server', server.address, '--as', 'alice', '--to', 'nobody', '--timeout', '30'];
      const a = startCli(args, { BURROW_SECRET: SECRET });
      const b = startCli([...args.slice(0, 4), 'carol', ...args.slice(5), '--format', 'json'], { BURROW_SECRET: SECRET });
      await Promise.all([a.waitFor('registered with the server'), b.waitFor('registered with the server')]);
      a.child.kill('SIGINT');
      b.child.kill('SIGTERM');
      const [ra, rb] = await Promise.all([a.done, b.done]);
      assert.equal(ra.code, 130, ra.stderr);
      assert.match(ra.stderr, /burrow: error: interrupted by SIGINT/);
      assert.equal(rb.code, 143, rb.stderr);
      assert.equal(jsonError(rb).code, 'INTERRUPTED');
    } finally {
      await server.stop();
    }
  });

  it('a handoff command that does not exist exits 127; one that cannot be run exits 126', async () => {
    const server = await startServe(SECRET);
    try {
      const notExecutable = join(dir, 'not-executable.sh');
      await writeFile(notExecutable, '#!/bin/sh\nexit 0\n');
      await chmod(notExecutable, 0o644);
      const args = (as: string, to: string, command: string) => ['punch', '--server', server.address, '--as', as, '--to', to, '--local', '127.0.0.1:0', '--timeout', '10', '--', command, 'arg'];
      const [missing, denied] = await Promise.all([
        runCli(args('alice', 'bob', join(dir, 'no-such-command')), { BURROW_SECRET: SECRET }),
        runCli(args('bob', 'alice', notExecutable), { BURROW_SECRET: SECRET }),
      ]);
      assert.equal(missing.code, 127, missing.stderr);
      assert.match(missing.stderr, /connected to bob/);
      assert.match(missing.stderr, /cannot run ".*no-such-command": no such command/);
      assert.equal(denied.code, 126, denied.stderr);
      assert.match(denied.stderr, /permission denied[^]*hint: make it executable/);
    } finally {
      await server.stop();
    }
  });
});

describe('defaults, secrets and feedback', () => {
  it('BURROW_SERVER and BURROW_SECRET_FILE supply --server and --secret-file; flags beat them', async () => {
    const server = await startServe(SECRET);
    try {
      const file = join(dir, 'env-secret');
      await writeFile(file, `${SECRET}\n`, { mode: 0o600 });
      const env = { BURROW_SERVER: server.address, BURROW_SECRET_FILE: file };
      const fromEnv = await runCli(['punch', '--as', 'a', '--to', 'b', '--timeout', '0.5'], env);
      assert.equal(fromEnv.code, 4, fromEnv.stderr); // authenticated with the server from the environment, alone
      // A flag beats the environment: a wrong --secret wins over the right file, a good --server over a bad default.
      const flagSecret = await runCli(['punch', '--as', 'a', '--to', 'b', '--timeout', '3', '--secret', 'a wrong secret, long enough'], env);
      assert.equal(flagSecret.code, 3, flagSecret.stderr);
      const flagServer = await runCli(['punch', '--server', server.address, '--as', 'a', '--to', 'b', '--timeout', '0.5'], { ...env, BURROW_SERVER: '127.0.0.1:0' });
      assert.equal(flagServer.code, 4, flagServer.stderr);
      // A bad value from the environment is named as such.
      const badEnv = await runCli(['punch', '--as', 'a', '--to', 'b'], { ...env, BURROW_SERVER: '::1:3478' });
      assert.equal(badEnv.code, 2);
      assert.match(badEnv.stderr, /BURROW_SERVER \(for --server\) "::1:3478"/);
      const missing = await runCli(['punch', '--as', 'a', '--to', 'b'], { BURROW_SECRET_FILE: file });
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /--server HOST:PORT is required\nburrow: hint: give --server \(or set BURROW_SERVER\)/);
    } finally {
      await server.stop();
    }
  });

  it('trims whitespace around secrets, warns about short ones, and --quiet silences the warning', async () => {
    const server = await startServe(SECRET);
    try {
      const file = join(dir, 'spaced-secret');
      await writeFile(file, `\n   ${SECRET} \t\r\n`);
      const spaced = await runCli(['punch', '--server', server.address, '--secret-file', file, '--as', 'a', '--to', 'b', '--timeout', '0.5']);
      assert.equal(spaced.code, 4, spaced.stderr); // the server accepted the trimmed secret
      const fromEnv = await runCli(['punch', '--server', server.address, '--as', 'a', '--to', 'b', '--timeout', '0.5'], { BURROW_SECRET: ` ${SECRET}\n` });
      assert.equal(fromEnv.code, 4, fromEnv.stderr);
      assert.doesNotMatch(spaced.stderr + fromEnv.stderr, /warning/);
      const short = await runCli(['punch', '--server', server.address, '--as', 'a', '--to', 'b', '--timeout', '3'], { BURROW_SECRET: 'short' });
      assert.equal(short.code, 3);
      assert.match(short.stderr, /warning: the secret from BURROW_SECRET is only 5 bytes long \(fewer than 16\)/);
      const quiet = await runCli(['punch', '--server', server.address, '--as', 'a', '--to', 'b', '--timeout', '3', '--quiet'], { BURROW_SECRET: 'short' });
      assert.equal(quiet.code, 3);
      assert.match(quiet.stderr, /^burrow: error: [^\n]*secret differs[^\n]*\nburrow: hint: [^\n]*\n$/, 'only the error with --quiet');
    } finally {
      await server.stop();
    }
  });

  it('a punch with no answer from its server says so on stderr and keeps trying until --timeout', async () => {
    const port = await silentPort();
    const cli = startCli(['punch', '--server', `127.0.0.1:${port}`, '--as', 'a', '--to', 'b', '--timeout', '60'], { BURROW_SECRET: SECRET });
    const said = await cli.waitFor('no answer yet from the server', 30_000);
    assert.match(said, /no answer yet from the server at 127\.0\.0\.1:\d+ after 3 s; still trying for 57 s more/);
    assert.equal(cli.child.exitCode, null, 'still trying');
    cli.child.kill('SIGINT');
    assert.equal((await cli.done).code, 130);
    // Quiet: nothing but the error.
    const quiet = await runCli(['punch', '--server', `127.0.0.1:${port}`, '--as', 'a', '--to', 'b', '--timeout', '3.5', '--quiet'], { BURROW_SECRET: SECRET });
    assert.equal(quiet.code, 1);
    assert.doesNotMatch(quiet.stderr, /no answer yet/);
    assert.match(quiet.stderr, /^burrow: error: no answer from the rendezvous server/);
  });

  it('keygen --out writes a 0600 file and never replaces one', async () => {
    const file = join(dir, 'new-secret');
    const made = await runCli(['keygen', '--out', file]);
    assert.equal(made.code, 0, made.stderr);
    assert.equal(made.stdout, '', 'the secret does not go to stdout');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const secret = await readFile(file, 'utf8');
    assert.match(secret, /^[A-Za-z0-9_-]{43}\n$/);
    const again = await runCli(['keygen', '--out', file, '--format', 'json']);
    assert.equal(again.code, 2);
    assert.match(jsonError(again).message, /already exists/);
    assert.equal(await readFile(file, 'utf8'), secret, 'the old secret is untouched');
    // The file works as a secret file for a server and a peer.
    const server = await startServe(secret.trim());
    try {
      const r = await runCli(['punch', '--server', server.address, '--secret-file', file, '--as', 'a', '--to', 'b', '--timeout', '0.5']);
      assert.equal(r.code, 4, r.stderr);
    } finally {
      await server.stop();
    }
  });
});

describe('results as JSON, and --quiet', () => {
  it('send and receive print their summary as JSON; pipe its summary on stderr (stdout carries the bytes)', async () => {
    const server = await startServe(SECRET);
    try {
      const env = { BURROW_SECRET: SECRET, BURROW_SERVER: server.address };
      const file = join(dir, 'payload.txt');
      await writeFile(file, 'hello, json\n');
      const out = await mkdtemp(join(dir, 'out-'));
      const [send, receive] = await Promise.all([
        runCli(['send', file, '--as', 'js', '--to', 'jr', '--timeout', '10', '--format', 'json', '--quiet'], env),
        runCli(['receive', '--as', 'jr', '--to', 'js', '--out', out, '--timeout', '10', '--format', 'json', '--yes'], env),
      ]);
      assert.equal(send.code, 0, send.stderr);
      assert.equal(receive.code, 0, receive.stderr);
      assert.equal(send.stderr, '', '--quiet: nothing on stderr');
      const s = JSON.parse(send.stdout) as { peer: string; bytes: number; files: { path: string; size: number; check: string }[] };
      const r = JSON.parse(receive.stdout) as { peer: string; outDir: string; files: { path: string; check: string }[] };
      assert.equal(s.peer, 'jr');
      assert.equal(s.bytes, 12);
      assert.deepEqual(s.files.map((f) => [f.path, f.size]), [['payload.txt', 12]]);
      assert.equal(r.outDir, out);
      // The end-to-end check (transfer protocol v3), the same on both sides.
      assert.match(r.files[0]?.check ?? '', /^[0-9a-f]{32}$/);
      assert.equal(r.files[0]?.check, s.files[0]?.check);
      assert.equal(await readFile(join(out, 'payload.txt'), 'utf8'), 'hello, json\n');

      const [a, b] = await Promise.all([
        runCli(['pipe', '--as', 'pa', '--to', 'pb', '--send-only', '--timeout', '10', '--format', 'json'], env, Buffer.from('piped bytes')),
        runCli(['pipe', '--as', 'pb', '--to', 'pa', '--recv-only', '--timeout', '10', '--format', 'json', '-q'], env),
      ]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(b.stdout, 'piped bytes', 'only the bytes on stdout');
      const summary = JSON.parse(b.stderr.trim()) as { bytesReceived: number; confirmed: boolean };
      assert.equal(summary.bytesReceived, 11);
      assert.equal(summary.confirmed, true);
      assert.match(a.stderr.trim().split('\n').at(-1) ?? '', /^\{"peer":"pb","bytesSent":11,/);
    } finally {
      await server.stop();
    }
  });

  it('serve --quiet logs nothing but errors', async () => {
    const probe = createSocket('udp4');
    await new Promise<void>((resolve) => probe.bind(0, '127.0.0.1', resolve));
    const port = probe.address().port;
    await new Promise<void>((resolve) => probe.close(() => { resolve(); }));
    const cli = startCli(['serve', '--listen', `127.0.0.1:${port}`, '--no-alt-port', '--quiet'], { BURROW_SECRET: 'short' });
    try {
      let answered = false;
      for (let i = 0; i < 50 && !answered; i++) {
        answered = (await runCli(['stun', `127.0.0.1:${port}`, '--timeout', '0.5'])).code === 0;
      }
      assert.ok(answered, 'the quiet server answers STUN');
    } finally {
      cli.child.kill('SIGTERM');
    }
    const done = await cli.done;
    assert.equal(done.code, 0);
    assert.equal(done.stderr, '', 'no start-up, warning or shutdown lines');
  });
});
