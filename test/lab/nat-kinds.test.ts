/**
 * The lab's emulation itself, independent of Burrow: each router kind must map and filter as RFC 4787 says, hA and
 * hA2 must share a LAN, hairpinning must be off, IPv6 must only be firewalled, and teardown must leave nothing.
 *
 * Negative checks ("this datagram must not arrive") are made deterministic without long sleeps: the forbidden
 * datagrams are sent first, then an allowed control datagram over the same path; once the control has arrived, the
 * forbidden ones would have too. A short grace period covers reordering between CPUs.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { UdpAgent, type Endpoint } from '../../src/lab/agent.js';
import { NAT_KINDS, type NatKind } from '../../src/lab/nat-rules.js';
import { isRunning, namespacePids } from '../../src/lab/netns.js';
import { createLab, type Lab } from '../../src/lab/topology.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';

const GRACE_MS = 150;
const P = 4000;
const Q = 4001;

/** Which unsolicited senders reach hA after it sent to 203.0.113.1:P (RFC 4787 §5). */
const FILTERING: Record<NatKind, { readonly sameIpOtherPort: boolean; readonly otherIpSamePort: boolean; readonly otherIpOtherPort: boolean }> = {
  'full-cone': { sameIpOtherPort: true, otherIpSamePort: true, otherIpOtherPort: true },
  'address-restricted': { sameIpOtherPort: true, otherIpSamePort: false, otherIpOtherPort: false },
  'port-restricted': { sameIpOtherPort: false, otherIpSamePort: false, otherIpOtherPort: false },
  symmetric: { sameIpOtherPort: false, otherIpSamePort: false, otherIpOtherPort: false },
  firewall: { sameIpOtherPort: false, otherIpSamePort: false, otherIpOtherPort: false },
};

function same(a: Endpoint, b: Endpoint): boolean {
  return a.address === b.address && a.port === b.port;
}

// In CI an unavailable lab is a failure of its own, not only cancelled tests.
void it('the NAT lab is available', { skip: labSkip }, assertLabAvailable);

for (const kind of NAT_KINDS) {
  void describe(`lab router of kind ${kind}`, { skip: labSkip }, () => {
    let lab: Lab | undefined;
    let pub: UdpAgent;
    let hA: UdpAgent;
    let hA2: UdpAgent;
    const server = { p1P: { address: '203.0.113.1', port: P }, p1Q: { address: '203.0.113.1', port: Q }, p2P: { address: '203.0.113.2', port: P }, p2Q: { address: '203.0.113.2', port: Q } };
    const server6 = { v1P: { address: '2001:db8::1', port: P }, v1Q: { address: '2001:db8::1', port: Q } };

    before(async () => {
      assertLabAvailable();
      lab = await createLab({ a: kind, b: 'port-restricted', ipv6: true });
      [pub, hA, hA2] = await Promise.all([UdpAgent.start(lab, 'pub'), UdpAgent.start(lab, 'hA'), UdpAgent.start(lab, 'hA2')]);
      for (const [id, endpoint] of [...Object.entries(server), ...Object.entries(server6)]) {
        await pub.bind(id, endpoint.address, endpoint.port);
      }
    });

    after(async () => {
      if (lab === undefined) return;
      const runId = lab.runId;
      await lab.destroy();
      await assertNothingLeft(runId);
    });

    const routerPublic = (): string => lab!.addresses.routers.natA.public.v4;
    const hostA = (): string => lab!.addresses.hosts.hA.v4;

    void it('maps one internal socket to one external port for every destination, unless symmetric', async () => {
      const local = await hA.bind('map');
      const observed: Endpoint[] = [];
      for (const [name, to] of [['p1P', server.p1P], ['p2P', server.p2P], ['p1Q', server.p1Q]] as const) {
        await hA.send('map', to, `map-${name}`);
        observed.push(await pub.receive(`map-${name}`));
      }
      const ports = new Set(observed.map((o) => o.port));
      const expectedAddress = kind === 'firewall' ? hostA() : routerPublic();
      for (const o of observed) assert.equal(o.address, expectedAddress, 'the source address pub sees');
      if (kind === 'symmetric') {
        assert.ok(ports.size > 1, `a symmetric NAT must map each destination to a new port; saw ${[...ports].join(', ')}`);
      } else {
        assert.equal(ports.size, 1, `mapping must be endpoint-independent; saw ports ${[...ports].join(', ')}`);
      }
      if (kind === 'firewall' || kind === 'port-restricted') {
        assert.ok(ports.has(local.port), `the internal port ${local.port} must be kept; saw ${[...ports].join(', ')}`);
      }
    });

    void it('filters unsolicited inbound datagrams as RFC 4787 says for this kind', async () => {
      await hA.bind('filter');
      await hA.send('filter', server.p1P, 'filter-open');
      const mapped = await pub.receive('filter-open');
      await pub.send('p1Q', mapped, 'from-p1Q');
      await pub.send('p2P', mapped, 'from-p2P');
      await pub.send('p2Q', mapped, 'from-p2Q');
      await pub.send('p1P', mapped, 'from-p1P');
      await hA.receive('from-p1P');
      await sleep(GRACE_MS);
      const arrived = (data: string): boolean => hA.received(data).some((d) => d.id === 'filter');
      const expected = FILTERING[kind];
      assert.deepEqual(
        { sameIpOtherPort: arrived('from-p1Q'), otherIpSamePort: arrived('from-p2P'), otherIpOtherPort: arrived('from-p2Q') },
        expected,
      );
      // Datagrams that arrive must arrive from their true source (the NAT rewrites only the destination).
      const sources: Record<string, Endpoint> = { 'from-p1Q': server.p1Q, 'from-p2P': server.p2P, 'from-p2Q': server.p2Q, 'from-p1P': server.p1P };
      for (const d of hA.received().filter((x) => x.id === 'filter')) {
        const source = sources[d.data];
        assert.ok(source !== undefined && same(d, source), `${d.data} arrived from ${d.address}:${d.port}`);
      }
    });

    void it('lets hA and hA2 reach each other directly on their LAN', async () => {
      const a = await hA.bind('lan');
      const b = await hA2.bind('lan');
      await hA.send('lan', { address: lab!.addresses.hosts.hA2.v4, port: b.port }, 'lan-ping');
      const ping = await hA2.receive('lan-ping');
      assert.ok(same(ping, { address: hostA(), port: a.port }), `hA2 saw ${ping.address}:${ping.port}, not hA's own address`);
      await hA2.send('lan', ping, 'lan-pong');
      const pong = await hA.receive('lan-pong');
      assert.ok(same(pong, { address: lab!.addresses.hosts.hA2.v4, port: b.port }));
    });

    // A firewall has no public mapping to hairpin, so the case exists only for NAT kinds.
    if (kind !== 'firewall') void it('does not hairpin: hA2 cannot reach hA through the router’s public address', async () => {
      await hA.bind('hairpin');
      await hA.send('hairpin', server.p1P, 'hairpin-open');
      const mapped = await pub.receive('hairpin-open');
      assert.equal(mapped.address, routerPublic());
      await hA2.bind('hairpin');
      await hA2.send('hairpin', mapped, 'hairpin-probe');
      await pub.send('p1P', mapped, 'hairpin-control');
      await hA.receive('hairpin-control');
      await sleep(GRACE_MS);
      assert.equal(hA.received('hairpin-probe').length, 0, 'a datagram to the public mapping from the LAN was hairpinned');
    });

    void it('forgets mappings on flushConntrack', async () => {
      await hA.bind('flush');
      await hA.send('flush', server.p1P, 'flush-open');
      const before = await pub.receive('flush-open');
      await lab!.flushConntrack('natA');
      await pub.send('p1P', before, 'flush-stale');
      await hA.send('flush', server.p1P, 'flush-reopen');
      const reopened = await pub.receive('flush-reopen');
      await pub.send('p1P', reopened, 'flush-control');
      await hA.receive('flush-control');
      await sleep(GRACE_MS);
      assert.equal(hA.received('flush-stale').length, 0, 'a reply to the flushed mapping still arrived');
    });

    void it('drops forwarded packets at 100% loss and forwards again at 0%', async () => {
      await hA.bind('loss');
      await lab!.setLoss('natA', 100);
      await hA.send('loss', server.p1P, 'loss-dropped');
      await lab!.setLoss('natA', 0);
      await hA.send('loss', server.p1P, 'loss-passed');
      await pub.receive('loss-passed');
      await sleep(GRACE_MS);
      assert.equal(pub.received('loss-dropped').length, 0);
    });

    void it('never translates IPv6 and lets in only replies', async () => {
      const local = await hA.bind('v6', '::');
      await hA.send('v6', server6.v1P, 'v6-open');
      const seen = await pub.receive('v6-open');
      assert.ok(same(seen, { address: lab!.addresses.hosts.hA.v6!, port: local.port }), `pub saw ${seen.address}:${seen.port}`);
      // hA2 has a socket but never sent anything: nothing may reach it.
      const cold = await hA2.bind('v6', '::');
      await pub.send('v1P', { address: lab!.addresses.hosts.hA2.v6!, port: cold.port }, 'v6-cold');
      await pub.send('v1Q', seen, 'v6-unsolicited');
      await pub.send('v1P', seen, 'v6-reply');
      await hA.receive('v6-reply');
      await sleep(GRACE_MS);
      assert.equal(hA.received('v6-unsolicited').length, 0, 'an unsolicited IPv6 datagram passed the firewall');
      assert.equal(hA2.received('v6-cold').length, 0, 'an IPv6 datagram reached a host that never sent anything');
    });
  });
}

void describe('lab lifecycle', { skip: labSkip }, () => {
  before(assertLabAvailable);

  void it('kills tracked and untracked processes and removes every namespace', async (t) => {
    const lab = await createLab({ a: 'port-restricted', b: 'symmetric' });
    const runId = lab.runId;
    let pids: number[] = [];
    try {
      const tracked = lab.spawn('hA', 'sleep', ['30']);
      // A grandchild the lab never saw: found only through `ip netns pids`.
      const shell = lab.spawn('pub', 'sh', ['-c', 'sleep 30 & echo started; wait']);
      await shell.waitForOutput('stdout', 'started', 5_000);
      pids = [...(await namespacePids(lab.namespaces.hA)), ...(await namespacePids(lab.namespaces.pub))];
      assert.equal(pids.length, 3, `expected sleep, sh and its child; found ${pids.join(', ')}`);
      const started = performance.now();
      await lab.destroy();
      t.diagnostic(`teardown with 3 processes: ${(performance.now() - started).toFixed(1)} ms`);
      assert.equal((await tracked.exited).signal, 'SIGKILL');
    } finally {
      await lab.destroy();
    }
    assert.deepEqual(pids.filter(isRunning), [], 'processes survived teardown');
    await assertNothingLeft(runId);
    await assert.rejects(lab.exec('hA', 'true', []), { code: 'LAB_DESTROYED' });
  });

  void it('builds and tears down repeatedly without leaving anything behind', async (t) => {
    const setup: number[] = [];
    const teardown: number[] = [];
    for (let i = 0; i < 5; i++) {
      const lab = await createLab({ a: NAT_KINDS[i % NAT_KINDS.length]!, b: 'full-cone', ipv6: i % 2 === 0 });
      setup.push(lab.setupMs);
      const started = performance.now();
      await lab.destroy();
      teardown.push(performance.now() - started);
      await assertNothingLeft(lab.runId);
    }
    t.diagnostic(`bring-up ms: ${setup.map((ms) => ms.toFixed(0)).join(', ')}; teardown ms: ${teardown.map((ms) => ms.toFixed(0)).join(', ')}`);
  });
});
