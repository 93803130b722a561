/**
 * A server under attack keeps working (issue 2 and issue 5, "Must show"), in the NAT lab with the built CLI:
 *   1. While two peers punch through full-cone NATs (so that re-sent packets really reach them), an attacker on a third
 *      address floods the server with 200,000 junk datagrams of every shape (empty, single bytes, random, lying STUN
 *      headers, unknown methods, truncated captures, oversized attributes) and replays every datagram of a live capture
 *      (tcpdump in the core) to its original destination. Both peers connect to each other, never to the attacker, the
 *      server sends the attacker nothing, and the server's resident memory (VmRSS of its process) grows < 20 MiB.
 *   2. A capture of a whole successful session, replayed over and over from a third host while the same two peers punch
 *      again: it creates no registration, changes neither peer's result, and draws no more bytes than it sent.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLab, type Lab } from '../../src/lab/topology.js';
import { parsePunchOutput } from '../../src/lab/scenario.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';

const CLI = fileURLToPath(new URL('../../src/cli/burrow.cjs', import.meta.url));
const ATTACKER = fileURLToPath(new URL('../support/attacker.js', import.meta.url));
const MiB = 1024 * 1024;
const JUNK = 200_000;

function vmRss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${String(pid)}/status`, 'utf8'));
  assert.ok(m, `no VmRSS for ${String(pid)}`);
  return Number(m[1]) * 1024;
}

async function punchPair(lab: Lab, env: NodeJS.ProcessEnv): Promise<void> {
  const alice = lab.spawn('hA', process.execPath, [CLI, 'punch', '--server', '203.0.113.1:3478', '--as', 'alice', '--to', 'bob', '--timeout', '10', '--format', 'json', '--relay', 'never'], { env });
  const bob = lab.spawn('hB', process.execPath, [CLI, 'punch', '--server', '203.0.113.1:3478', '--as', 'bob', '--to', 'alice', '--timeout', '10', '--format', 'json', '--relay', 'never'], { env });
  const [ea, eb] = await Promise.all([alice.exited, bob.exited]);
  assert.equal(ea.code, 0, `alice: ${alice.stderr}`);
  assert.equal(eb.code, 0, `bob: ${bob.stderr}`);
  const oa = parsePunchOutput(alice.stdout);
  const ob = parsePunchOutput(bob.stdout);
  assert.ok(oa.ok && ob.ok);
  // Each to the other's router, never to the attacker (203.0.113.2).
  assert.equal(oa.value.remoteAddress, '198.51.100.6');
  assert.equal(ob.value.remoteAddress, '198.51.100.2');
}

function secretEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, BURROW_SECRET: randomBytes(32).toString('base64url') };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

describe('server under attack (lab)', { skip: labSkip }, () => {
  before(() => {
    assertLabAvailable();
  });

  it('200,000 junk datagrams and live replays do not disturb a punch, never redirect a peer, and grow the server < 20 MiB', async (t) => {
    const lab = await createLab({ a: 'full-cone', b: 'full-cone' });
    const env = secretEnv();
    try {
      const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', '203.0.113.1:3478', '--log-format', 'json'], { env });
      await server.waitForOutput('stderr', '"listening"', 5000);
      await sleep(200);
      const rssBefore = vmRss(server.pid); // nsenter execs the server: this is its own PID
      // Live capture of everything but the attacker's own traffic, piped into the attacker.
      const attack = lab.spawn('pub', 'sh', ['-c',
        `timeout 12 tcpdump -i any -U -n -s 2048 -w - 'udp and not src host 203.0.113.2' 2>/dev/null | ` +
        `"${process.execPath}" "${ATTACKER}" --bind 203.0.113.2 --server 203.0.113.1:3478 --junk ${String(JUNK)} --seconds 9 --replay`], { env });
      await sleep(1000); // tcpdump attaches, the flood is under way
      let rssPeak = vmRss(server.pid);
      const sampler = setInterval(() => {
        rssPeak = Math.max(rssPeak, vmRss(server.pid));
      }, 100);
      try {
        await punchPair(lab, env);
        await attack.exited;
      } finally {
        clearInterval(sampler);
      }
      const rssAfter = vmRss(server.pid);
      rssPeak = Math.max(rssPeak, rssAfter);
      const stats = JSON.parse(attack.stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, number>;
      t.diagnostic(`attacker: ${JSON.stringify(stats)}`);
      t.diagnostic(`server VmRSS ${(rssBefore / MiB).toFixed(1)} MiB before, peak ${(rssPeak / MiB).toFixed(1)} MiB, after ${(rssAfter / MiB).toFixed(1)} MiB: grew ${((rssPeak - rssBefore) / MiB).toFixed(1)} MiB`);
      assert.equal(stats.junkSent, JUNK, `junk sent: ${JSON.stringify(stats)}`);
      assert.ok((stats.replayed ?? 0) > 0, `nothing was replayed: ${JSON.stringify(stats)}`);
      // Replays are dropped and junk is never answered: the server sends the attacker nothing.
      assert.equal(stats.receivedBytesFromServer, 0, JSON.stringify(stats));
      assert.equal(server.exitStatus, null, 'the server must still be running');
      assert.ok(rssPeak - rssBefore < 20 * MiB, `the server grew by ${((rssPeak - rssBefore) / MiB).toFixed(1)} MiB`);
    } finally {
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });

  it('a whole successful session replayed from a third host creates no registration, changes no result and draws no more than it sent', async (t) => {
    const lab = await createLab({ a: 'full-cone', b: 'full-cone' });
    const env = secretEnv();
    const dir = await mkdtemp(join(tmpdir(), 'burrow-capture-'));
    try {
      const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', '203.0.113.1:3478', '--log-format', 'json', '--log-level', 'debug'], { env });
      await server.waitForOutput('stderr', '"listening"', 5000);
      // Session 1, recorded in the core.
      const capture = join(dir, 'session.pcap');
      const tcpdump = lab.spawn('pub', 'sh', ['-c', `timeout 4 tcpdump -i any -U -n -s 2048 -w - udp 2>/dev/null > "${capture}"`]);
      await sleep(1000); // tcpdump attaches
      await punchPair(lab, env);
      await tcpdump.exited;
      const logBefore = server.stderr.length;
      // Session 2, with the whole of session 1 replayed from 203.0.113.2 every 100 ms throughout.
      const attack = lab.spawn('pub', process.execPath, [ATTACKER, '--bind', '203.0.113.2', '--server', '203.0.113.1:3478', '--seconds', '4', '--replay-file', capture, '--replay-every', '100'], { env });
      await sleep(100);
      await punchPair(lab, env);
      await attack.exited;
      const stats = JSON.parse(attack.stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, number>;
      const log = server.stderr.slice(logBefore).split('\n').filter((l) => l.includes('203.0.113.2'));
      const registrations = log.filter((l) => /"event":"registered"/.test(l));
      const rejected = log.filter((l) => /replayed message/.test(l));
      t.diagnostic(`attacker: ${JSON.stringify(stats)}; server log: ${rejected.length} replays from the third host rejected, ${registrations.length} registrations from it`);
      assert.ok((stats.replayed ?? 0) > 100, `too little was replayed: ${JSON.stringify(stats)}`);
      assert.ok(rejected.length > 0, 'no replayed REGISTER reached the server');
      assert.deepEqual(registrations, [], 'a replay created or refreshed a registration');
      assert.ok((stats.receivedBytes ?? 0) <= (stats.replayedBytes ?? 0), `the replay drew ${String(stats.receivedBytes)} bytes for ${String(stats.replayedBytes)}`);
      assert.equal(server.exitStatus, null, 'the server must still be running');
    } finally {
      await lab.destroy();
      await rm(dir, { recursive: true, force: true });
      await assertNothingLeft(lab.runId);
    }
  });
});
