/**
 * The ICE-style agent through the simulator with a fake clock: nomination waits per kind of path (LAN beats direct
 * beats relay; a relay is taken after its wait when nothing better validates), session mode (a later direct path is
 * an upgrade, lost consent falls back to the relay, close and partner-left), triggered checks, several local
 * transports, trickled candidates, pacing, and the structured failure reason.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpointKey, type Endpoint } from '../../src/codec/address.js';
import { BurrowAttr, decodeCandidate, decodeMessage, ProbeFlag } from '../../src/codec/messages.js';
import { decodeStun } from '../../src/codec/stun.js';
import { candidatePriority, DEFAULT_TIMING, punchFailureOf, type PunchEvent } from '../../src/core/punch/index.js';
import { createSim, RELAY, SERVER, topology, type PeerOutcome } from '../support/sim-punch.js';
import { SimNet } from '../support/simnet.js';

function connected(a: PeerOutcome | undefined, b: PeerOutcome | undefined): void {
  assert.ok(a?.result, `alice failed: ${a?.error?.message ?? 'no outcome'}`);
  assert.ok(b?.result, `bob failed: ${b?.error?.message ?? 'no outcome'}`);
}

/** The flags of every probe request a peer sent on `transport`, with the time. */
function probes(o: PeerOutcome, transport?: string): { at: number; flags: number; to: Endpoint; transport: string }[] {
  const out: { at: number; flags: number; to: Endpoint; transport: string }[] = [];
  for (const s of o.sends) {
    if (transport !== undefined && s.transport !== transport) continue;
    const d = decodeMessage(s.data);
    if (d.ok && d.msg.kind === 'probe') out.push({ at: s.at, flags: d.msg.flags, to: s.to, transport: s.transport });
  }
  return out;
}

function kindOf(data: Uint8Array): string | undefined {
  const d = decodeMessage(data);
  return d.ok ? d.msg.kind : undefined;
}

function firstEvent<T extends PunchEvent['type']>(o: PeerOutcome, type: T): { at: number; event: Extract<PunchEvent, { type: T }> } | undefined {
  const e = o.timeline.find((x) => x.event.type === type);
  return e as { at: number; event: Extract<PunchEvent, { type: T }> } | undefined;
}

/** Drops every datagram between the peers that does not go through the relay (a router rule blocking the direct path). */
function blockDirect(net: SimNet, blocked: () => boolean): void {
  net.drop = (from, to) => {
    if (!blocked()) return false;
    const infra = [SERVER.address, RELAY.address];
    return !infra.includes(from.address) && !infra.includes(to.address);
  };
}

describe('nomination: LAN, then direct, then relay', () => {
  it('LAN beats direct: behind one hairpinning NAT both validate, and the LAN pair is the one taken', () => {
    const net = new SimNet(1, 5);
    const t = topology('full-cone', 'none', net, { hairpinA: true });
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a },
      { name: 'bob', peer: 'alice', at: t.a2 },
    ]);
    const [a, b] = sim.run(20_000);
    connected(a, b);
    assert.equal(a!.result!.path, 'lan');
    assert.equal(b!.result!.path, 'lan');
    assert.equal(endpointKey({ address: a!.result!.remoteAddress, port: a!.result!.remotePort }), endpointKey(t.a2));
    // Hairpinning made the direct path work too (it was valid), but it was never what the partner accepted.
    const validDirect = [...a!.events, ...b!.events].some((e) => e.type === 'path-valid' && e.path === 'direct');
    assert.ok(validDirect, 'the direct (hairpinned) path never validated: the scenario does not test the preference');
  });

  it('direct beats relay: with relays on both sides a direct pair is taken and no relayed pair is ever nominated', () => {
    const net = new SimNet(1, 6);
    const t = topology('port-restricted', 'port-restricted', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, relayAt: 0 },
      { name: 'bob', peer: 'alice', at: t.b, relayAt: 0 },
    ]);
    const [a, b] = sim.run(20_000);
    connected(a, b);
    assert.equal(a!.result!.path, 'direct');
    assert.equal(b!.result!.path, 'direct');
    assert.ok(probes(a!, 'relay').length > 0, 'alice never checked through her relay');
    assert.ok(probes(a!).every((p) => p.transport !== 'relay' || (p.flags & ProbeFlag.NOMINATE) === 0), 'a relayed pair was nominated');
  });

  it('a relayed pair is taken once nothing better validated after the relay wait (symmetric ↔ symmetric)', () => {
    const net = new SimNet(1, 7);
    const t = topology('symmetric', 'symmetric', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, relayAt: 0, timeoutMs: 5000 },
      { name: 'bob', peer: 'alice', at: t.b, relayAt: 0, timeoutMs: 5000 },
    ]);
    const [a, b] = sim.run(20_000);
    connected(a, b);
    assert.equal(a!.result!.path, 'relay');
    assert.equal(b!.result!.path, 'relay');
    const checksBegan = firstEvent(a!, 'introduced')!.at;
    const nominations = probes(a!).filter((p) => (p.flags & ProbeFlag.NOMINATE) !== 0);
    const firstRelayNomination = nominations.find((p) => p.transport === 'relay' || p.to.address === RELAY.address);
    assert.ok(firstRelayNomination, 'alice never nominated a relayed pair');
    assert.ok(firstRelayNomination.at >= checksBegan + DEFAULT_TIMING.relayWaitMs, `nominated at ${firstRelayNomination.at}, checks began at ${checksBegan}`);
    // Taken promptly once the wait is over: within a few round trips, well inside 1 s of the start.
    assert.ok(a!.result!.elapsedMs <= checksBegan + DEFAULT_TIMING.relayWaitMs + 50, `alice took ${a!.result!.elapsedMs} ms`);
    assert.ok(DEFAULT_TIMING.relayWaitMs <= 1000);
    assert.ok(sim.relay!.relayedOut > 0 && sim.relay!.relayedIn > 0);
  });

  it('port-restricted ↔ symmetric (no direct path) connects through the relay of either side, in both start orders', () => {
    for (const startB of [0, 300]) {
      const net = new SimNet(1, 8 + startB);
      const t = topology('port-restricted', 'symmetric', net);
      const sim = createSim(net, [
        { name: 'alice', peer: 'bob', at: t.a, relayAt: 0, timeoutMs: 5000 },
        { name: 'bob', peer: 'alice', at: t.b, relayAt: startB, startAt: startB, timeoutMs: 5000 },
      ]);
      const [a, b] = sim.run(20_000);
      connected(a, b);
      assert.equal(a!.result!.path, 'relay');
      assert.equal(b!.result!.path, 'relay');
    }
  });

  it('a relay with a custom wait is held back exactly that long', () => {
    const net = new SimNet(1, 9);
    const t = topology('symmetric', 'symmetric', net);
    const timing = { relayWaitMs: 900 };
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, relayAt: 0, timing },
      { name: 'bob', peer: 'alice', at: t.b, relayAt: 0, timing },
    ]);
    const [a, b] = sim.run(20_000);
    connected(a, b);
    const checksBegan = firstEvent(a!, 'introduced')!.at;
    const first = probes(a!).find((p) => (p.flags & ProbeFlag.NOMINATE) !== 0 && (p.transport === 'relay' || p.to.address === RELAY.address));
    assert.ok(first && first.at >= checksBegan + 900 && first.at <= checksBegan + 905, `first relay nomination at ${String(first?.at)}`);
  });
});

describe('session mode: keep running after the first path', () => {
  it('starts on the relay while the direct path is blocked, then upgrades to direct (path-changed on both sides), falls back when direct stops answering', () => {
    const net = new SimNet(1, 11);
    const t = topology('port-restricted', 'port-restricted', net);
    let blocked = true;
    blockDirect(net, () => blocked);
    const timing = { consentIntervalMs: 500, consentTimeoutMs: 3000, upgradeCheckMs: 500 };
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, relayAt: 0, mode: 'session', timing },
      { name: 'bob', peer: 'alice', at: t.b, relayAt: 0, mode: 'session', timing },
    ]);
    let phase = 0;
    const [a, b] = sim.run(20_000, (now) => {
      if (phase === 0 && now >= 3000) {
        phase = 1;
        blocked = false; // the router rule is removed
      } else if (phase === 1 && now >= 8000) {
        phase = 2;
        blocked = true; // and put back: the direct path stops answering
      }
    });
    for (const o of [a!, b!]) {
      assert.equal(o.error, undefined, o.error?.message);
      const first = firstEvent(o, 'connected');
      assert.ok(first, 'never connected');
      assert.equal(first.event.path, 'relay');
      assert.ok(first.at < 1500, `connected at ${first.at}`);
      const changes = o.timeline.filter((e): e is { at: number; event: Extract<PunchEvent, { type: 'path-changed' }> } => e.event.type === 'path-changed');
      const upgrade = changes.find((c) => c.event.reason === 'upgrade');
      assert.ok(upgrade, `no upgrade: ${JSON.stringify(changes.map((c) => [c.at, c.event.reason, c.event.result.path]))}`);
      assert.equal(upgrade.event.result.path, 'direct');
      assert.equal(upgrade.event.previous?.path, 'relay');
      assert.ok(upgrade.at >= 3000 && upgrade.at <= 3000 + 2 * timing.upgradeCheckMs + 100, `upgraded at ${upgrade.at}`);
      const fallback = changes.find((c) => c.event.reason === 'consent-lost' && c.at >= 8000);
      assert.ok(fallback, `no fall-back: ${JSON.stringify(changes.map((c) => [c.at, c.event.reason, c.event.result.path]))}`);
      assert.equal(fallback.event.result.path, 'relay');
      assert.ok(fallback.at <= 8000 + timing.consentTimeoutMs + timing.consentIntervalMs + 100, `fell back at ${fallback.at}`);
      // Still running: the session ends only by close or the partner's CLOSE.
      assert.equal(o.result, undefined);
    }
    assert.ok(sim.agents.every((x) => !x.isFinished));
  });

  it('a relay allocation that goes away takes its pairs with it: path-lost, and the agent keeps checking', () => {
    const net = new SimNet(1, 21);
    const t = topology('symmetric', 'symmetric', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, relayAt: 0, mode: 'session', inputs: [{ at: 2000, input: (now) => ({ type: 'transport-closed', transport: 'relay', reason: 'allocation lost', now }) }] },
      { name: 'bob', peer: 'alice', at: t.b, mode: 'session' },
    ]);
    const [a] = sim.run(4000);
    assert.equal(firstEvent(a!, 'connected')?.event.transport, 'relay');
    const lost = firstEvent(a!, 'path-lost');
    assert.ok(lost && lost.at === 2000 && lost.event.reason === 'transport-closed', JSON.stringify(lost));
    assert.ok(sim.agents[0]!.pairs.every((p) => p.transport.id !== 'relay'));
    assert.equal(a!.sends.filter((x) => x.transport === 'relay' && x.at > 2000).length, 0);
    assert.ok(a!.sends.some((x) => x.at > 2000), 'alice stopped checking');
    assert.ok(!sim.agents[0]!.isFinished);
  });

  it('close ends the session: CLOSE to the partner (partner-left), both finish with the path in use', () => {
    const net = new SimNet(1, 12);
    const t = topology('full-cone', 'port-restricted', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, mode: 'session', inputs: [{ at: 2000, input: (now) => ({ type: 'close', now }) }] },
      { name: 'bob', peer: 'alice', at: t.b, mode: 'session' },
    ]);
    const [a, b] = sim.run(20_000);
    connected(a, b);
    assert.equal(a!.finishedAt, 2000);
    assert.ok(b!.finishedAt! >= 2000 && b!.finishedAt! <= 2010);
    assert.ok(b!.events.some((e) => e.type === 'partner-left'));
    assert.equal(a!.result!.path, 'direct');
  });

  it('close before any path fails as aborted and withdraws (one REPORT, outcome withdrawn); the partner is told it left', () => {
    const net = new SimNet(1, 13);
    const t = topology('symmetric', 'symmetric', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, mode: 'session', inputs: [{ at: 500, input: (now) => ({ type: 'close', now }) }] },
      { name: 'bob', peer: 'alice', at: t.b, timeoutMs: 1000 },
    ]);
    const [a, b] = sim.run(20_000);
    assert.equal(a?.error?.code, 'ABORTED');
    assert.equal(a.finishedAt, 500);
    const reports = a.sends.flatMap((s) => {
      const d = decodeMessage(s.data);
      return d.ok && d.msg.kind === 'report' ? [d.msg.outcome] : [];
    });
    assert.deepEqual(reports, ['withdrawn']);
    // bob (no path possible: two symmetric NATs) hears that alice left, rather than blaming the network at 1000 ms.
    assert.equal(b?.error?.code, 'PEER_LEFT');
    assert.ok(b.finishedAt !== undefined && b.finishedAt < 600, `bob finished at ${String(b.finishedAt)}`);
  });
});

describe('checks', () => {
  it('a probe from the partner triggers a check straight back on its pair (RFC 8445 section 7.3.1.4)', () => {
    const net = new SimNet(1, 14);
    const t = topology('port-restricted', 'none', net);
    // Bob's own schedule is one check per 3 s, and his first check of alice's public address is lost, so his pair is
    // not valid when her probes arrive: any check of his in between is a triggered one.
    let lost = 0;
    net.drop = (from, to, data) => {
      if (lost > 0 || endpointKey(from) !== endpointKey(t.b) || to.address !== t.routerA || kindOf(data) !== 'probe') return false;
      lost++;
      return true;
    };
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, timing: { probeBackoffMs: [10, 20] } },
      { name: 'bob', peer: 'alice', at: t.b, timing: { probeBackoffMs: [3000] } },
    ]);
    const [a, b] = sim.run(20_000);
    connected(a, b);
    const introduced = firstEvent(b!, 'introduced')!.at;
    const arrivals = net.captured.filter((c) => endpointKey(c.to) === endpointKey(t.b) && kindOf(c.data) === 'probe');
    assert.ok(arrivals.length > 0, 'no probe of alice reached bob');
    const triggered = probes(b!).filter((p) => p.at > introduced && arrivals.some((x) => x.at === p.at && endpointKey(x.from) === endpointKey(p.to)));
    assert.ok(triggered.length > 0, `bob's checks: ${JSON.stringify(probes(b!).map((p) => p.at))}, arrivals: ${JSON.stringify(arrivals.map((x) => x.at))}`);
    assert.ok(b!.result!.elapsedMs < 3000, 'bob waited for his own schedule');
  });

  it('several local transports: every socket is paired and checked, the partner learns each one, the result names its transport', () => {
    const net = new SimNet(1, 15);
    const t = topology('port-restricted', 'port-restricted', net);
    const second = { address: '192.0.2.12', port: 6000 };
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, sockets: [second] },
      { name: 'bob', peer: 'alice', at: t.b },
    ]);
    const [a, b] = sim.run(20_000);
    connected(a, b);
    const alice = sim.agents[0]!;
    assert.deepEqual([...new Set(alice.pairs.map((p) => p.transport.id))].sort(), ['udp', 'udp1']);
    assert.ok(probes(a!, 'udp').length > 0 && probes(a!, 'udp1').length > 0, 'not every socket was checked from');
    const bobIntro = firstEvent(b!, 'introduced')!.event;
    assert.ok(bobIntro.intro.peerCandidates.some((c) => endpointKey(c.endpoint) === endpointKey(second)), 'bob never learnt alice\'s second socket');
    assert.ok(['udp', 'udp1'].includes(a!.result!.transport));
    const socket = a!.result!.transport === 'udp' ? t.a : second;
    assert.equal(a!.result!.localPort, socket.port);
    // Bob reached alice at the public mapping of the socket her result names.
    const validOnUsed = alice.pairs.find((p) => p.transport.id === a!.result!.transport && p.state === 'succeeded');
    assert.ok(validOnUsed);
  });

  it('a passive transport sends nothing until probed; it is paired only when a probe arrives on it', () => {
    const net = new SimNet(1, 16);
    const t = topology('port-restricted', 'port-restricted', net);
    const quiet = { address: '192.0.2.10', port: 7000 };
    const sim = createSim(net, [
      {
        name: 'alice', peer: 'bob', at: t.a,
        inputs: [{ at: 1, input: (now) => ({ type: 'add-transport', transport: { id: 'birthday', kind: 'udp', local: quiet, candidates: [{ kind: 'host', priority: candidatePriority('host'), endpoint: quiet }], checks: 'passive' }, now }) }],
      },
      { name: 'bob', peer: 'alice', at: t.b },
    ]);
    const [a, b] = sim.run(20_000);
    connected(a, b);
    assert.equal(a!.sends.filter((s) => s.transport === 'birthday').length, 0);
    // Paired on demand (a birthday attempt has hundreds of sockets): no probe arrived on it, so it has no pairs.
    assert.equal(sim.agents[0]!.pairs.filter((p) => p.transport.id === 'birthday').length, 0);
    const bobIntro = firstEvent(b!, 'introduced')!.event;
    assert.ok(!bobIntro.intro.peerCandidates.some((c) => c.endpoint.port === quiet.port), 'a passive transport was advertised');
  });

  it('predicted candidates get one check each, paced within the check budget', () => {
    const net = new SimNet(1, 17);
    const t = topology('port-restricted', 'full-cone', net);
    const predicted = Array.from({ length: 300 }, (_, i) => ({ kind: 'predicted' as const, priority: candidatePriority('predicted'), endpoint: { address: t.routerB, port: 20_000 + i } }));
    const sim = createSim(net, [
      // Session mode, so that alice is still checking when the predictions arrive (the birthday engineer's case: the
      // relay carries the pair while the easy side probes).
      { name: 'alice', peer: 'bob', at: t.a, mode: 'session', inputs: predicted.map((c) => ({ at: 100, input: (now: number) => ({ type: 'add-remote-candidate' as const, candidate: c, now }) })) },
      { name: 'bob', peer: 'alice', at: t.b, mode: 'session' },
    ]);
    const [a] = sim.run(3000);
    const toPredicted = probes(a!).filter((p) => p.to.address === t.routerB && p.to.port >= 20_000 && p.to.port < 20_300);
    const perPort = new Map<number, number>();
    for (const p of toPredicted) perPort.set(p.to.port, (perPort.get(p.to.port) ?? 0) + 1);
    assert.equal(perPort.size, 300);
    assert.ok([...perPort.values()].every((n) => n === 1), 'a predicted candidate was checked more than once');
    for (let s = 0; s < 3000; s += 100) {
      const inWindow = toPredicted.filter((p) => p.at >= s && p.at < s + 1000).length;
      assert.ok(inWindow <= DEFAULT_TIMING.checksPerSecond + DEFAULT_TIMING.checkBurst, `${inWindow} checks in the second from ${s} ms`);
    }
  });
});

describe('trickled candidates', () => {
  it('relays allocated after the introduction reach the partner and connect symmetric ↔ symmetric', () => {
    const net = new SimNet(1, 18);
    const t = topology('symmetric', 'symmetric', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, relayAt: 1000, timeoutMs: 5000 },
      { name: 'bob', peer: 'alice', at: t.b, relayAt: 1500, timeoutMs: 5000 },
    ]);
    const [a, b] = sim.run(20_000);
    connected(a, b);
    assert.equal(a!.result!.path, 'relay');
    // One relay is enough: bob's probes to alice's relayed address open the way back through his NAT.
    assert.ok(a!.finishedAt! >= 1000 && a!.finishedAt! < 1100, `alice finished at ${a!.finishedAt}`);
    const kinds = sim.agents[1]!.pairs.map((p) => p.remote.kind);
    assert.ok(kinds.includes('relayed'), `bob's remote kinds: ${kinds.join()}`);
  });

  it('a port mapping that arrives later is registered at once and carried to the partner as a `mapped` candidate', () => {
    const net = new SimNet(1, 19);
    const t = topology('symmetric', 'port-restricted', net);
    const mapped = { address: t.routerA, port: 7000 };
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, timeoutMs: 5000, inputs: [{ at: 300, input: (now) => ({ type: 'add-candidate', transport: 'udp', candidate: { kind: 'mapped', priority: candidatePriority('mapped'), endpoint: mapped }, now }) }] },
      { name: 'bob', peer: 'alice', at: t.b, timeoutMs: 5000 },
    ]);
    let granted = false;
    const [a, b] = sim.run(20_000, (now) => {
      if (!granted && now >= 250) {
        granted = true;
        net.addPortMapping(t.routerA, mapped.port, t.a); // the gateway grants the mapping; the agent hears of it at 300
      }
    });
    connected(a, b);
    assert.equal(endpointKey({ address: b!.result!.remoteAddress, port: b!.result!.remotePort }), endpointKey(mapped));
    assert.ok(a!.finishedAt! >= 300 && a!.finishedAt! < 400, `alice finished at ${a!.finishedAt}: not at once`);
    // On the wire: the server's introduction to bob carried a CANDIDATE of kind mapped.
    const carried = net.captured.some((c) => {
      if (endpointKey(c.from) !== endpointKey(SERVER)) return false;
      const d = decodeStun(c.data);
      return d.ok && d.msg.attributes.some((x) => x.type === BurrowAttr.CANDIDATE && (() => {
        const cand = decodeCandidate(x.value, d.msg.transactionId);
        return cand.ok && cand.candidate.kind === 'mapped';
      })());
    });
    assert.ok(carried, 'no introduction carried the mapped candidate');
  });
});

describe('structured failure reasons', () => {
  it('a failed punch carries its stage, both NAT findings, traffic counts and every pair\'s state', () => {
    const net = new SimNet(1, 20);
    const t = topology('port-restricted', 'symmetric', net);
    const sim = createSim(net, [
      // Birthday probing off: that is what would connect this pair (test/core/birthday.test.ts).
      { name: 'alice', peer: 'bob', at: t.a, timeoutMs: 2000, birthday: false },
      { name: 'bob', peer: 'alice', at: t.b, timeoutMs: 2000, birthday: false },
    ]);
    const [a] = sim.run(20_000);
    assert.equal(a?.error?.code, 'NO_PATH');
    const f = punchFailureOf(a.error);
    assert.ok(f, 'no details on the error');
    assert.equal(f.stage, 'no-path');
    // The partner's findings came with its REGISTER, through the introduction: its NAT picks random ports. Ours kept
    // no port (the simulated cone NAT allocates from 40000), and one mapping cannot tell sequential from random.
    assert.deepEqual(f.nat, { ours: 'endpoint-independent', theirs: 'endpoint-dependent', oursAllocation: 'unknown', theirsAllocation: 'random' });
    assert.match(a.error.message, /the peer's NAT picks those ports at random, so only birthday probing or a relay can bridge it/);
    assert.match(a.error.message, /port prediction \(birthday probing\)/);
    assert.ok(f.probes.sent > 0);
    assert.ok(f.pairs.length >= 2);
    assert.ok(f.pairs.every((p) => p.state === 'in-progress' && p.transport === 'udp'), JSON.stringify(f.pairs));
    assert.equal(f.peer, 'bob');
    assert.equal(f.seconds, 2);
  });

  it('no server and no partner are stages too', () => {
    const net = new SimNet();
    const t = topology('port-restricted', 'port-restricted', net);
    const sim = createSim(net, [{ name: 'alice', peer: 'bob', at: t.a, timeoutMs: 1000 }]);
    const [a] = sim.run(20_000);
    assert.equal(punchFailureOf(a?.error)?.stage, 'no-partner');
    const net2 = new SimNet();
    const t2 = topology('port-restricted', 'port-restricted', net2);
    const sim2 = createSim(net2, [{ name: 'alice', peer: 'bob', at: t2.a, timeoutMs: 1000 }], []);
    net2.listen(SERVER, () => undefined);
    const [a2] = sim2.run(20_000);
    const f = punchFailureOf(a2?.error);
    assert.equal(f?.stage, 'no-server');
    assert.ok(f.registerAttempts >= 4);
  });
});

describe('auto mode and relay policy', () => {
  it('auto mode hands off a direct path (both finish) but stays on as a session over a relayed one', () => {
    const net = new SimNet(1, 31);
    const t = topology('port-restricted', 'port-restricted', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, relayAt: 0, mode: 'auto' },
      { name: 'bob', peer: 'alice', at: t.b, relayAt: 0, mode: 'auto' },
    ]);
    const [a, b] = sim.run(20_000);
    connected(a, b);
    assert.equal(a!.result!.path, 'direct');
    assert.equal(b!.result!.path, 'direct');

    const net2 = new SimNet(1, 32);
    const t2 = topology('symmetric', 'symmetric', net2);
    const sim2 = createSim(net2, [
      { name: 'alice', peer: 'bob', at: t2.a, relayAt: 0, mode: 'auto', timeoutMs: 5000 },
      { name: 'bob', peer: 'alice', at: t2.b, relayAt: 0, mode: 'auto', timeoutMs: 5000 },
    ]);
    const [a2, b2] = sim2.run(8000);
    for (const o of [a2!, b2!]) {
      assert.equal(o.error, undefined, o.error?.message);
      assert.equal(firstEvent(o, 'connected')?.event.path, 'relay');
      assert.equal(o.result, undefined, 'a relayed path must not end the agent');
    }
    assert.ok(sim2.agents.every((x) => !x.isFinished));
  });

  it('auto mode upgrades a relayed session to direct once the block is lifted', () => {
    const net = new SimNet(1, 33);
    const t = topology('port-restricted', 'port-restricted', net);
    let blocked = true;
    blockDirect(net, () => blocked);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, relayAt: 0, mode: 'auto' },
      { name: 'bob', peer: 'alice', at: t.b, relayAt: 0, mode: 'auto' },
    ]);
    const [a, b] = sim.run(6000, (now) => {
      if (now >= 2000) blocked = false;
    });
    for (const o of [a!, b!]) {
      assert.equal(firstEvent(o, 'connected')?.event.path, 'relay');
      const up = o.timeline.find((e) => e.event.type === 'path-changed' && e.event.reason === 'upgrade');
      assert.ok(up?.event.type === 'path-changed' && up.event.result.path === 'direct' && up.at >= 2000, JSON.stringify(up));
    }
  });

  it("relay 'only': no direct pair is formed or answered even where one would work, and the relay carries the path", () => {
    const net = new SimNet(1, 34);
    const t = topology('full-cone', 'full-cone', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, relayAt: 0, mode: 'auto', relay: 'only' },
      { name: 'bob', peer: 'alice', at: t.b, relayAt: 0, mode: 'auto' },
    ]);
    const [a, b] = sim.run(5000);
    for (const o of [a!, b!]) assert.equal(firstEvent(o, 'connected')?.event.path, 'relay');
    assert.ok(sim.agents[0]!.pairs.every((p) => p.path === 'relay'));
    assert.ok(probes(a!).every((p) => p.transport === 'relay' || p.to.address === RELAY.address), 'alice probed a direct address');
    assert.ok(!a!.sends.some((s) => s.transport === 'udp' && kindOf(s.data) === 'probe-ok' && s.to.address !== RELAY.address), 'alice answered a direct probe');
  });
});
