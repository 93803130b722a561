/**
 * Regression (review finding): the controlled side announces a late acceptance with a PROBE carrying
 * ACCEPTED. An on-path attacker races a copy of it from its own address; the controlling side must not
 * finish on that never-validated address.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage, ProbeFlag } from '../../src/codec/messages.js';
import { PunchAgent, udpTransport, type PunchAction } from '../../src/core/punch/index.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { LocalServer } from '../../src/server/local.js';
import { counterBytes } from '../support/simnet.js';

it('a raced copy of an ACCEPTED probe never makes the controlling side connect to the attacker', () => {
  const keys = deriveNetworkKeys(Buffer.from('race secret'));
  const S: Endpoint = { address: '203.0.113.1', port: 3478 };
  const A: Endpoint = { address: '198.51.100.2', port: 1000 };
  const B: Endpoint = { address: '198.51.100.6', port: 2000 };
  const T: Endpoint = { address: '203.0.113.66', port: 6666 };
  const server = new LocalServer({ networks: [keys], seed: 1, randomBytes: counterBytes('srv') });
  const mk = (name: string, peer: string, at: Endpoint) =>
    new PunchAgent({ name, peer, keys, server: S, transports: [udpTransport(at, [])], timeoutMs: 3000, sessionNonce: counterBytes(`n-${name}`)(16), randomBytes: counterBytes(`t-${name}`) });
  const machines = { alice: mk('alice', 'bob', A), bob: mk('bob', 'alice', B) };
  const addr = { alice: A, bob: B };
  const results: Record<string, string> = {};
  let now = 1_000_000;
  let raced = 0;
  const queue: { from: Endpoint; to: Endpoint; data: Uint8Array; at: number }[] = [];
  const run = (self: 'alice' | 'bob', actions: PunchAction[]) => {
    for (const a of actions) {
      if (a.type === 'send') queue.push({ from: addr[self], to: a.to, data: a.data, at: now + 1 });
      else if (a.type === 'done') results[self] = a.result.remoteAddress;
    }
  };
  let dropBobProbes = 2; // bob's path is not yet valid when alice's nomination arrives
  const deliver = (p: { from: Endpoint; to: Endpoint; data: Uint8Array }) => {
    if (p.to.address === S.address) {
      for (const a of server.handle({ type: 'datagram', socket: 'main', from: p.from, data: p.data, now })) if (a.type === 'send') queue.push({ from: S, to: a.to, data: a.data, at: now + 1 });
      return;
    }
    const dst = p.to.address === A.address ? 'alice' : p.to.address === B.address ? 'bob' : undefined;
    if (!dst) return;
    const d = decodeMessage(p.data);
    const fromBob = p.from.address === B.address;
    if (fromBob && dst === 'alice' && d.ok && d.msg.kind === 'probe' && dropBobProbes > 0) {
      dropBobProbes--;
      return;
    }
    if (fromBob && d.ok && d.msg.kind === 'probe' && (d.msg.flags & ProbeFlag.ACCEPTED) !== 0) {
      raced++;
      run('alice', machines.alice.handle({ type: 'datagram', transport: 'udp', from: T, data: p.data, now }));
    }
    run(dst, machines[dst].handle({ type: 'datagram', transport: 'udp', from: p.from, data: p.data, now }));
  };
  run('alice', machines.alice.handle({ type: 'start', now }));
  run('bob', machines.bob.handle({ type: 'start', now }));
  for (let i = 0; i < 5000 && !(machines.alice.isFinished && machines.bob.isFinished); i++) {
    const due = queue.filter((p) => p.at <= now);
    for (const p of due) queue.splice(queue.indexOf(p), 1);
    for (const p of due) deliver(p);
    now += 1;
    for (const n of ['alice', 'bob'] as const) {
      const t = machines[n].nextTimeoutAt();
      if (t !== undefined && t <= now) run(n, machines[n].handle({ type: 'timer', now }));
    }
  }
  assert.ok(raced > 0, 'the scenario must exercise the raced ACCEPTED probe');
  assert.equal(results.alice, B.address);
  assert.equal(results.bob, A.address);
});
