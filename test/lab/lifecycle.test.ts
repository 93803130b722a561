/**
 * Lifecycle honesty behind real (emulated) NATs (issue 9, item 1): carol, behind a port-restricted NAT, is killed
 * (SIGKILL) or interrupted (SIGINT) after registering; dave, behind another, starts 2 s later with --timeout 8 and
 * exits 4 saying she left or never registered, never 5 (the firewall diagnosis).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, describe, it } from 'node:test';
import { createLab } from '../../src/lab/topology.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';
import { CLI, peerEnv } from './peers.js';

const env = (): NodeJS.ProcessEnv => peerEnv('lifecycle lab secret');

describe('a peer that has gone, behind NATs (lab)', { skip: labSkip }, () => {
  before(() => {
    assertLabAvailable();
  });

  it('carol killed (SIGKILL) or interrupted (SIGINT) behind her NAT: dave, 2 s later, exits 4 (left / never registered), never 5', async () => {
    const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
    try {
      const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', '203.0.113.1:3478', '--log-format', 'json'], { env: env() });
      await server.waitForOutput('stderr', '"listening"', 5000);
      const punch = (as: string, to: string, timeout: number) => [CLI, 'punch', '--server', '203.0.113.1:3478', '--as', as, '--to', to, '--timeout', String(timeout)];
      const killed = lab.spawn('hA', process.execPath, punch('carol', 'dave', 30), { env: env() });
      const interrupted = lab.spawn('hA', process.execPath, punch('erin', 'fred', 30), { env: env() });
      await Promise.all([killed.waitForOutput('stderr', 'registered with the server', 5000), interrupted.waitForOutput('stderr', 'registered with the server', 5000)]);
      killed.kill('SIGKILL');
      interrupted.kill('SIGINT');
      assert.equal((await interrupted.exited).code, 130, interrupted.stderr);
      await killed.exited;
      await sleep(2000);
      const dave = lab.spawn('hB', process.execPath, punch('dave', 'carol', 8), { env: env() });
      const fred = lab.spawn('hB', process.execPath, punch('fred', 'erin', 8), { env: env() });
      const [d, f] = await Promise.all([dave.exited, fred.exited]);
      assert.notEqual(d.code, 5, `the firewall diagnosis for a killed peer: ${dave.stderr}`);
      assert.equal(d.code, 4, dave.stderr);
      assert.match(dave.stderr, /carol registered but left before a path was found/);
      assert.equal(f.code, 4, fred.stderr);
      assert.match(fred.stderr, /"erin" did not appear within 8 s: it never registered/);
    } finally {
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });
});
