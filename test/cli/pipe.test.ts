/** `burrow pipe` end to end on loopback: real processes, a real server, TCP and encryption. */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { runCli, startServe } from '../support/cli.js';

const SECRET = 'pipe test secret';
const env = { BURROW_SECRET: SECRET };
const args = (server: string, as: string, to: string, ...more: string[]) => ['pipe', '--server', server, '--as', as, '--to', to, '--timeout', '10', ...more];

describe('burrow pipe', () => {
  it('delivers exactly the bytes of each side, EOF included, and both exit 0', async () => {
    const server = await startServe(SECRET);
    try {
      const [a, b] = await Promise.all([
        runCli(args(server.address, 'alice', 'bob'), env, Buffer.from('hello from alice\n')),
        runCli(args(server.address, 'bob', 'alice'), env, Buffer.from('and bob, no newline')),
      ]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(a.stdout, 'and bob, no newline');
      assert.equal(b.stdout, 'hello from alice\n');
      assert.match(a.stderr, /all confirmed/);
    } finally {
      await server.stop();
    }
  });

  it('moves binary data one way with --send-only / --recv-only', async () => {
    const server = await startServe(SECRET);
    try {
      const data = randomBytes(3 * 1024 * 1024 + 17);
      const [a, b] = await Promise.all([
        runCli(args(server.address, 'alice', 'bob', '--send-only'), env, data),
        runCli(args(server.address, 'bob', 'alice', '--recv-only'), env),
      ]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(createHash('sha256').update(b.stdoutBytes).digest('hex'), createHash('sha256').update(data).digest('hex'));
      assert.equal(a.stdoutBytes.length, 0);
    } finally {
      await server.stop();
    }
  });

  it('a lone peer exits 4 at its timeout with the explanation and no traceback', async () => {
    const server = await startServe(SECRET);
    try {
      const r = await runCli(['pipe', '--server', server.address, '--as', 'alice', '--to', 'bob', '--timeout', '1.5'], env, Buffer.alloc(0));
      assert.equal(r.code, 4, r.stderr);
      assert.ok(r.ms >= 1500);
      assert.match(r.stderr, /peer "bob" did not appear within 1\.5 s: it never registered with the server/);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    } finally {
      await server.stop();
    }
  });

  it('rejects contradictory options with exit 2', async () => {
    const r = await runCli(['pipe', '--server', '127.0.0.1:1', '--as', 'a', '--to', 'b', '--send-only', '--recv-only'], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /'--send-only' cannot be used with option '--recv-only'/);
  });
});
