/**
 * Restarting the rendezvous server in the middle of a punch (issue 5), with real processes: `burrow serve` and two
 * `burrow punch` peers on loopback. alice registers and waits; the server is killed (SIGKILL: a crash, all state
 * lost); bob starts while it is down; a new server comes up on the same port. Both peers re-register on their own
 * (alice's refresh, bob's retransmissions), are introduced by the new server and connect before their timeout.
 * The simulator has the same case for the core (test/core/punch.test.ts); this one is the real server and real sockets.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCli, type Cli } from '../support/cli.js';

const SECRET = 'restart test secret';
const TIMEOUT_S = 15;

function serve(listen: string): Cli {
  return startCli(['serve', '--listen', listen, '--alt-port', '0', '--log-format', 'json', '--log-level', 'debug'], { BURROW_SECRET: SECRET });
}

function peer(name: string, other: string, server: string): Cli {
  return startCli(['punch', '--server', server, '--as', name, '--to', other, '--local', '127.0.0.1:0', '--timeout', String(TIMEOUT_S), '--format', 'json'], { BURROW_SECRET: SECRET });
}

describe('server restart during a punch (real processes)', () => {
  it('a server killed while alice waits and restarted after bob started: both peers recover and connect before their timeout', async (t) => {
    const first = serve('127.0.0.1:0');
    const started = [first];
    let alice: Cli | undefined;
    let bob: Cli | undefined;
    try {
      const text = await first.waitFor('"listening"');
      const address = /"udp":"([^"]+)"/.exec(text)?.[1];
      assert.ok(address !== undefined);
      alice = peer('alice', 'bob', address);
      await first.waitFor(/"peer":"alice"/);
      first.child.kill('SIGKILL');
      await first.done;
      const killedAt = Date.now();
      bob = peer('bob', 'alice', address); // starts while no server listens
      await sleep(1500);
      const second = serve(address);
      started.push(second);
      await second.waitFor('"listening"');
      const restartedAt = Date.now();
      const [a, b] = await Promise.all([alice.done, bob.done]);
      const connectedAt = Date.now();
      assert.equal(a.code, 0, `alice: ${a.stderr}`);
      assert.equal(b.code, 0, `bob: ${b.stderr}`);
      const oa = JSON.parse(a.stdout) as { localPort: number; remotePort: number; elapsedMs: number };
      const ob = JSON.parse(b.stdout) as { localPort: number; remotePort: number; elapsedMs: number };
      assert.equal(oa.remotePort, ob.localPort);
      assert.equal(ob.remotePort, oa.localPort);
      assert.ok(oa.elapsedMs < TIMEOUT_S * 1000 && ob.elapsedMs < TIMEOUT_S * 1000);
      t.diagnostic(`server down for ${restartedAt - killedAt} ms; both connected ${connectedAt - restartedAt} ms after the new server listened (alice's elapsedMs ${oa.elapsedMs}, bob's ${ob.elapsedMs})`);
    } finally {
      for (const c of [alice, bob, ...started]) {
        if (c && c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
        await c?.done;
      }
    }
  });
});
