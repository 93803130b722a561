/**
 * Regression (issue 5, punching under loss): REGISTER used to back off to one retransmission a second until answered.
 * Under heavy loss a peer whose answers were lost then waited seconds at a time, and it cannot use an introduction
 * pushed to it meanwhile (it must know its own public address, from the answer, to tell its probes from relayed
 * ones), so its partner could be introduced near the deadline, accept a path, and report success while this side
 * timed out. Found by the lab's 30%-loss test (test/lab/loss.test.ts); reproduced here in the simulator.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage } from '../../src/codec/messages.js';
import { ProbeFlag } from '../../src/codec/messages.js';
import { DEFAULT_TIMING, PunchAgent, udpTransport } from '../../src/core/punch/index.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { createSim, topology } from '../support/sim-punch.js';
import { counterBytes, SimNet } from '../support/simnet.js';

describe('punch under loss (simulator)', () => {
  it('retransmits an unanswered REGISTER at 100 and 200 ms, then every 250 ms', () => {
    const S: Endpoint = { address: '203.0.113.1', port: 3478 };
    const m = new PunchAgent({
      name: 'alice', peer: 'bob', keys: deriveNetworkKeys(Buffer.from('s')), server: S, transports: [udpTransport({ address: '0.0.0.0', port: 5000 }, [])],
      timeoutMs: 5000, sessionNonce: counterBytes('n')(16), randomBytes: counterBytes('t'),
    });
    const sentAt: number[] = [];
    const record = (now: number, actions: ReturnType<PunchAgent['handle']>): void => {
      for (const a of actions) if (a.type === 'send' && decodeMessage(a.data).ok) sentAt.push(now);
    };
    record(0, m.handle({ type: 'start', now: 0 }));
    for (let now = 0; now < 3000; ) {
      now = m.nextTimeoutAt() ?? 3000;
      record(now, m.handle({ type: 'timer', now }));
    }
    const gaps = sentAt.slice(1).map((t, i) => t - sentAt[i]!);
    assert.deepEqual(gaps.slice(0, 3), [100, 200, 250]);
    assert.ok(gaps.every((g) => g <= 250), `gaps ${gaps.join(', ')}`);
    assert.deepEqual(DEFAULT_TIMING.registerBackoffMs, [100, 200, 250]);
  });

  it('port-restricted pairs with 40% of datagrams lost connect in 200 of 200 seeded runs, 95% within 2.5 s', (t) => {
    const times: number[] = [];
    const failures: string[] = [];
    for (let seed = 1; seed <= 200; seed++) {
      const net = new SimNet(5, seed);
      net.lossRate = 0.4;
      const hosts = topology('port-restricted', 'port-restricted', net);
      const sim = createSim(net, [
        { name: 'alice', peer: 'bob', at: hosts.a, timeoutMs: 10_000 },
        { name: 'bob', peer: 'alice', at: hosts.b, timeoutMs: 10_000 },
      ]);
      const [a, b] = sim.run(20_000);
      if (a?.result && b?.result) times.push(Math.max(a.result.elapsedMs, b.result.elapsedMs));
      else failures.push(`seed ${seed}: alice ${a?.error?.message ?? 'ok'}; bob ${b?.error?.message ?? 'ok'}`);
    }
    times.sort((x, y) => x - y);
    const p = (q: number): number => times[Math.ceil(q * times.length) - 1] ?? Number.NaN;
    t.diagnostic(`simulated time to connect: p50 ${p(0.5)} ms, p95 ${p(0.95)} ms, max ${p(1)} ms; ${failures.length} failures`);
    assert.deepEqual(failures, []);
    assert.ok(p(0.95) <= 2500, `p95 ${p(0.95)} ms`);
  });

  it('when every answer carrying the controlled side\'s ACCEPTED is lost, its repeated ACCEPTED probes still finish both sides', () => {
    const net = new SimNet(5, 7);
    const hosts = topology('port-restricted', 'port-restricted', net);
    // bob (controlled: "alice" sorts first) never gets an answer with ACCEPTED through.
    let dropped = 0;
    net.drop = (from, _to, data) => {
      if (from.address !== hosts.b.address) return false;
      const d = decodeMessage(data);
      const hit = d.ok && d.msg.kind === 'probe-ok' && (d.msg.flags & ProbeFlag.ACCEPTED) !== 0;
      if (hit) dropped++;
      return hit;
    };
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: hosts.a, timeoutMs: 10_000 },
      { name: 'bob', peer: 'alice', at: hosts.b, timeoutMs: 10_000 },
    ]);
    const [a, b] = sim.run(20_000);
    assert.ok(dropped > 0, 'the pattern never applied');
    assert.ok(a?.result, `alice: ${a?.error?.message ?? ''}`);
    assert.ok(b?.result, `bob: ${b?.error?.message ?? ''}`);
    assert.ok(a.result.elapsedMs < 1000 && b.result.elapsedMs < 1000, `alice ${a.result.elapsedMs} ms, bob ${b.result.elapsedMs} ms`);
  });
});
