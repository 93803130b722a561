/**
 * Several rendezvous servers over one Redis, behind real (emulated) NATs (issue 12): Redis and three `burrow serve
 * --redis` in the internet namespace, S1 at 203.0.113.1:3478, S2 at 203.0.113.2:3478, S3 at 203.0.113.1:3490. Peer A
 * (behind NAT A) registers only with S1 and peer B (behind NAT B) only with S2: an introduction sent from the wrong
 * server would be dropped by the port-restricted NAT, so a connection proves that each push left from its owner.
 *
 *  1. Port-restricted ↔ port-restricted: a punch, `burrow wg` (wireguard-go) and a file across servers; failover from
 *     a SIGKILLed S1 to S3 for a punch, for WireGuard discovery and for a send; Redis down (punch exit 14, every server up and answering
 *     STUN); Redis back (a pair punches within 5 s).
 *  2. Symmetric ↔ symmetric: no direct path; each side allocates on its own server's built-in relay and they connect
 *     relay to relay (docs/protocol.md, "Relaying across servers"), datagrams both ways through the proxies.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import type { LabProcess } from '../../src/lab/process.js';
import { createLab, type Lab } from '../../src/lab/topology.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';
import { CLI, peerEnv } from './peers.js';
import { addPeer, assertNoWgLeft, restartWg, startWg, stopWg, wgAvailable, wgPeers, type WgHost } from './wg-lab.js';

const SECRET = 'redis lab secret, shared by all servers';
const env = (): NodeJS.ProcessEnv => peerEnv(SECRET);
const S1 = '203.0.113.1:3478';
const S2 = '203.0.113.2:3478';
const S3 = '203.0.113.1:3490';
const REDIS = 'redis://203.0.113.1:6390';
const HANDOFF = fileURLToPath(new URL('../../src/lab/programs/handoff.js', import.meta.url));
/** WireGuard is part of the must-show; outside CI a machine without wireguard-go skips that step only. */
const withWg = wgAvailable() || process.env.CI === 'true';

function startRedis(lab: Lab): Promise<LabProcess> {
  const redis = lab.spawn('pub', 'redis-server', ['--port', '6390', '--bind', '203.0.113.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no']);
  return redis.waitForOutput('stdout', 'Ready to accept connections', 10_000).then(() => redis);
}

async function startServers(lab: Lab, list: readonly [string, string][]): Promise<LabProcess[]> {
  const servers = list.map(([listen, id]) => lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', listen, '--redis', REDIS, '--server-id', id, '--log-format', 'json'], { env: env() }));
  await Promise.all(servers.map((s) => s.waitForOutput('stderr', '"listening"', 10_000)));
  return servers;
}

function punchArgs(server: string, as: string, to: string, timeout: number, extra: readonly string[] = []): string[] {
  return [CLI, 'punch', '--server', server, '--as', as, '--to', to, '--timeout', String(timeout), ...extra];
}

function running(p: LabProcess): boolean {
  return p.exitStatus === null;
}

describe('several servers over one Redis, behind real NATs (lab)', { skip: labSkip }, () => {
  before(() => {
    assertLabAvailable();
  });

  it('port-restricted: punch, wg and send across servers; failover of punch, wg and send from a killed S1 to S3; Redis down (exit 14, STUN answered) and back (punch within 5 s)', async (t) => {
    const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
    const out = await mkdtemp(join(tmpdir(), 'burrow-redis-lab-'));
    const wg: WgHost[] = [];
    try {
      let redis = await startRedis(lab);
      const [first, s2, s3] = await startServers(lab, [[S1, 's1'], [S2, 's2'], [S3, 's3']]);
      assert.ok(first && s2 && s3);
      let s1 = first;

      // 1. Across servers: every push must leave from its recipient's server, or the NAT drops it.
      const a = lab.spawn('hA', process.execPath, punchArgs(S1, 'alice', 'bob', 20), { env: env() });
      await a.waitForOutput('stderr', 'registered with the server', 10_000);
      const b = lab.spawn('hB', process.execPath, punchArgs(S2, 'bob', 'alice', 20), { env: env() });
      const [ra, rb] = await Promise.all([a.exited, b.exited]);
      assert.equal(ra.code, 0, a.stderr);
      assert.equal(rb.code, 0, b.stderr);
      assert.match(a.stdout, /directly/);
      assert.match(s2.stderr, /"introduced"/);

      // 2. WireGuard across servers: A's interface announces itself to S1 only, B's to S2 only; each learns the
      // other's endpoint from the shared store and the two handshake through both NATs.
      if (withWg) {
        wg.push(await startWg(lab, 'hA', 51820), await startWg(lab, 'hB', 51820));
        const [wa, wb] = wg as [WgHost, WgHost];
        await addPeer(lab, wa, wb);
        await addPeer(lab, wb, wa);
        const wgRun = (h: WgHost, server: string): LabProcess => lab.spawn(h.node, process.execPath, [CLI, 'wg', '--interface', h.name, '--server', server, '--timeout', '20', '--format', 'json'], { env: env() });
        const ga = wgRun(wa, S1);
        const gb = wgRun(wb, S2);
        const [rga, rgb] = await Promise.all([ga.exited, gb.exited]);
        assert.equal(rga.code, 0, ga.stderr);
        assert.equal(rgb.code, 0, gb.stderr);
        for (const g of [ga, gb]) {
          const result = JSON.parse(g.stdout) as { peers: { status: string }[] };
          assert.deepEqual(result.peers.map((p) => p.status), ['connected']);
        }
        assert.match(s1.stderr, /"wg-endpoint"/);
        assert.match(s2.stderr, /"wg-endpoint"/);
      } else {
        t.diagnostic('wireguard-go is not installed: the WireGuard step is skipped (CI installs it)');
      }

      // 3. A file across servers (TCP rendezvous on both, the stream punched through both NATs).
      const send = lab.spawn('hA', process.execPath, [CLI, 'send', '/etc/hostname', '--server', S1, '--as', 'sender', '--to', 'receiver', '--timeout', '20'], { env: env() });
      const receive = lab.spawn('hB', process.execPath, [CLI, 'receive', '--server', S2, '--as', 'receiver', '--to', 'sender', '--out', out, '--timeout', '20', '--yes'], { env: env() });
      const [rs, rr] = await Promise.all([send.exited, receive.exited]);
      assert.equal(rs.code, 0, send.stderr);
      assert.equal(rr.code, 0, receive.stderr);

      // 4. Failover of a punch: A waits with S1,S3; S1 is killed; A moves to S3; B on S2 meets it there.
      const fa = lab.spawn('hA', process.execPath, punchArgs(`${S1},${S3}`, 'fa', 'fb', 25), { env: env() });
      await fa.waitForOutput('stderr', 'registered with the server', 10_000);
      s1.kill('SIGKILL');
      await s1.exited;
      const fb = lab.spawn('hB', process.execPath, punchArgs(S2, 'fb', 'fa', 20), { env: env() });
      const [rfa, rfb] = await Promise.all([fa.exited, fb.exited]);
      assert.match(fa.stderr, /the server at 203\.0\.113\.1:3478 stopped answering; registering with 203\.0\.113\.1:3490/);
      assert.equal(rfa.code, 0, fa.stderr);
      assert.equal(rfb.code, 0, fb.stderr);

      // 4b. Failover of WireGuard discovery: both interfaces restarted on new ports (their endpoints now stale); A is
      // given S1,S3 with S1 dead: WG-SYNC to S1 goes unanswered, WireGuard's server peer and WG-SYNC move to S3, and A
      // and B (on S2) find each other again.
      if (withWg) {
        const [wa, wb] = wg as [WgHost, WgHost];
        await restartWg(lab, wa, 51821, [wb]);
        await restartWg(lab, wb, 51822, [wa]);
        const ga = lab.spawn('hA', process.execPath, [CLI, 'wg', '--interface', wa.name, '--server', `${S1},${S3}`, '--timeout', '20', '--format', 'json'], { env: env() });
        const gb = lab.spawn('hB', process.execPath, [CLI, 'wg', '--interface', wb.name, '--server', S2, '--timeout', '20', '--format', 'json'], { env: env() });
        const [rga, rgb] = await Promise.all([ga.exited, gb.exited]);
        assert.match(ga.stderr, /the server at 203\.0\.113\.1:3478 stopped answering; registering with 203\.0\.113\.1:3490/);
        assert.equal(rga.code, 0, ga.stderr);
        assert.equal(rgb.code, 0, gb.stderr);
        const peers = await wgPeers(lab, wa);
        assert.equal(peers.find((p) => p.key === wb.publicKey)?.endpoint.endsWith(':51822'), true, JSON.stringify(peers));
      }

      // 5. Failover of a send (TCP): S1 back; the sender waits on S1 with S1,S3; S1 is killed; its connection to S3
      // leaves from the same port; the receiver on S2 gets the file.
      const [again] = await startServers(lab, [[S1, 's1']]);
      assert.ok(again);
      s1 = again;
      await mkdir(join(out, 'f'));
      const fs = lab.spawn('hA', process.execPath, [CLI, 'send', '/etc/hostname', '--server', `${S1},${S3}`, '--as', 'fsender', '--to', 'freceiver', '--timeout', '25'], { env: env() });
      await s1.waitForOutput('stderr', '"peer":"fsender"', 10_000);
      s1.kill('SIGKILL');
      await s1.exited;
      const fr = lab.spawn('hB', process.execPath, [CLI, 'receive', '--server', S2, '--as', 'freceiver', '--to', 'fsender', '--out', join(out, 'f'), '--timeout', '20', '--yes'], { env: env() });
      const [rfs, rfr] = await Promise.all([fs.exited, fr.exited]);
      const fcontext = `sender: ${fs.stderr}\nreceiver: ${fr.stderr}\nS2: ${s2.stderr.slice(-3000)}\nS3: ${s3.stderr.slice(-3000)}`;
      assert.match(fs.stderr, /the server at 203\.0\.113\.1:3478 stopped answering; registering with 203\.0\.113\.1:3490/);
      assert.equal(rfs.code, 0, fcontext);
      assert.equal(rfr.code, 0, fcontext);
      assert.equal(await readFile(join(out, 'f', 'hostname'), 'utf8'), await readFile('/etc/hostname', 'utf8'));

      // 6. Redis down: a punch exits 14 naming the store within 8 s; the servers stay up and answer STUN.
      redis.kill('SIGKILL');
      await redis.exited;
      const started = Date.now();
      const down = lab.spawn('hB', process.execPath, punchArgs(S2, 'carol', 'dave', 20), { env: env() });
      const rd = await down.exited;
      const took = Date.now() - started;
      t.diagnostic(`punch with Redis down: exit ${String(rd.code)} after ${took} ms`);
      assert.equal(rd.code, 14, down.stderr);
      assert.match(down.stderr, /cannot reach its registration store/);
      assert.doesNotMatch(down.stderr, /absent|never registered/);
      assert.ok(took < 8000, `exit 14 after ${took} ms`);
      for (const [i, server] of [S2, S3].entries()) {
        const stun = lab.spawn(i === 0 ? 'hB' : 'hA', process.execPath, [CLI, 'stun', server, '--timeout', '3'], { env: env() });
        assert.equal((await stun.exited).code, 0, stun.stderr);
      }
      assert.ok(running(s2) && running(s3), 'the servers stay up with Redis down');

      // 7. Redis back (empty: nothing on disk): a pair across servers punches within 5 s of it.
      redis = await startRedis(lab);
      const back = Date.now();
      const c = lab.spawn('hA', process.execPath, punchArgs(S3, 'carol', 'dave', 5), { env: env() });
      const d = lab.spawn('hB', process.execPath, punchArgs(S2, 'dave', 'carol', 5), { env: env() });
      const [rc, rdv] = await Promise.all([c.exited, d.exited]);
      t.diagnostic(`first pair after Redis came back: exits ${String(rc.code)}/${String(rdv.code)}, done ${Date.now() - back} ms after`);
      assert.equal(rc.code, 0, c.stderr);
      assert.equal(rdv.code, 0, d.stderr);
      assert.ok(Date.now() - back < 5000 + 1500, 'within 5 s (the pair\'s own timeout), plus process start-up');
      assert.ok(running(s2) && running(s3), 'nothing crashed');
    } finally {
      for (const h of wg) await stopWg(h).catch(() => undefined);
      await lab.destroy();
      await assertNothingLeft(lab.runId);
      assertNoWgLeft(lab.runId);
      await rm(out, { recursive: true, force: true });
    }
  });

  it('symmetric ↔ symmetric on different servers: each relays through its own server, relay to relay; datagrams flow both ways', async (t) => {
    const lab = await createLab({ a: 'symmetric', b: 'symmetric' });
    try {
      await startRedis(lab);
      const [s1, s2] = await startServers(lab, [[S1, 's1'], [S2, 's2']]);
      assert.ok(s1 && s2);
      const command = ['--', process.execPath, HANDOFF, '--port', '$BURROW_LOCAL_PORT', '--remote-address', '$BURROW_REMOTE_ADDRESS', '--remote-port', '$BURROW_REMOTE_PORT', '--timeout-ms', '5000'];
      const a = lab.spawn('hA', process.execPath, punchArgs(S1, 'alice', 'bob', 15, ['--format', 'json', ...command]), { env: env() });
      const b = lab.spawn('hB', process.execPath, punchArgs(S2, 'bob', 'alice', 15, ['--format', 'json', ...command]), { env: env() });
      const [ra, rb] = await Promise.all([a.exited, b.exited]);
      const context = `A: ${a.stdout}\n${a.stderr.slice(-2000)}\nB: ${b.stdout}\n${b.stderr.slice(-2000)}\nS1: ${s1.stderr.slice(-1500)}\nS2: ${s2.stderr.slice(-1500)}`;
      assert.equal(ra.code, 0, context);
      assert.equal(rb.code, 0, context);
      for (const [p, own] of [[a, S1], [b, S2]] as const) {
        const lines = p.stdout.trim().split('\n');
        t.diagnostic(`${p === a ? 'A' : 'B'}: ${lines[0] ?? ''}`);
        const result = JSON.parse(lines[0] ?? '') as { path: string; relay?: { kind: string; server: string } };
        assert.equal(result.path, 'relay', context);
        // Each side's allocation is on the server it registered with (its own relay): the credentials in its
        // introduction are that server's, and both servers accept them (they derive from the network secret).
        if (result.relay) assert.equal(result.relay.server, own, context);
        const report = JSON.parse(lines.at(-1) ?? '') as { ok: boolean; heard: boolean; peerHeard: boolean };
        assert.ok(report.ok && report.heard && report.peerHeard, context);
      }
    } finally {
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });
});
