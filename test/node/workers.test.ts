/**
 * The multi-process server (src/node/cluster.ts) through real sockets: two real punch() peers connect
 * through it, STUN works, counters add up across processes, and no worker outlives the server, whether
 * it is closed through the library or `burrow serve --workers` gets SIGTERM.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { punch, startServer, stunQuery } from '../../src/index.js';
import { startServe } from '../support/cli.js';

const SECRET = 'workers secret';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits (at most 5 s) until none of `pids` is alive; returns those still alive. */
async function waitGone(pids: readonly number[]): Promise<number[]> {
  for (let i = 0; i < 100 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 50));
  return pids.filter(alive);
}

describe('server with worker processes (real sockets)', () => {
  const leaked = () => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap' || r === 'Timeout' || r === 'ProcessWrap');
  const before = leaked().length;
  after(async () => {
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(leaked().length, before, `leaked: ${leaked().join(', ')}`);
  });

  it('two punch() peers connect through a 2-worker server; STUN is answered; no worker outlives close()', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 2 });
    const pids = [...server.workerPids];
    try {
      assert.equal(pids.length, 2);
      assert.ok(pids.every(alive));
      const addr = `127.0.0.1:${server.address.port}`;
      // Several queries, so that (whichever worker the kernel picks) both are likely exercised.
      for (let i = 0; i < 6; i++) {
        const mapped = await stunQuery({ server: addr, local: '127.0.0.1:0', timeoutMs: 3000 });
        assert.equal(mapped.address, '127.0.0.1');
      }
      const [a, b] = await Promise.all([
        punch({ server: addr, secret: SECRET, name: 'alice', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 10_000 }),
        punch({ server: addr, secret: SECRET, name: 'bob', peer: 'alice', local: '127.0.0.1:0', timeoutMs: 10_000 }),
      ]);
      assert.equal(a.remotePort, b.localPort);
      assert.equal(b.remotePort, a.localPort);
      assert.equal(a.peer, 'bob');
      // The workers took the registrations; the store they share lives in the primary.
      assert.ok(server.registrations >= 2);
    } finally {
      await server.close();
    }
    assert.deepEqual(await waitGone(pids), [], 'workers still running after close()');
    // The workers report their counters when they stop: every Binding we sent was counted somewhere, and the
    // introduction was made by a worker.
    assert.ok(server.stats.stunBindings >= 6, `stunBindings ${server.stats.stunBindings}`);
    assert.ok(server.stats.introductions >= 1);
    assert.ok(server.stats.registrationsTotal >= 2);
  });

  it('a wrong secret is still refused (authentication happens in the process that owns registrations)', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 2 });
    try {
      await assert.rejects(
        punch({ server: `127.0.0.1:${server.address.port}`, secret: 'another secret', name: 'mallory', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 3000 }),
        (e: unknown) => e instanceof Error && 'code' in e && e.code === 'AUTH_FAILED',
      );
      assert.equal(server.registrations, 0);
    } finally {
      await server.close();
    }
  });

  it('burrow serve --workers 2: SIGTERM stops the server and every worker, exit 0', async () => {
    const serve = await startServe(SECRET, ['--workers', '2', '--no-alt-port']);
    const pid = serve.cli.child.pid ?? -1;
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number).filter((n) => n > 0);
    assert.equal(children.length, 2, `children of ${pid}: ${children.join(' ')}`);
    const mapped = await stunQuery({ server: serve.address, local: '127.0.0.1:0', timeoutMs: 3000 });
    assert.equal(mapped.address, '127.0.0.1');
    const run = await serve.stop();
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(await waitGone(children), [], 'workers still running after SIGTERM');
  });

  it('rejects a nonsensical worker count', async () => {
    await assert.rejects(startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 0 }), /workers/);
  });
});
