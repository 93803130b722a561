/** The `burrow` binary end to end: real processes, real sockets on loopback, documented exit codes. */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, startServe } from '../support/cli.js';

const SECRET = 'cli test secret';
let dir = '';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-cli-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('burrow CLI', () => {
  it('prints help and exits 0; no command is a usage error (2)', async () => {
    const help = await runCli(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^ {2}punch {2,}punch a direct UDP path/m);
    assert.match(help.stdout, /Exit codes/);
    const none = await runCli([]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /Usage: burrow COMMAND/);
    const bad = await runCli(['punch', '--bogus']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--bogus/);
    assert.doesNotMatch(bad.stderr, /\n\s+at /, 'no stack trace for a usage error');
  });

  it('keygen prints a fresh 32-byte secret', async () => {
    const [a, b] = await Promise.all([runCli(['keygen']), runCli(['keygen'])]);
    assert.match(a.stdout, /^[A-Za-z0-9_-]{43}\n$/);
    assert.notEqual(a.stdout, b.stdout);
  });

  it('punches between two processes; json, text (with netpunch’s line) and env outputs', async () => {
    const server = await startServe(SECRET);
    try {
      const env = { BURROW_SECRET: SECRET };
      const args = (as: string, to: string, format: string) => ['punch', '--server', server.address, '--as', as, '--to', to, '--local', '127.0.0.1:0', '--timeout', '10', '--format', format];
      const [a, b] = await Promise.all([runCli(args('alice', 'bob', 'json'), env), runCli(args('bob', 'alice', 'text'), env)]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
      const lines = a.stdout.trim().split('\n');
      assert.equal(lines.length, 1, 'exactly one JSON object on stdout');
      const j = JSON.parse(lines[0]!) as Record<string, unknown>;
      assert.deepEqual(Object.keys(j).sort(), ['elapsedMs', 'localAddress', 'localPort', 'path', 'remoteAddress', 'remotePort']);
      assert.equal(j.path, 'direct');
      const [human, np] = b.stdout.trim().split('\n');
      assert.match(human!, /^connected to alice at 127\.0\.0\.1:\d+ directly from local port \d+ in \d+ ms$/);
      assert.equal(np, `LADDR/LHOST/LPORT/RADDR/RHOST/RPORT: 127.0.0.1:${String(j.remotePort)} 127.0.0.1 ${String(j.remotePort)} 127.0.0.1:${String(j.localPort)} 127.0.0.1 ${String(j.localPort)}`);
      assert.match(a.stderr, /registered with the server/);

      const [c, d] = await Promise.all([runCli(args('carol', 'dave', 'env'), env), runCli(args('dave', 'carol', 'env'), env)]);
      assert.equal(c.code, 0, c.stderr);
      assert.equal(d.code, 0, d.stderr);
      assert.match(c.stdout, /^BURROW_LOCAL_ADDRESS='127\.0\.0\.1'\nBURROW_LOCAL_PORT='\d+'\nBURROW_REMOTE_ADDRESS='127\.0\.0\.1'\nBURROW_REMOTE_PORT='\d+'\nBURROW_PATH='direct'\n$/);
    } finally {
      await server.stop();
    }
  });

  it('hands the port to a command with the variables in its environment and arguments', async () => {
    const server = await startServe(SECRET);
    try {
      const env = { BURROW_SECRET: SECRET };
      const script = 'console.log(JSON.stringify({argv: process.argv.slice(1), port: process.env.BURROW_REMOTE_PORT, path: process.env.BURROW_PATH})); process.exit(7)';
      const args = (as: string, to: string) => ['punch', '--server', server.address, '--as', as, '--to', to, '--local', '127.0.0.1:0', '--timeout', '10', '--', process.execPath, '-e', script, '--', 'remote=${BURROW_REMOTE_ADDRESS}:$BURROW_REMOTE_PORT'];
      const [a, b] = await Promise.all([runCli(args('alice', 'bob'), env), runCli(args('bob', 'alice'), env)]);
      for (const r of [a, b]) {
        assert.equal(r.code, 7, `burrow exits with the command's status\n${r.stderr}`);
        const out = JSON.parse(r.stdout) as { argv: string[]; port: string; path: string };
        assert.equal(out.argv.at(-1), `remote=127.0.0.1:${out.port}`);
        assert.equal(out.path, 'direct');
      }
    } finally {
      await server.stop();
    }
  });

  it('exits 3 within 5 s with a message about the secret when the secret is wrong', async () => {
    const server = await startServe(SECRET);
    try {
      const r = await runCli(['punch', '--server', server.address, '--as', 'alice', '--to', 'bob', '--timeout', '20'], { BURROW_SECRET: 'wrong' });
      assert.equal(r.code, 3);
      assert.ok(r.ms < 5000, `${r.ms} ms`);
      assert.match(r.stderr, /secret differs from the server's/);
    } finally {
      await server.stop();
    }
  });

  it('exits 4 at the timeout when the peer never registers, without a traceback', async () => {
    const server = await startServe(SECRET);
    try {
      const r = await runCli(['punch', '--server', server.address, '--as', 'alice', '--to', 'bob', '--timeout', '1.5'], { BURROW_SECRET: SECRET });
      assert.equal(r.code, 4);
      assert.ok(r.ms >= 1500, `${r.ms} ms`);
      assert.match(r.stderr, /peer "bob" did not appear within 1\.5 s: it never registered with the server/);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    } finally {
      await server.stop();
    }
  });

  it('reads secrets from a file (ignoring the trailing newline), warns about --secret, and explains a missing secret', async () => {
    const server = await startServe(SECRET);
    try {
      const file = join(dir, 'secret');
      await writeFile(file, `${SECRET}\n`, { mode: 0o600 });
      const fromFile = await runCli(['punch', '--server', server.address, '--secret-file', file, '--as', 'a', '--to', 'b', '--timeout', '0.5']);
      assert.equal(fromFile.code, 4, fromFile.stderr); // authenticated, just alone
      const fromFlag = await runCli(['punch', '--server', server.address, '--secret', SECRET, '--as', 'a', '--to', 'b', '--timeout', '0.5']);
      assert.equal(fromFlag.code, 4);
      assert.match(fromFlag.stderr, /--secret is visible to other users/);
      const none = await runCli(['punch', '--server', server.address, '--as', 'a', '--to', 'b']);
      assert.equal(none.code, 2);
      assert.match(none.stderr, /no network secret given\nburrow: hint: pass --secret-file FILE/);
      const missing = await runCli(['punch', '--server', server.address, '--secret-file', join(dir, 'nope'), '--as', 'a', '--to', 'b']);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /cannot read the secret file/);
    } finally {
      await server.stop();
    }
  });

  it('burrow stun prints the mapped address as text and JSON', async () => {
    const server = await startServe(SECRET);
    try {
      const j = await runCli(['stun', server.address, '--format', 'json', '--local', '127.0.0.1:0']);
      assert.equal(j.code, 0, j.stderr);
      const v = JSON.parse(j.stdout) as { address: string; port: number };
      assert.equal(v.address, '127.0.0.1');
      assert.ok(v.port > 0);
      const t = await runCli(['stun', server.address, '--local', '127.0.0.1:0']);
      assert.match(t.stdout, /^127\.0\.0\.1:\d+\n$/);
    } finally {
      await server.stop();
    }
  });

  it('serve --tstun matches two T-STUN clients with the same key and tells each the other’s address', async () => {
    const { createHash } = await import('node:crypto');
    const net = await import('node:net');
    const server = await startServe(SECRET, ['--tstun', '127.0.0.1:0']);
    try {
      const m = /"tstunTcp":"([^"]+)"/.exec(await server.cli.waitFor('"tstunTcp"'));
      const port = Number(m![1]!.split(':')[1]);
      const key = createHash('sha256').update('pairing key').digest();
      // punchhole's client: connect, send SHA-256(key), half-close, read the answer until EOF.
      const client = () => new Promise<{ answer: string; local: number }>((resolve, reject) => {
        const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => {
          s.end(key);
        });
        let answer = '';
        s.on('data', (d: Buffer) => (answer += d.toString('ascii')));
        s.on('end', () => {
          resolve({ answer, local: s.localPort ?? 0 });
          s.destroy();
        });
        s.on('error', reject);
      });
      const [a, b] = await Promise.all([client(), client()]);
      assert.equal(a.answer, `127.0.0.1 ${b.local}`);
      assert.equal(b.answer, `127.0.0.1 ${a.local}`);
    } finally {
      await server.stop();
    }
  });

  it('serve reloads its secret file on SIGHUP and stops cleanly on SIGTERM', async () => {
    const file = join(dir, 'rotating');
    await writeFile(file, 'old secret\n');
    const { startCli } = await import('../support/cli.js');
    const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--secret-file', file, '--log-format', 'json']);
    const text = await cli.waitFor('"listening"');
    const address = /"udp":"([^"]+)"/.exec(text)![1]!;
    const before = await runCli(['punch', '--server', address, '--as', 'a', '--to', 'b', '--timeout', '2'], { BURROW_SECRET: 'new secret' });
    assert.equal(before.code, 3);
    await writeFile(file, 'new secret\nold secret\n');
    cli.child.kill('SIGHUP');
    await cli.waitFor('secret file reloaded');
    const afterReload = await runCli(['punch', '--server', address, '--as', 'a', '--to', 'b', '--timeout', '0.5'], { BURROW_SECRET: 'new secret' });
    assert.equal(afterReload.code, 4, afterReload.stderr);
    cli.child.kill('SIGTERM');
    const done = await cli.done;
    assert.equal(done.code, 0);
    assert.match(done.stderr, /"event":"stopped"/);
  });
});
