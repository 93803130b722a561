/**
 * `burrow wg` with real wireguard-go interfaces across emulated NATs (issue 4). The peers know each other's keys and
 * tunnel addresses but no endpoints; the server gets no WireGuard configuration at all. Every case checks the
 * handshake and UDP data through the tunnel, or the exact failure message and exit code.
 */
import assert from 'node:assert/strict';
import { describe, it, before } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { UdpAgent, type Lab, type LabOptions } from '../../src/lab/index.js';
import { createLab } from '../../src/lab/topology.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';
import { addPeer, assertNoWgLeft, burrowWg, restartWg, startServer, startWg, stopWg, tunnelCarries, wgAvailable, wgPeers, type WgHost } from './wg-lab.js';

const wgSkip: string | false = labSkip !== false ? labSkip : !wgAvailable() && process.env.CI !== 'true' ? 'skipped: wireguard-go or wg is not installed' : false;

async function withLab(options: LabOptions, body: (lab: Lab, hosts: WgHost[]) => Promise<void>): Promise<void> {
  const lab = await createLab(options);
  const hosts: WgHost[] = [];
  try {
    await body(lab, hosts);
  } finally {
    for (const h of hosts) await stopWg(h).catch(() => undefined);
    await lab.destroy();
    await assertNothingLeft(lab.runId);
    assertNoWgLeft(lab.runId);
  }
}

/** Two hosts with wireguard-go, each listing the other as a peer (key and tunnel address, no endpoint). */
async function meshOf(lab: Lab, hosts: WgHost[], nodes: readonly ('hA' | 'hA2' | 'hB')[]): Promise<WgHost[]> {
  for (const node of nodes) hosts.push(await startWg(lab, node, 51820));
  for (const h of hosts) for (const p of hosts) if (p !== h) await addPeer(lab, h, p);
  return hosts;
}

async function runOneShot(lab: Lab, hosts: readonly WgHost[], timeout = 25, server?: string): Promise<void> {
  const procs = hosts.map((h) => burrowWg(lab, h, ['--timeout', String(timeout), '--format', 'json'], server));
  const exits = await Promise.all(procs.map((p) => p.exited));
  exits.forEach((e, i) => {
    assert.equal(e.code, 0, `burrow wg on ${hosts[i]?.node ?? '?'} exited ${String(e.code)}: ${procs[i]?.stderr ?? ''}`);
  });
  const times: number[] = [];
  for (const [i, p] of procs.entries()) {
    const result = JSON.parse(p.stdout) as { elapsedMs: number; peers: { key: string; status: string }[] };
    const peers = hosts.filter((h) => h !== hosts[i]);
    assert.deepEqual(result.peers.map((x) => x.key).sort(), peers.map((h) => h.publicKey).sort());
    for (const x of result.peers) assert.equal(x.status, 'connected');
    times.push(result.elapsedMs);
  }
  process.stdout.write(`# wg time to every handshake (ms, per side): ${times.join(', ')}\n`);
}

describe('burrow wg: WireGuard endpoint discovery across emulated NATs (lab)', { skip: wgSkip }, () => {
  before(() => {
    assertLabAvailable();
    assert.ok(wgAvailable(), 'wireguard-go and wg must be installed for the WireGuard lab tests');
  });

  const pairs: [LabOptions['a'], LabOptions['b']][] = [
    ['port-restricted', 'port-restricted'],
    ['full-cone', 'symmetric'],
    ['firewall', 'port-restricted'],
  ];
  for (const [a, b] of pairs) {
    it(`two peers handshake and carry UDP: ${a} ↔ ${b}`, async () => {
      await withLab({ a, b }, async (lab, hosts) => {
        await startServer(lab);
        const [hA, hB] = await meshOf(lab, hosts, ['hA', 'hB']);
        assert.ok(hA && hB);
        await runOneShot(lab, [hA, hB]);
        await tunnelCarries(lab, hA, hB, 'a-to-b');
        await tunnelCarries(lab, hB, hA, 'b-to-a');
      });
    });
  }

  it('IPv6: two peers behind stateful firewalls find each other over IPv6', async () => {
    await withLab({ a: 'firewall', b: 'firewall', ipv6: true }, async (lab, hosts) => {
      await startServer(lab, '[2001:db8::1]:3478');
      const [hA, hB] = await meshOf(lab, hosts, ['hA', 'hB']);
      assert.ok(hA && hB);
      await runOneShot(lab, [hA, hB], 25, '[2001:db8::1]:3478');
      const row = (await wgPeers(lab, hA)).find((p) => p.key === hB.publicKey);
      assert.match(row?.endpoint ?? '', /^\[2001:db8:b::/);
      await tunnelCarries(lab, hA, hB, 'v6-a-to-b');
    });
  });

  it('three-peer mesh: two behind one NAT (LAN path) and one behind another; every pair handshakes', async () => {
    await withLab({ a: 'port-restricted', b: 'port-restricted' }, async (lab, hosts) => {
      await startServer(lab);
      const [hA, hA2, hB] = await meshOf(lab, hosts, ['hA', 'hA2', 'hB']);
      assert.ok(hA && hA2 && hB);
      await runOneShot(lab, [hA, hA2, hB]);
      // hA and hA2 reach each other on the LAN (the NATs do not hairpin).
      const row = (await wgPeers(lab, hA)).find((p) => p.key === hA2.publicKey);
      assert.equal(row?.endpoint, `${lab.addresses.hosts.hA2.v4}:51820`);
      await tunnelCarries(lab, hA, hA2, 'a-to-a2');
      await tunnelCarries(lab, hA2, hB, 'a2-to-b');
      await tunnelCarries(lab, hB, hA, 'b-to-a');
    });
  });

  it("the field report's setup: the interface's only peer is the rendezvous server's host → exit 9, says so", async () => {
    await withLab({ a: 'port-restricted', b: 'port-restricted' }, async (lab, hosts) => {
      await startServer(lab);
      const [hA] = await meshOf(lab, hosts, ['hA']);
      assert.ok(hA);
      // The hub: a WireGuard peer at the rendezvous server's own address, as in natpunch-go's field report.
      const hubKey = 'Hub0000000000000000000000000000000000000000=';
      const set = await lab.exec('hA', 'wg', ['set', hA.name, 'peer', hubKey, 'endpoint', '203.0.113.1:51820', 'allowed-ips', '192.0.2.200/32']);
      assert.equal(set.code, 0, set.stderr);
      const p = burrowWg(lab, hA, ['--timeout', '5']);
      const exit = await p.exited;
      assert.equal(exit.code, 9, p.stderr);
      assert.match(p.stderr, /only peer .* is the rendezvous server's own host/);
      assert.match(p.stderr, /add each peer/);
    });
  });

  it('diagnoses: peer never registered (4), symmetric NAT on the path (5), no handshake (8)', async () => {
    // One lab: port-restricted hA and symmetric hB. First hA alone (hB never runs burrow).
    await withLab({ a: 'port-restricted', b: 'symmetric' }, async (lab, hosts) => {
      await startServer(lab);
      const [hA, hB] = await meshOf(lab, hosts, ['hA', 'hB']);
      assert.ok(hA && hB);
      const alone = burrowWg(lab, hA, ['--timeout', '4']);
      assert.equal((await alone.exited).code, 4, alone.stderr);
      assert.match(alone.stderr, new RegExp(`peer ${hB.publicKey.replace(/[+/]/g, '\\$&')} never registered`));
      // Both run: port-restricted ↔ symmetric cannot handshake directly.
      const both = [burrowWg(lab, hA, ['--timeout', '12']), burrowWg(lab, hB, ['--timeout', '12'])];
      const [ea, eb] = await Promise.all(both.map((p) => p.exited));
      assert.equal(ea?.code, 5, both[0]?.stderr);
      assert.match(both[0]?.stderr ?? '', /sits behind a NAT that allocates a new public port for every destination/);
      // One-shot cannot stay on as the relay's proxy: it says what would work.
      assert.match(both[0]?.stderr ?? '', /the relay needs --continuous/);
      assert.match(both[0]?.stderr ?? '', /burrow wg --interface \S+ --continuous/);
      assert.equal(eb?.code, 5, both[1]?.stderr);
    });
    // Keys that do not match: hB does not list hA, so hA's handshakes are ignored.
    await withLab({ a: 'port-restricted', b: 'port-restricted' }, async (lab, hosts) => {
      await startServer(lab);
      const hA = await startWg(lab, 'hA', 51820);
      const hB = await startWg(lab, 'hB', 51820);
      hosts.push(hA, hB);
      await addPeer(lab, hA, hB);
      const stranger = await startWg(lab, 'hA2', 51820);
      hosts.push(stranger);
      await addPeer(lab, hB, stranger); // hB has a peer (so it runs), but not hA
      const pa = burrowWg(lab, hA, ['--timeout', '8']);
      const pb = burrowWg(lab, hB, ['--timeout', '8']);
      const [ea] = await Promise.all([pa.exited, pb.exited]);
      assert.equal(ea.code, 8, pa.stderr);
      assert.match(pa.stderr, /is set but no handshake completed/);
    });
  });

  it('diagnoses: no such interface (10); WireGuard blocked towards the server (12)', async () => {
    await withLab({ a: 'port-restricted', b: 'port-restricted' }, async (lab, hosts) => {
      await startServer(lab);
      const [hA, hB] = await meshOf(lab, hosts, ['hA', 'hB']);
      assert.ok(hA && hB);
      const missing = burrowWg(lab, { ...hA, name: `${hA.name.slice(0, 12)}zz` }, ['--timeout', '3']);
      assert.equal((await missing.exited).code, 10, missing.stderr);
      assert.match(missing.stderr, /cannot be read/);
      // A firewall on hA drops WireGuard's packets to the server (but not burrow's own).
      const rules = "table inet bwtest {\n  chain out {\n    type filter hook output priority 0;\n    udp sport 51820 ip daddr 203.0.113.1 drop\n  }\n}\n";
      const nft = await lab.exec('hA', 'nft', ['-f', '-'], { input: rules });
      assert.equal(nft.code, 0, nft.stderr);
      // A server peer left from an earlier secret (same server address and port, no allowed IPs) is removed.
      const staleKey = Buffer.alloc(32, 7).toString('base64');
      const stale = await lab.exec('hA', 'wg', ['set', hA.name, 'peer', staleKey, 'endpoint', '203.0.113.1:3478']);
      assert.equal(stale.code, 0, stale.stderr);
      const blocked = burrowWg(lab, hA, ['--timeout', '5']);
      assert.equal((await blocked.exited).code, 12, blocked.stderr);
      assert.match(blocked.stderr, /did not complete a handshake with the rendezvous server/);
      assert.ok(!(await wgPeers(lab, hA)).some((p) => p.key === staleKey), 'the stale server peer was removed');
    });
  });

  it('--continuous heals a restarted wireguard-go (new port), a flushed NAT and a restarted server, without disturbing live tunnels', async () => {
    const intervalS = 5;
    await withLab({ a: 'port-restricted', b: 'port-restricted' }, async (lab, hosts) => {
      let server = await startServer(lab);
      const [hA, hB] = await meshOf(lab, hosts, ['hA', 'hB']);
      assert.ok(hA && hB);
      await runOneShot(lab, [hA, hB]);

      // A steady stream through the established tunnel while the watchers start and run: nothing may be lost.
      const sender = await UdpAgent.start(lab, 'hA', 60);
      const receiver = await UdpAgent.start(lab, 'hB', 60);
      try {
        await sender.bind('s', hA.tunnel, 0);
        const to = await receiver.bind('r', hB.tunnel, 7001);
        const watchers = [burrowWg(lab, hA, ['--continuous', '--interval', String(intervalS)]), burrowWg(lab, hB, ['--continuous', '--interval', String(intervalS)])];
        const sent = 2.5 * intervalS * 10;
        for (let i = 0; i < sent; i++) {
          await sender.send('s', to, `steady-${i}`);
          await delay(100);
        }
        await delay(500);
        const got = new Set(receiver.received().map((d) => d.data).filter((d) => d.startsWith('steady-')));
        assert.equal(got.size, sent, `lost ${sent - got.size} of ${sent} datagrams while burrow wg --continuous ran`);

        // Restart hB's wireguard-go on a new port: hA must learn the new endpoint.
        await restartWg(lab, hB, 51999, [hA]);
        const restartedAt = Date.now();
        await tunnelCarries(lab, hA, hB, 'after-restart', Math.ceil((2 * intervalS * 1000) / 300) + 10);
        const restartHealMs = Date.now() - restartedAt;
        const row = (await wgPeers(lab, hA)).find((p) => p.key === hB.publicKey);
        assert.match(row?.endpoint ?? '', /:51999$/, 'hA uses hB\'s new port');

        // Flush hB's router: conntrack and NAT state gone, so hA's packets are dropped there until hB sends again.
        await lab.flushConntrack('natB');
        const flushedAt = Date.now();
        await tunnelCarries(lab, hA, hB, 'after-flush', Math.ceil((2 * intervalS * 1000) / 300) + 10);
        const flushHealMs = Date.now() - flushedAt;
        // Restart the server: it forgets every interface and session. Both sides must be known to the new one again,
        // and a peer that then moves must still be found.
        server.kill('SIGTERM');
        await server.exited;
        server = await startServer(lab);
        const serverAt = Date.now();
        const learnt = (): number => server.stderr.split('\n').filter((l) => l.includes('"wg-endpoint"')).length;
        await server.waitForOutput('stderr', () => learnt() >= 2, 3 * intervalS * 1000);
        const serverHealMs = Date.now() - serverAt;
        await restartWg(lab, hB, 51998, [hA]);
        const movedAt = Date.now();
        await tunnelCarries(lab, hA, hB, 'after-server-restart', Math.ceil((2 * intervalS * 1000) / 300) + 10);
        const afterServerMs = Date.now() - movedAt;
        for (const w of watchers) w.kill('SIGTERM');
        const exits = await Promise.all(watchers.map((w) => w.exited));
        for (const [i, e] of exits.entries()) assert.equal(e.code, 0, watchers[i]?.stderr);
        process.stdout.write(`# wg healing: restart ${restartHealMs} ms, NAT flush ${flushHealMs} ms, server restart: both re-registered in ${serverHealMs} ms, then a moved peer found in ${afterServerMs} ms (interval ${intervalS} s); steady stream ${got.size}/${sent}\n`);
      } finally {
        await sender.stop();
        await receiver.stop();
      }
    });
  });
});
