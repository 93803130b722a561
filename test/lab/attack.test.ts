/**
 * A server under attack keeps working (issue 2, "Must show"): while two peers punch through full-cone
 * NATs (so that re-sent packets really reach them), an attacker on a third address floods the server
 * with empty datagrams, single bytes, random junk, lying STUN headers and truncated messages, and
 * replays every datagram of a live capture (tcpdump in the core) to its original destination. Both
 * peers still connect to each other, never to the attacker, and the server sends the attacker nothing.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { createLab } from '../../src/lab/topology.js';
import { parsePunchOutput } from '../../src/lab/scenario.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';

const CLI = fileURLToPath(new URL('../../src/cli/burrow.cjs', import.meta.url));
const ATTACKER = fileURLToPath(new URL('../support/attacker.js', import.meta.url));

describe('server under attack (lab)', { skip: labSkip }, () => {
  before(() => {
    assertLabAvailable();
  });

  it('junk and live replays do not disturb a punch, and never redirect a peer to the attacker', async () => {
    const lab = await createLab({ a: 'full-cone', b: 'full-cone' });
    const env: NodeJS.ProcessEnv = { ...process.env, BURROW_SECRET: randomBytes(32).toString('base64url') };
    delete env.NODE_EXTRA_CA_CERTS;
    try {
      const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', '203.0.113.1:3478', '--log-format', 'json'], { env });
      await server.waitForOutput('stderr', '"listening"', 5000);
      // Live capture of everything but the attacker's own traffic, piped into the attacker.
      const attack = lab.spawn('pub', 'sh', ['-c',
        `timeout 9 tcpdump -i any -U -n -s 2048 -w - 'udp and not src host 203.0.113.2' 2>/dev/null | ` +
        `"${process.execPath}" "${ATTACKER}" --bind 203.0.113.2 --server 203.0.113.1:3478 --junk 200000 --seconds 6 --replay`], { env });
      await new Promise((r) => setTimeout(r, 1000)); // tcpdump attaches, the flood is under way
      const alice = lab.spawn('hA', process.execPath, [CLI, 'punch', '--server', '203.0.113.1:3478', '--as', 'alice', '--to', 'bob', '--timeout', '10', '--format', 'json'], { env });
      const bob = lab.spawn('hB', process.execPath, [CLI, 'punch', '--server', '203.0.113.1:3478', '--as', 'bob', '--to', 'alice', '--timeout', '10', '--format', 'json'], { env });
      const [ea, eb] = await Promise.all([alice.exited, bob.exited]);
      assert.equal(ea.code, 0, `alice: ${alice.stderr}`);
      assert.equal(eb.code, 0, `bob: ${bob.stderr}`);
      const oa = parsePunchOutput(alice.stdout);
      const ob = parsePunchOutput(bob.stdout);
      assert.ok(oa.ok && ob.ok);
      assert.equal(oa.value.remoteAddress, '198.51.100.6');
      assert.equal(ob.value.remoteAddress, '198.51.100.2');
      await attack.exited;
      const stats = JSON.parse(attack.stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, number>;
      assert.ok((stats.junkSent ?? 0) >= 100_000, `junk sent: ${JSON.stringify(stats)}`);
      assert.ok((stats.replayed ?? 0) > 0, `nothing was replayed: ${JSON.stringify(stats)}`);
      // Replays are dropped and junk is never answered: the server sends the attacker nothing.
      assert.equal(stats.receivedBytesFromServer, 0, JSON.stringify(stats));
      assert.equal(server.exitStatus, null, 'the server must still be running');
    } finally {
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });
});
