/**
 * Lifecycle honesty (issue 9, item 1), with the real server core and punch agents on the simulated network and a fake
 * clock: every end withdraws the registration with one REPORT; a partner that leaves (withdraws, or is killed and
 * expires) is reported as gone (PEER_LEFT), never as a network failure (NO_PATH); a second session under the same
 * name displaces the first, which is told (NOTICE, or 409 to its refresh) and ends with DISPLACED; the two sides say
 * what they run, and an incompatible pair ends on both sides with MODE_MISMATCH.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeMessage } from '../../src/codec/messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { createSim, SECRET, SERVER, topology, type PeerOutcome } from '../support/sim-punch.js';
import { counterBytes, SimNet } from '../support/simnet.js';

const NETWORK = deriveNetworkKeys(Buffer.from(SECRET)).networkIdHex;

function kinds(o: PeerOutcome | undefined): string[] {
  return (o?.sends ?? []).flatMap((s) => {
    const d = decodeMessage(s.data);
    return d.ok ? [d.msg.kind] : [];
  });
}

function reports(o: PeerOutcome | undefined): string[] {
  return (o?.sends ?? []).flatMap((s) => {
    const d = decodeMessage(s.data);
    return d.ok && d.msg.kind === 'report' ? [d.msg.outcome] : [];
  });
}

describe('withdrawal: every end withdraws the registration with one REPORT', () => {
  it('the timeout without a partner withdraws (outcome withdrawn): the name is free at once', () => {
    const net = new SimNet(1, 21);
    const t = topology('full-cone', 'full-cone', net);
    const sim = createSim(net, [{ name: 'carol', peer: 'dave', at: t.a, timeoutMs: 1000 }]);
    const [c] = sim.run(5000);
    assert.equal(c?.error?.code, 'PEER_NOT_FOUND');
    assert.equal(c.finishedAt, 1000);
    assert.deepEqual(reports(c), ['withdrawn']);
    net.runUntil(1100); // the REPORT on its way
    assert.equal(sim.server.memory.store.lookup(NETWORK, 'carol', 1100), undefined, 'carol is still registered after she left');
    assert.equal(sim.server.core.stats.withdrawals, 1);
  });

  it('abort (the AbortSignal) withdraws, then fails ABORTED', () => {
    const net = new SimNet(1, 22);
    const t = topology('full-cone', 'full-cone', net);
    const sim = createSim(net, [{ name: 'carol', peer: 'dave', at: t.a, inputs: [{ at: 700, input: (now) => ({ type: 'abort', now }) }] }]);
    const [c] = sim.run(5000);
    assert.equal(c?.error?.code, 'ABORTED');
    assert.equal(c.finishedAt, 700);
    assert.deepEqual(reports(c), ['withdrawn']);
    net.runUntil(800);
    assert.equal(sim.server.memory.store.lookup(NETWORK, 'carol', 800), undefined);
  });

  it('carol gives up after 1 s; dave, started 1-3 s later, says she never registered (PEER_NOT_FOUND), never NO_PATH', () => {
    for (const startAt of [1000, 2000, 3000]) {
      const net = new SimNet(1, 23 + startAt);
      const t = topology('port-restricted', 'port-restricted', net);
      const sim = createSim(net, [
        { name: 'carol', peer: 'dave', at: t.a, timeoutMs: 1000 },
        { name: 'dave', peer: 'carol', at: t.b, timeoutMs: 8000, startAt: 1000 + startAt },
      ]);
      const [, d] = sim.run(20_000);
      assert.equal(d?.error?.code, 'PEER_NOT_FOUND', `dave started at ${1000 + startAt}: ${d?.error?.message ?? 'connected?'}`);
    }
  });

  it('a connected pair reports connected (not withdrawn), and nobody is told anyone left', () => {
    const net = new SimNet(1, 24);
    const t = topology('full-cone', 'port-restricted', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a },
      { name: 'bob', peer: 'alice', at: t.b },
    ]);
    const [a, b] = sim.run(20_000);
    assert.ok(a?.result && b?.result);
    assert.deepEqual(reports(a), ['connected']);
    assert.deepEqual(reports(b), ['connected']);
    assert.equal(sim.server.core.stats.partnersToldLeft, 0);
  });
});

describe('a partner that leaves before a path is found', () => {
  it('withdrew: the waiting side hears a NOTICE and fails PEER_LEFT at once (how: withdrew)', () => {
    const net = new SimNet(1, 31);
    const t = topology('symmetric', 'symmetric', net); // no path: the checks would go on until the timeout
    const sim = createSim(net, [
      { name: 'carol', peer: 'dave', at: t.a, timeoutMs: 30_000, inputs: [{ at: 1500, input: (now) => ({ type: 'abort', now }) }] },
      { name: 'dave', peer: 'carol', at: t.b, timeoutMs: 8000, startAt: 1000 },
    ]);
    const [c, d] = sim.run(20_000);
    assert.equal(c?.error?.code, 'ABORTED');
    assert.equal(d?.error?.code, 'PEER_LEFT');
    assert.equal(d.error.details.how, 'withdrew');
    assert.match(d.error.message, /^carol registered but left before a path was found/);
    assert.ok(d.finishedAt !== undefined && d.finishedAt <= 1600, `dave finished at ${String(d.finishedAt)}`);
    assert.equal(sim.server.core.stats.partnersToldLeft, 1);
  });

  it('gave up at its own deadline without a path (REPORT failed): the other side says NO_PATH at once, with its own diagnosis', () => {
    const net = new SimNet(1, 34);
    const t = topology('symmetric', 'symmetric', net);
    const sim = createSim(net, [
      { name: 'carol', peer: 'dave', at: t.a, timeoutMs: 5000 },
      { name: 'dave', peer: 'carol', at: t.b, timeoutMs: 30_000, startAt: 1000 },
    ]);
    const [c, d] = sim.run(40_000);
    assert.equal(c?.error?.code, 'NO_PATH');
    assert.deepEqual(reports(c), ['failed']);
    assert.equal(d?.error?.code, 'NO_PATH', d?.error?.message);
    assert.match(d.error.message, /symmetric/);
    assert.ok(d.finishedAt !== undefined && d.finishedAt <= 5100, `dave finished at ${String(d.finishedAt)}`);
    assert.equal(d.error.details.seconds, 4);
  });

  it('gave up at its own deadline after checking with us for only 1 s: that is a departure (PEER_LEFT), not a network verdict', () => {
    const net = new SimNet(1, 35);
    const t = topology('symmetric', 'symmetric', net);
    const sim = createSim(net, [
      { name: 'carol', peer: 'dave', at: t.a, timeoutMs: 5000 },
      { name: 'dave', peer: 'carol', at: t.b, timeoutMs: 30_000, startAt: 4000 },
    ]);
    const [c, d] = sim.run(40_000);
    assert.equal(c?.error?.code, 'NO_PATH');
    assert.equal(d?.error?.code, 'PEER_LEFT', d?.error?.message);
    assert.ok(d.finishedAt !== undefined && d.finishedAt <= 5100);
  });

  it('killed (SIGKILL, no word): its registration expires after 3 refresh periods (6 s) and the waiting side fails PEER_LEFT, never NO_PATH', () => {
    for (const startAt of [1000, 2000, 3000]) {
      const net = new SimNet(1, 32 + startAt);
      const t = topology('symmetric', 'symmetric', net);
      const sim = createSim(net, [
        { name: 'carol', peer: 'dave', at: t.a, timeoutMs: 30_000, killAt: 500 },
        { name: 'dave', peer: 'carol', at: t.b, timeoutMs: 8000, startAt: 500 + startAt },
      ]);
      const [, d] = sim.run(20_000);
      assert.equal(d?.error?.code, 'PEER_LEFT', `dave started at ${500 + startAt}: ${d?.error?.message ?? ''}`);
      assert.equal(d.error.details.how, 'gone');
      // carol's last refresh was before 500 ms; her registration lives 6 s after it; dave's next refresh (every 2 s
      // while checking) learns it.
      assert.ok(d.finishedAt !== undefined && d.finishedAt <= 500 + 6000 + 2000 + 100, `dave finished at ${String(d.finishedAt)}`);
      assert.equal(sim.server.memory.store.lookup(NETWORK, 'carol', 500 + 6000), undefined, 'carol outlived 3 refresh periods');
    }
  });

  it('a partner that stops answering the server but still probes us is not declared gone', () => {
    const net = new SimNet(1, 33);
    const t = topology('full-cone', 'full-cone', net);
    // Carol's packets to the server are lost from 300 ms on, so her registration expires; her probes still arrive.
    net.drop = (from, to) => from.address === t.a.address && to.address === SERVER.address && net.now >= 300;
    const sim = createSim(net, [
      { name: 'carol', peer: 'dave', at: t.a, mode: 'session', timeoutMs: 30_000, inputs: [{ at: 12_000, input: (now) => ({ type: 'close', now }) }] },
      { name: 'dave', peer: 'carol', at: t.b, mode: 'session', timeoutMs: 30_000 },
    ]);
    const [c, d] = sim.run(20_000);
    assert.ok(c?.result, c?.error?.message);
    assert.ok(d?.result, d?.error?.message);
  });
});

describe('a second live registration under the same name', () => {
  it('wins; the first is told at once (NOTICE displaced) and fails DISPLACED; the second goes on and connects', () => {
    const net = new SimNet(1, 41);
    const t = topology('full-cone', 'full-cone', net);
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, timeoutMs: 10_000 },
      { name: 'alice', peer: 'bob', at: t.a2, timeoutMs: 10_000, startAt: 2000 },
      { name: 'bob', peer: 'alice', at: t.b, timeoutMs: 10_000, startAt: 4000 },
    ]);
    const [first, second, bob] = sim.run(20_000);
    assert.equal(first?.error?.code, 'DISPLACED');
    assert.match(first.error.message, /replaced/);
    assert.ok(first.finishedAt !== undefined && first.finishedAt < 2100, `the first alice finished at ${String(first.finishedAt)}`);
    assert.deepEqual(reports(first), [], 'a displaced session withdrew a name that is no longer its own');
    assert.ok(second?.result, second?.error?.message);
    assert.ok(bob?.result, bob?.error?.message);
    assert.equal(sim.server.core.stats.registrationsDisplaced, 1);
  });

  it('when the NOTICE is lost, the first one\'s next refresh is answered 409 (it does not take the name back)', () => {
    const net = new SimNet(1, 42);
    const t = topology('full-cone', 'full-cone', net);
    let noticesLost = 0;
    const sim = createSim(net, [
      { name: 'alice', peer: 'bob', at: t.a, timeoutMs: 10_000 },
      { name: 'alice', peer: 'bob', at: t.a2, timeoutMs: 10_000, startAt: 2000 },
    ]);
    net.drop = (from, _to, data) => {
      const d = decodeMessage(data);
      if (from.address === SERVER.address && d.ok && d.msg.kind === 'notice') {
        noticesLost++;
        return true;
      }
      return false;
    };
    const [first, second] = sim.run(5000);
    assert.equal(noticesLost, 2, 'the server sends the NOTICE twice');
    assert.equal(first?.error?.code, 'DISPLACED');
    assert.ok(first.finishedAt !== undefined && first.finishedAt <= 3100, `the first alice finished at ${String(first.finishedAt)}`);
    assert.equal(sim.server.core.stats.registrationsRefused, 1);
    assert.equal(second?.finishedAt, undefined, 'the second alice was displaced in turn');
    assert.ok(kinds(first).filter((k) => k === 'register').length >= 2);
    assert.equal(sim.server.memory.store.lookup(NETWORK, 'alice', 4000)?.nonce, Buffer.from(counterBytes('nonce-alice-1')(16)).toString('hex'), 'the name went back to the first alice');
  });
});

describe('both sides say what they run', () => {
  it('send facing punch: both sides fail MODE_MISMATCH, each told what to run', () => {
    const net = new SimNet(1, 51);
    const t = topology('full-cone', 'full-cone', net);
    const sim = createSim(net, [
      { name: 'carol', peer: 'dave', at: t.a, purpose: 'send' },
      { name: 'dave', peer: 'carol', at: t.b, startAt: 300 },
    ]);
    const [c, d] = sim.run(5000);
    assert.equal(c?.error?.code, 'MODE_MISMATCH');
    assert.equal(d?.error?.code, 'MODE_MISMATCH');
    assert.equal(d.error.message.split(' (')[0], 'carol is running `send`; run `receive` here');
    assert.equal(c.error.message.split(' (')[0], 'dave is running `punch`; run `punch` here');
    assert.deepEqual(reports(c), ['withdrawn']);
    assert.deepEqual(reports(d), ['withdrawn']);
    assert.equal(kinds(c).includes('probe') || kinds(d).includes('probe'), false, 'a mismatched pair probed');
  });

  it('send and receive pair (and connect)', () => {
    const net = new SimNet(1, 52);
    const t = topology('full-cone', 'full-cone', net);
    const sim = createSim(net, [
      { name: 'carol', peer: 'dave', at: t.a, purpose: 'send' },
      { name: 'dave', peer: 'carol', at: t.b, purpose: 'receive' },
    ]);
    const [c, d] = sim.run(5000);
    assert.ok(c?.result, c?.error?.message);
    assert.ok(d?.result, d?.error?.message);
  });
});
