/**
 * Candidates, pairs and pacing as pure functions and small tables: RFC 8445 priorities, pair priorities, pair states,
 * the check pacer, the shared back-off and the STUN transaction.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_PRIORITY, type CandidateKind } from '../../src/codec/messages.js';
import { Backoff } from '../../src/core/backoff.js';
import { candidatePriority, LocalTransport, pairPriority, pathOf, RemoteCandidates, TYPE_PREFERENCE, udpTransport } from '../../src/core/punch/candidates.js';
import { Checklist, Pacer } from '../../src/core/punch/checklist.js';
import { StunTransaction } from '../../src/core/stun-transaction.js';

describe('candidate priorities (RFC 8445 section 5.1.2)', () => {
  it('follow 2^24·type + 2^8·local + (256 − component)', () => {
    assert.equal(candidatePriority('host'), 126 * 2 ** 24 + 65535 * 2 ** 8 + 255);
    assert.equal(candidatePriority('host'), 2130706431); // the familiar value of a single-homed host candidate
    assert.equal(candidatePriority('srflx'), 1694498815);
    assert.equal(candidatePriority('prflx'), 1862270975);
    assert.equal(candidatePriority('relayed'), 16777215);
    assert.equal(candidatePriority('host', 65534), 2130706431 - 256);
    for (const kind of Object.keys(TYPE_PREFERENCE) as CandidateKind[]) {
      const p = candidatePriority(kind, 0);
      assert.ok(p >= 1 && p <= MAX_PRIORITY, `${kind}: ${p}`);
    }
  });

  it('rank host > peer-reflexive > port-mapped > server-reflexive > predicted > relayed', () => {
    const order: CandidateKind[] = ['host', 'prflx', 'mapped', 'srflx', 'predicted', 'relayed'];
    const ps = order.map((k) => candidatePriority(k));
    assert.deepEqual([...ps].sort((a, b) => b - a), ps);
  });

  it('pair priorities follow RFC 8445 section 6.1.2.3 and order LAN above direct above relay', () => {
    const host = candidatePriority('host');
    const srflx = candidatePriority('srflx');
    const relay = candidatePriority('relayed');
    assert.equal(pairPriority(host, srflx), (1n << 32n) * BigInt(srflx) + 2n * BigInt(host) + 1n);
    assert.equal(pairPriority(srflx, host), (1n << 32n) * BigInt(srflx) + 2n * BigInt(host));
    assert.ok(pairPriority(host, host) > pairPriority(host, srflx));
    assert.ok(pairPriority(host, srflx) > pairPriority(relay, srflx));
    assert.ok(pairPriority(host, srflx) > pairPriority(host, relay));
    // Both sides compute the same value for the same pair (G is always the controlling side's).
    assert.equal(pairPriority(host, relay), pairPriority(host, relay));
  });

  it('a pair is relayed when either end is a relay, LAN for a partner host address, direct otherwise', () => {
    const udp = new LocalTransport(udpTransport({ address: '0.0.0.0', port: 1 }, []));
    const relay = new LocalTransport({ id: 'relay', kind: 'relay', local: { address: '0.0.0.0', port: 2 }, candidates: [] });
    const r = (kind: CandidateKind) => ({ kind, endpoint: { address: '198.51.100.6', port: 1 }, priority: candidatePriority(kind), introduced: true });
    assert.equal(pathOf(udp, r('host')), 'lan');
    assert.equal(pathOf(udp, r('srflx')), 'direct');
    assert.equal(pathOf(udp, r('mapped')), 'direct');
    assert.equal(pathOf(udp, r('prflx')), 'direct');
    assert.equal(pathOf(udp, r('relayed')), 'relay');
    assert.equal(pathOf(relay, r('host')), 'relay');
    assert.equal(pathOf(relay, r('srflx')), 'relay');
  });

  it('keeps one remote candidate per address and caps peer-reflexive ones', () => {
    const remotes = new RemoteCandidates();
    const e = { address: '198.51.100.6', port: 40000 };
    assert.ok(remotes.add('srflx', e, candidatePriority('srflx'), true));
    assert.equal(remotes.add('host', e, candidatePriority('host'), true), undefined); // the server's view came first
    assert.equal(remotes.get(e)?.kind, 'srflx');
    for (let i = 0; i < 20; i++) remotes.addPeerReflexive({ address: '198.51.100.9', port: 1000 + i });
    assert.equal(remotes.count('prflx'), 8);
  });
});

describe('candidate pairs (RFC 8445 section 6.1.2.6 states)', () => {
  const udp = new LocalTransport(udpTransport({ address: '192.0.2.10', port: 5000 }, [{ address: '192.0.2.10', port: 5000 }]));
  const passive = new LocalTransport({ ...udpTransport({ address: '192.0.2.10', port: 7000 }, [], 'birthday'), checks: 'passive' });
  const relay = new LocalTransport({ id: 'relay', kind: 'relay', local: { address: '192.0.2.10', port: 6000 }, candidates: [{ kind: 'relayed', priority: candidatePriority('relayed'), endpoint: { address: '203.0.113.50', port: 49152 } }] });
  const remote = (kind: CandidateKind, port: number) => ({ kind, endpoint: { address: '198.51.100.6', port }, priority: candidatePriority(kind), introduced: true });

  it('waiting → in-progress → succeeded; a passive transport\'s pairs start frozen; checked in priority order', () => {
    const list = new Checklist(true, new Backoff([10, 20]));
    const p = list.add(udp, remote('srflx', 1), 0);
    assert.equal(p?.state, 'waiting');
    list.checked(p, 0, 10);
    assert.equal(p.state, 'in-progress');
    assert.equal(p.checks, 1);
    assert.equal(list.answered(p, 3), true);
    assert.equal(p.state, 'succeeded');
    assert.equal(list.answered(p, 4), false); // already valid
    const f = list.add(passive, remote('srflx', 1), 0);
    assert.equal(f?.state, 'frozen');
    assert.equal(f.nextCheckAt, Infinity);
    list.checked(f, 5, Infinity); // a triggered check unfreezes it
    assert.equal(f.state, 'in-progress');
    const lan = list.add(udp, remote('host', 2), 0);
    const relayed = list.add(relay, remote('srflx', 1), 0);
    assert.deepEqual(list.all().map((x) => x.path), ['lan', 'direct', 'direct', 'relay']);
    assert.equal(relayed?.path, 'relay');
    assert.equal(lan?.path, 'lan');
    // bestValid prefers the kind of path over the priority.
    list.answered(relayed, 6);
    assert.equal(list.bestValid(), p);
    list.removeTransport(udp.id);
    assert.equal(list.bestValid(), relayed);
  });

  it('never pairs across address families', () => {
    const list = new Checklist(false, new Backoff([10]));
    assert.equal(list.add(udp, { kind: 'srflx', endpoint: { address: '2001:db8::1', port: 1 }, priority: 1, introduced: true }, 0), undefined);
  });

  it('the pacer lets a burst through, then one check per 1000/rate ms', () => {
    const pacer = new Pacer(200, 16);
    let sent = 0;
    while (pacer.take(0)) sent++;
    assert.equal(sent, 16);
    assert.equal(pacer.nextTokenAt(0), 5);
    assert.equal(pacer.take(4), false);
    assert.equal(pacer.take(5), true);
    let inOneSecond = 0;
    for (let t = 5; t < 1005; t++) while (pacer.take(t)) inOneSecond++;
    assert.ok(inOneSecond <= 201, `${inOneSecond} checks in one second`);
  });
});

describe('Backoff and STUN transaction', () => {
  it('a back-off repeats its last step; exponential doubles to a cap', () => {
    const b = new Backoff([100, 200, 250]);
    assert.deepEqual([1, 2, 3, 4, 9].map((n) => b.delayAfter(n)), [100, 200, 250, 250, 250]);
    assert.deepEqual(Backoff.exponential(250, 2000).steps, [250, 500, 1000, 2000]);
    assert.throws(() => new Backoff([]), RangeError);
  });

  it('retransmits the same bytes on its schedule, matches only its id from its address on its transport, times out after its tries', () => {
    const to = { address: '203.0.113.1', port: 3479 };
    const txid = Buffer.alloc(12, 7);
    const request = Buffer.from('request');
    const t = new StunTransaction({ txid, transport: 'udp', to, request, backoff: new Backoff([100, 200]), maxSends: 3 });
    const first = t.start(0);
    assert.deepEqual(first, { type: 'send', transport: 'udp', to, data: request });
    assert.equal(t.nextTimeoutAt(), 100);
    assert.equal(t.onTimer(50), undefined);
    assert.deepEqual(t.onTimer(100), first);
    assert.equal(t.nextTimeoutAt(), 300);
    assert.deepEqual(t.onTimer(300), first);
    assert.equal(t.sends, 3);
    assert.equal(t.matches('udp', { address: '203.0.113.1', port: 3478 }, txid), false);
    assert.equal(t.matches('relay', to, txid), false);
    assert.equal(t.matches('udp', to, Buffer.alloc(12, 8)), false);
    assert.equal(t.matches('udp', to, txid), true);
    assert.equal(t.onTimer(500), 'timed-out');
    assert.equal(t.state, 'timed-out');
    assert.equal(t.matches('udp', to, txid), false);
  });
});
