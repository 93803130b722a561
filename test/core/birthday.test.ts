/**
 * Birthday-paradox probing (issue 11): the pure parts on a fake clock (roles, port shuffling, the sliding-window
 * pacer, the prober, the process-wide gate), and whole attempts through the simulated NATs (port-restricted ↔
 * symmetric connects directly and says so; symmetric ↔ symmetric does not spray).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BirthdayGate, BirthdayProber, birthdayRole, DEFAULT_BIRTHDAY, hitProbability, shuffledPorts, WindowPacer } from '../../src/core/punch/birthday.js';
import { createSim, topology } from '../support/sim-punch.js';
import { SimNet, type SimNatKind } from '../support/simnet.js';

/** A seeded xorshift for the shuffles. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

void describe('birthday probing: the pure parts', () => {
  void it('picks roles from both NAT findings: hard ↔ easy with a port-and-address filter only', () => {
    const EIM = 'endpoint-independent' as const;
    const EDM = 'endpoint-dependent' as const;
    assert.equal(birthdayRole({ mapping: EDM, filtering: 'unknown' }, { mapping: EIM, filtering: 'address-and-port-dependent' }), 'hard');
    assert.equal(birthdayRole({ mapping: EIM, filtering: 'address-and-port-dependent' }, { mapping: EDM, filtering: 'unknown' }), 'easy');
    assert.equal(birthdayRole({ mapping: EIM, filtering: 'unknown' }, { mapping: EDM, filtering: 'unknown' }), 'easy', 'unknown filtering counts as the strictest');
    // An easy side whose filter lets the hard side's first packet in learns the port from it: a plain punch.
    assert.equal(birthdayRole({ mapping: EDM, filtering: 'unknown' }, { mapping: EIM, filtering: 'endpoint-independent' }), undefined);
    assert.equal(birthdayRole({ mapping: EDM, filtering: 'unknown' }, { mapping: EIM, filtering: 'address-dependent' }), undefined);
    // Both hard: no probing (the relay carries the pair); unknown partners: no probing.
    assert.equal(birthdayRole({ mapping: EDM, filtering: 'unknown' }, { mapping: EDM, filtering: 'unknown' }), undefined);
    assert.equal(birthdayRole({ mapping: EDM, filtering: 'unknown' }, { mapping: 'unknown', filtering: 'unknown' }), undefined);
    assert.equal(birthdayRole({ mapping: EIM, filtering: 'unknown' }, { mapping: EIM, filtering: 'unknown' }), undefined);
  });

  void it('shuffles distinct ports within 1024-65535, evenly spread, reproducibly for a seed', () => {
    const ports = shuffledPorts(1000, rng(7));
    assert.equal(ports.length, 1000);
    assert.equal(new Set(ports).size, 1000, 'distinct');
    assert.ok(ports.every((p) => p >= 1024 && p <= 65535));
    // Spread: every eighth of the range gets 125 ± 45.
    const buckets = new Array<number>(8).fill(0);
    for (const p of ports) buckets[Math.floor(((p - 1024) * 8) / 64512)]! += 1;
    for (const b of buckets) assert.ok(b > 80 && b < 170, `bucket sizes ${buckets.join(',')}`);
    assert.deepEqual(shuffledPorts(50, rng(7)), ports.slice(0, 50));
    // The whole range, exactly once each.
    const all = shuffledPorts(70_000, rng(3), 1, 500);
    assert.deepEqual([...all].sort((a, b) => a - b), Array.from({ length: 500 }, (_, i) => i + 1));
  });

  void it('paces at the rate and never exceeds the window, even when the timer fires late', () => {
    const pacer = new WindowPacer(0, 200, 200, 1000);
    const sends: number[] = [];
    // A timer that fires every 7 ms, with a 600 ms stall at 1 s (a loaded machine).
    for (let now = 0; now <= 6000; now += now >= 1000 && now < 1600 ? 600 : 7) {
      const n = pacer.allowance(now);
      for (let i = 0; i < n; i++) {
        pacer.record(now);
        sends.push(now);
      }
    }
    let worst = 0;
    for (let i = 0; i < sends.length; i++) {
      let j = i;
      while (j < sends.length && sends[j]! < sends[i]! + 1000) j++;
      worst = Math.max(worst, j - i);
    }
    assert.ok(worst <= 200, `${worst} sends in one second`);
    assert.ok(sends.length >= 1000, `${sends.length} sends in 6 s`);
    assert.ok(pacer.nextAt(6000) >= 6000);
  });

  void it('the prober sends its ports once each, at most `probes`, and stops on a hit', () => {
    const o = { ...DEFAULT_BIRTHDAY, probes: 300 };
    const p = new BirthdayProber(1, '198.51.100.2', 0, o, rng(5));
    const seen: number[] = [];
    for (let now = 0; !p.done && now < 10_000; now = p.nextTimeoutAt(now) ?? now + 1) seen.push(...p.due(now));
    assert.equal(seen.length, 300);
    assert.equal(p.sent, 300);
    assert.equal(new Set(seen).size, 300);
    assert.deepEqual(p.due(20_000), []);
    const q = new BirthdayProber(1, '198.51.100.2', 0, o, rng(5));
    q.due(0);
    q.stop(1);
    assert.ok(q.done);
    assert.deepEqual(q.due(5000), []);
    assert.equal(q.nextTimeoutAt(5000), undefined);
  });

  void it('the gate allows one attempt at a time per process, 20 s apart per pair, shared by both sides of one attempt', () => {
    const g = new BirthdayGate(20_000);
    assert.deepEqual(g.acquire('p', 'n1#1', 0), { ok: true });
    assert.deepEqual(g.acquire('p', 'n1#1', 10), { ok: true }, 'the other side of the same attempt');
    const busy = g.acquire('q', 'm#1', 20);
    assert.equal(busy.ok, false);
    g.release('n1#1');
    assert.equal(g.busy, true, 'one holder left');
    g.release('n1#1');
    assert.equal(g.busy, false);
    const early = g.acquire('p', 'n1#2', 5000);
    assert.deepEqual(early, { ok: false, retryAt: 20_000, reason: 'cooldown' });
    assert.deepEqual(g.acquire('q', 'm#1', 5000), { ok: true }, 'another pair is not held back by p');
    g.release('m#1');
    assert.deepEqual(g.acquire('p', 'n1#2', 20_000), { ok: true });
  });

  void it('the numbers: 512 sockets and 1,000 probes give 99.96%', () => {
    assert.ok(hitProbability(512, 1000) > 0.9995);
    assert.ok(Math.abs(hitProbability(256, 175) - 0.5) < 0.01);
  });
});

function birthdayPair(kindA: SimNatKind, kindB: SimNatKind, seed: number, opts: { startB?: number } = {}) {
  const net = new SimNet(5, seed);
  const t = topology(kindA, kindB, net);
  const sim = createSim(net, [
    { name: 'alice', peer: 'bob', at: t.a, timeoutMs: 10_000 },
    { name: 'bob', peer: 'alice', at: t.b, startAt: opts.startB ?? 0, timeoutMs: 10_000 },
  ]);
  return { sim, net, t };
}

void describe('birthday probing through simulated NATs', () => {
  for (const [ka, kb, startB] of [['port-restricted', 'symmetric', 0], ['symmetric', 'port-restricted', 0], ['port-restricted', 'symmetric', 1500], ['symmetric', 'port-restricted', 1500]] as const) {
    void it(`${ka} ↔ ${kb} connects directly by birthday probing (bob starts at ${startB} ms)`, () => {
      for (const seed of [1, 2, 3]) {
        const { sim, t } = birthdayPair(ka, kb, seed, { startB });
        const [a, b] = sim.run(20_000);
        assert.ok(a?.result && b?.result, `seed ${seed}: ${a?.error?.message ?? ''} ${b?.error?.message ?? ''}`);
        for (const [o, kind] of [[a, ka], [b, kb]] as const) {
          assert.equal(o.result!.path, 'direct');
          assert.equal(o.result!.birthday?.role, kind === 'symmetric' ? 'hard' : 'easy');
          if (kind === 'symmetric') assert.equal(o.result!.birthday.probes, DEFAULT_BIRTHDAY.sockets);
        }
        const hard = ka === 'symmetric' ? a : b;
        const easy = ka === 'symmetric' ? b : a;
        const hardIp = ka === 'symmetric' ? t.routerA : t.routerB;
        // The easy side's datagrams to the hard side's IP: its probes (≤ 1,000) and a few checks; ≤ 200 in any second.
        const toHard = easy.sends.filter((s) => s.to.address === hardIp).map((s) => s.at);
        assert.ok(toHard.length <= 1100, `${toHard.length} datagrams toward the hard side`);
        let worst = 0;
        for (let i = 0; i < toHard.length; i++) worst = Math.max(worst, toHard.filter((x) => x >= toHard[i]! && x < toHard[i]! + 1000).length);
        assert.ok(worst <= 250, `${worst} in one second`);
        assert.ok(easy.result!.birthday!.probes <= 1000 && easy.result!.birthday!.probes >= 1);
        // The hard side's result names one of its birthday sockets: the port the program binds.
        assert.match(hard.result!.transport, /^bd1\./);
        assert.notEqual(hard.result!.localPort, 5000);
        const won = hard.events.find((e) => e.type === 'birthday' && e.phase === 'won');
        assert.ok(won, 'a won event');
      }
    });
  }

  void it('symmetric ↔ symmetric opens no birthday sockets and sends few datagrams to the other side', () => {
    const { sim, t } = birthdayPair('symmetric', 'symmetric', 4);
    const [a, b] = sim.run(20_000);
    assert.equal(a?.error?.code, 'NO_PATH');
    assert.equal(b?.error?.code, 'NO_PATH');
    for (const [o, other] of [[a, t.routerB], [b, t.routerA]] as const) {
      assert.ok(!o.events.some((e) => e.type === 'birthday'), 'no birthday attempt');
      const n = o.sends.filter((s) => s.to.address === other).length;
      assert.ok(n <= 50, `${n} datagrams to the other side's public IP`);
    }
  });

  void it('full-cone ↔ symmetric stays a plain punch (no birthday attempt)', () => {
    const { sim } = birthdayPair('full-cone', 'symmetric', 5);
    const [a, b] = sim.run(20_000);
    assert.equal(a?.result?.path, 'direct');
    assert.equal(b?.result?.path, 'direct');
    assert.equal(a.result.birthday, undefined);
    assert.ok(!b.events.some((e) => e.type === 'birthday'));
  });

  void it('runs beside the relay: the first attempt finds nothing (probes lost), the second starts ≥ 20 s later and upgrades the relayed path to direct', () => {
    const net = new SimNet(5, 6);
    const t = topology('port-restricted', 'symmetric', net);
    // Everything from the easy side's NAT to the hard side's NAT is lost for the first 12 s: attempt 1 cannot hit.
    net.drop = (from, to) => net.now < 12_000 && from.address === t.a.address && to.address === t.routerB;
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, relayAt: 0, mode: 'auto', timeoutMs: 10_000 },
      { name: 'bob', peer: 'alice', at: t.b, relayAt: 0, mode: 'auto', timeoutMs: 10_000 },
    ]);
    const [a, b] = sim.run(40_000);
    assert.equal(a?.result?.path ?? a?.events.find((e) => e.type === 'connected')?.path, 'relay', a?.error?.message);
    for (const [o, role] of [[a, 'easy'], [b, 'hard']] as const) {
      assert.ok(o);
      const attempts = o.timeline.filter((x) => x.event.type === 'birthday' && (x.event.phase === 'probing' || x.event.phase === 'opening'));
      assert.ok(attempts.length >= 2, `${role}: ${attempts.length} attempts`);
      assert.ok(attempts[1]!.at - attempts[0]!.at >= 20_000, `${role}: attempts at ${attempts.map((x) => x.at).join(', ')}`);
      const upgrade = o.events.find((e) => e.type === 'path-changed' && e.reason === 'upgrade');
      assert.ok(upgrade?.type === 'path-changed', `${role}: no upgrade`);
      assert.equal(upgrade.result.path, 'direct');
      assert.equal(upgrade.result.birthday?.role, role);
    }
  });

  void it('a birthday attempt that finds nothing is in the diagnosis (--relay never: exit 5 says what was tried)', () => {
    const net = new SimNet(5, 9);
    const t = topology('port-restricted', 'symmetric', net);
    net.drop = (from, to) => from.address === t.a.address && to.address === t.routerB;
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, timeoutMs: 10_000 },
      { name: 'bob', peer: 'alice', at: t.b, timeoutMs: 10_000 },
    ]);
    const [a, b] = sim.run(30_000);
    assert.equal(a?.error?.code, 'NO_PATH');
    assert.match(a.error.message, /Birthday probing found no open port: one attempt, 1000 probes sent/);
    assert.equal(b?.error?.code, 'NO_PATH');
    assert.match(b.error.message, /Birthday probing found no open port: one attempt, 512 sockets opened, no probe arrived/);
  });
});
