/**
 * Several rendezvous servers over one Redis, behind real (emulated) port-restricted NATs (issue 12): Redis and three
 * `burrow serve --redis` in the internet namespace, S1 at 203.0.113.1:3478, S2 at 203.0.113.2:3478, S3 at
 * 203.0.113.1:3490. Peer A (behind NAT A) registers only with S1 and peer B (behind NAT B) only with S2: an
 * introduction sent from the wrong server would be dropped by the NAT, so a punch that completes proves that each push
 * left from its owner. Then a file across servers, failover from a SIGKILLed S1 to S3, and Redis down (exit 14, STUN
 * still answered).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { createLab } from '../../src/lab/topology.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';
import { CLI, peerEnv } from './peers.js';

const env = (): NodeJS.ProcessEnv => peerEnv('redis lab secret, shared by all servers');
const S1 = '203.0.113.1:3478';
const S2 = '203.0.113.2:3478';
const S3 = '203.0.113.1:3490';
const REDIS = 'redis://203.0.113.1:6390';

describe('several servers over one Redis, behind port-restricted NATs (lab)', { skip: labSkip }, () => {
  before(() => {
    assertLabAvailable();
  });

  it('A on S1 and B on S2 punch and send a file; A fails over from a killed S1 to S3; Redis down: exit 14, STUN answered', async (t) => {
    const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
    const out = await mkdtemp(join(tmpdir(), 'burrow-redis-lab-'));
    try {
      const redis = lab.spawn('pub', 'redis-server', ['--port', '6390', '--bind', '203.0.113.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no']);
      await redis.waitForOutput('stdout', 'Ready to accept connections', 10_000);
      const serve = (listen: string, id: string) => lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', listen, '--redis', REDIS, '--server-id', id, '--log-format', 'json'], { env: env() });
      const s1 = serve(S1, 's1');
      const s2 = serve(S2, 's2');
      const s3 = serve(S3, 's3');
      await Promise.all([s1, s2, s3].map((s) => s.waitForOutput('stderr', '"listening"', 10_000)));
      const punch = (server: string, as: string, to: string, timeout: number) => [CLI, 'punch', '--server', server, '--as', as, '--to', to, '--timeout', String(timeout)];

      // 1. Across servers: every push must leave from its recipient's server, or the NAT drops it.
      const a = lab.spawn('hA', process.execPath, punch(S1, 'alice', 'bob', 20), { env: env() });
      await a.waitForOutput('stderr', 'registered with the server', 10_000);
      const b = lab.spawn('hB', process.execPath, punch(S2, 'bob', 'alice', 20), { env: env() });
      const [ra, rb] = await Promise.all([a.exited, b.exited]);
      assert.equal(ra.code, 0, a.stderr);
      assert.equal(rb.code, 0, b.stderr);
      assert.match(a.stdout, /directly/);
      assert.match(s2.stderr, /"introduced"/);

      // 2. A file across servers (TCP rendezvous on both, the stream punched through both NATs).
      const send = lab.spawn('hA', process.execPath, [CLI, 'send', '/etc/hostname', '--server', S1, '--as', 'sender', '--to', 'receiver', '--timeout', '20'], { env: env() });
      const receive = lab.spawn('hB', process.execPath, [CLI, 'receive', '--server', S2, '--as', 'receiver', '--to', 'sender', '--out', out, '--timeout', '20', '--yes'], { env: env() });
      const [rs, rr] = await Promise.all([send.exited, receive.exited]);
      t.diagnostic(`send exit ${String(rs.code)}, receive exit ${String(rr.code)}`);
      assert.equal(rs.code, 0, send.stderr);
      assert.equal(rr.code, 0, receive.stderr);

      // 3. Failover: A waits with S1,S3; S1 is killed; A moves to S3; B on S2 meets it there.
      const fa = lab.spawn('hA', process.execPath, punch(`${S1},${S3}`, 'fa', 'fb', 25), { env: env() });
      await fa.waitForOutput('stderr', 'registered with the server', 10_000);
      s1.kill('SIGKILL');
      await s1.exited;
      const fb = lab.spawn('hB', process.execPath, punch(S2, 'fb', 'fa', 20), { env: env() });
      const [rfa, rfb] = await Promise.all([fa.exited, fb.exited]);
      assert.match(fa.stderr, /the server at 203\.0\.113\.1:3478 stopped answering; registering with 203\.0\.113\.1:3490/);
      assert.equal(rfa.code, 0, fa.stderr);
      assert.equal(rfb.code, 0, fb.stderr);

      // 4. Redis down: a punch exits 14 naming the store; the servers answer STUN.
      redis.kill('SIGKILL');
      await redis.exited;
      const started = Date.now();
      const down = lab.spawn('hB', process.execPath, punch(S2, 'carol', 'dave', 20), { env: env() });
      const rd = await down.exited;
      assert.equal(rd.code, 14, down.stderr);
      assert.match(down.stderr, /cannot reach its registration store/);
      assert.ok(Date.now() - started < 8000);
      const stun = lab.spawn('hB', process.execPath, [CLI, 'stun', S2, '--timeout', '3'], { env: env() });
      assert.equal((await stun.exited).code, 0, stun.stderr);
    } finally {
      await lab.destroy();
      await assertNothingLeft(lab.runId);
      await rm(out, { recursive: true, force: true });
    }
  });
});
