/**
 * The punch state machine, driven through the in-memory NAT simulator with a fake clock:
 * every NAT pairing, late joiners, loss, restarts, replays and the failure explanations.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpointKey } from '../../src/codec/address.js';
import { decodeMessage } from '../../src/codec/messages.js';
import { createSim, SERVER, topology, type PeerOutcome } from '../support/sim-punch.js';
import { SimNet, type SimNatKind } from '../support/simnet.js';

function pair(kindA: SimNatKind, kindB: SimNatKind, opts: { startB?: number; timeoutMs?: number; seed?: number; loss?: number; birthday?: false } = {}) {
  const net = new SimNet(1, opts.seed ?? 1);
  net.lossRate = opts.loss ?? 0;
  const t = topology(kindA, kindB, net);
  const sim = createSim(net, [
    { name: 'alice', peer: 'bob', at: t.a, timeoutMs: opts.timeoutMs ?? 5000, ...(opts.birthday === false ? { birthday: false } : {}) },
    { name: 'bob', peer: 'alice', at: t.b, startAt: opts.startB ?? 0, timeoutMs: opts.timeoutMs ?? 5000, ...(opts.birthday === false ? { birthday: false } : {}) },
  ]);
  return { sim, net, t };
}

function assertConnected(a: PeerOutcome | undefined, b: PeerOutcome | undefined): void {
  assert.ok(a?.result, `alice failed: ${a?.error?.message ?? 'no outcome'}`);
  assert.ok(b?.result, `bob failed: ${b?.error?.message ?? 'no outcome'}`);
}

describe('punch machine through simulated NATs', () => {
  const connecting: [SimNatKind, SimNatKind][] = [
    ['none', 'none'],
    ['full-cone', 'full-cone'],
    ['full-cone', 'address-restricted'],
    ['full-cone', 'port-restricted'],
    ['address-restricted', 'port-restricted'],
    ['port-restricted', 'port-restricted'],
    ['port-restricted', 'none'],
    ['full-cone', 'symmetric'],
    ['address-restricted', 'symmetric'],
    ['symmetric', 'full-cone'],
  ];
  for (const [ka, kb] of connecting) {
    for (const startB of [0, 300]) {
      it(`connects ${ka} ↔ ${kb} (bob starts at ${startB} ms)`, () => {
        const { sim, t } = pair(ka, kb, { startB });
        const [a, b] = sim.run(20_000);
        assertConnected(a, b);
        // Each side reports the address at which it reached the other, and they agree on one path.
        assert.equal(a!.result!.path, 'direct');
        assert.equal(b!.result!.path, 'direct');
        if (ka === 'none') assert.equal(b!.result!.remoteAddress, t.a.address);
        if (kb === 'none') assert.equal(a!.result!.remoteAddress, t.b.address);
      });
    }
  }

  it('connects fast when both start together: a few round trips after registering', () => {
    const { sim } = pair('port-restricted', 'port-restricted');
    const [a, b] = sim.run(20_000);
    assertConnected(a, b);
    // 1 ms per hop: registration, introduction, probes, nomination — well under 20 simulated ms.
    assert.ok(a!.result!.elapsedMs <= 20, `alice took ${a!.result!.elapsedMs} ms`);
    assert.ok(b!.result!.elapsedMs <= 20, `bob took ${b!.result!.elapsedMs} ms`);
  });

  it('a late joiner is introduced at once by a push, not by polling', () => {
    // 3333 ms: half-way between two of alice's refreshes, so only a push can be this fast.
    const { sim } = pair('port-restricted', 'port-restricted', { startB: 3333 });
    const [a, b] = sim.run(20_000);
    assertConnected(a, b);
    assert.ok(b!.finishedAt! - 3333 <= 20, `bob finished ${b!.finishedAt! - 3333} ms after starting`);
    assert.ok(a!.finishedAt! - 3333 <= 20, `alice finished ${a!.finishedAt! - 3333} ms after bob started`);
  });

  for (const [ka, kb] of [['port-restricted', 'symmetric'], ['symmetric', 'symmetric'], ['symmetric', 'port-restricted']] as const) {
    it(`fails ${ka} ↔ ${kb} at the timeout with exit 5 and names the symmetric NAT (birthday probing off)`, () => {
      const { sim } = pair(ka, kb, { timeoutMs: 3000, birthday: false });
      const [a, b] = sim.run(20_000);
      for (const o of [a, b]) {
        assert.equal(o?.error?.code, 'NO_PATH', o?.error?.message);
        assert.match(o.error.message, /new public port for every destination \(symmetric NAT\)/);
        assert.match(o.error.message, /relay or port prediction/);
        assert.ok(o.finishedAt! <= 3000 + 1, `finished at ${o.finishedAt}`);
      }
      if (ka === 'symmetric' && kb === 'symmetric') assert.match(a!.error!.message, /both sides' NATs/);
    });
  }

  it('takes the LAN path when both peers are behind one NAT that does not hairpin', () => {
    const net = new SimNet(1, 3);
    const t = topology('port-restricted', 'none', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a },
      { name: 'bob', peer: 'alice', at: t.a2 },
    ]);
    const [a, b] = sim.run(20_000);
    assertConnected(a, b);
    assert.equal(a!.result!.path, 'lan');
    assert.equal(b!.result!.path, 'lan');
    assert.equal(endpointKey({ address: a!.result!.remoteAddress, port: a!.result!.remotePort }), endpointKey(t.a2));
    assert.equal(endpointKey({ address: b!.result!.remoteAddress, port: b!.result!.remotePort }), endpointKey(t.a));
  });

  it('fails with exit 3 at once when its secret differs from the server', () => {
    const net = new SimNet();
    const t = topology('port-restricted', 'port-restricted', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, secret: 'wrong secret' },
      { name: 'bob', peer: 'alice', at: t.b, timeoutMs: 2000 },
    ]);
    const [a, b] = sim.run(20_000);
    assert.equal(a?.error?.code, 'AUTH_FAILED');
    assert.match(a.error.message, /secret differs from the server's/);
    assert.ok(a.finishedAt! < 100);
    assert.equal(b?.error?.code, 'PEER_NOT_FOUND');
  });

  it('fails with exit 4 at the timeout when the peer never registers', () => {
    const net = new SimNet();
    const t = topology('port-restricted', 'port-restricted', net);
    const sim = createSim(net, [{ name: 'alice', peer: 'bob', at: t.a, timeoutMs: 2000 }]);
    const [a] = sim.run(20_000);
    assert.equal(a?.error?.code, 'PEER_NOT_FOUND');
    assert.match(a.error.message, /never registered with the server/);
    assert.equal(a.finishedAt, 2000);
  });

  it('fails with exit 1 and says so when the server never answers', () => {
    const net = new SimNet();
    const t = topology('port-restricted', 'port-restricted', net);
    const sim = createSim(net, [{ name: 'alice', peer: 'bob', at: t.a, timeoutMs: 2000 }], []);
    net.listen(SERVER, () => undefined); // a black hole where the server should be
    const [a] = sim.run(20_000);
    assert.equal(a?.error?.code, 'SERVER_UNREACHABLE');
    assert.match(a.error.message, /no answer from the rendezvous server/);
  });

  it('keeps the NAT mapping to the server fresh while waiting', () => {
    const { sim, net } = pair('port-restricted', 'port-restricted', { startB: 10_000, timeoutMs: 20_000 });
    const [a, b] = sim.run(30_000);
    assertConnected(a, b);
    const refreshes = net.captured.filter((c) => c.to.port === SERVER.port && c.from.address === '198.51.100.2').length;
    assert.ok(refreshes >= 10, `only ${refreshes} registrations from alice in 10 s`);
  });

  it('connects through 30% loss in most runs', () => {
    let ok = 0;
    for (let seed = 1; seed <= 40; seed++) {
      const { sim } = pair('port-restricted', 'port-restricted', { seed, loss: 0.3, timeoutMs: 10_000 });
      const [a, b] = sim.run(30_000);
      if (a?.result && b?.result) ok++;
    }
    assert.ok(ok >= 38, `${ok}/40 connected`);
  });

  it('recovers when the server restarts mid-punch', () => {
    const { sim } = pair('port-restricted', 'port-restricted', { startB: 2000, timeoutMs: 8000 });
    let restarted = false;
    const [a, b] = sim.run(20_000, (now) => {
      if (!restarted && now >= 1000) {
        restarted = true;
        sim.restartServer();
      }
    });
    assertConnected(a, b);
  });

  it('a captured probe re-sent or relayed by a third host never becomes either side’s result', () => {
    // An on-path attacker sees every datagram as it is sent and races a copy from its own address to the
    // same destination (arriving first), and also relays whatever reaches it to the other peer's public
    // address, so that it could sit in the middle of a working path.
    const { sim, net, t } = pair('full-cone', 'full-cone');
    const attacker = { address: '203.0.113.66', port: 6666 };
    const publicOf = new Map([[t.a.address, '198.51.100.2'], [t.b.address, '198.51.100.6']]);
    let raced = 0;
    let relayed = 0;
    net.tap = (from, to, data) => {
      if (from.address === attacker.address || raced >= 500) return;
      const d = decodeMessage(data);
      if (d.ok && (d.msg.kind === 'probe' || d.msg.kind === 'probe-ok')) {
        raced++;
        net.send(attacker, to, data, 0);
      }
    };
    net.listen(attacker, (from, data) => {
      if (relayed >= 500) return;
      relayed++;
      // Forward to the peer that did not send it, at its public address.
      const other = from.address === '198.51.100.2' ? '198.51.100.6' : '198.51.100.2';
      const port = from.address === '198.51.100.2' ? 40000 : 40000;
      net.send(attacker, { address: other, port }, data, 0);
    });
    const [a, b] = sim.run(20_000);
    assertConnected(a, b);
    assert.ok(raced > 0 && relayed > 0, `raced ${raced}, relayed ${relayed}`);
    for (const o of [a!, b!]) assert.notEqual(o.result!.remoteAddress, attacker.address);
    assert.ok(publicOf.size === 2);
    const dropped = [...a!.events, ...b!.events].filter((e) => e.type === 'dropped' && e.from.address === attacker.address);
    assert.ok(dropped.length > 0, 'the attacker’s copies were not even seen');
  });
});
