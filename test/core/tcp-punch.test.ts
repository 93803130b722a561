/**
 * The TCP punch's decisions with a fake clock, against the real server core over its stream interface: where to
 * connect from and to, the retry policy (refused, unanswered, failed handshakes), which side takes the LAN, which
 * connection wins, and what a failure says.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { punchFailureOf } from '../../src/core/punch/index.js';
import { TcpPunchMachine, type TcpPunchAction, type TcpPunchInput } from '../../src/core/tcp-punch.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { LocalServer } from '../../src/server/local.js';
import { counterBytes } from '../support/simnet.js';

const KEYS = deriveNetworkKeys(Buffer.from('tcp secret'));
const SERVER: Endpoint = { address: '203.0.113.1', port: 3478 };

interface Side {
  readonly machine: TcpPunchMachine;
  readonly conn: number;
  /** Where the server sees this side's connection come from. */
  readonly mapped: Endpoint;
  readonly actions: { at: number; action: TcpPunchAction }[];
}

/** Two TCP punch machines registered through one server core; `step` advances the fake clock. */
function pair(opts: { sameNat?: boolean; timeoutMs?: number } = {}) {
  const server = new LocalServer({ networks: [KEYS], seed: 1, randomBytes: counterBytes('srv') });
  let now = 1_000_000;
  const mk = (name: string, peer: string, conn: number, mapped: Endpoint, lan: Endpoint): Side => ({
    machine: new TcpPunchMachine({
      name, peer, keys: KEYS, server: SERVER, serverTransport: 'server', localAddress: '0.0.0.0', localPort: 50000 + conn,
      lanHosts: [lan], timeoutMs: opts.timeoutMs ?? 3000, sessionNonce: counterBytes(`n-${name}`)(16), randomBytes: counterBytes(`t-${name}`),
    }),
    conn,
    mapped,
    actions: [],
  });
  const alice = mk('alice', 'bob', 1, { address: '198.51.100.2', port: 40001 }, { address: '192.0.2.10', port: 6001 });
  const bob = mk('bob', 'alice', 2, { address: opts.sameNat ? '198.51.100.2' : '198.51.100.6', port: 40002 }, { address: '192.0.2.11', port: 6002 });
  const sides = [alice, bob];
  const feed = (side: Side, input: TcpPunchInput): void => {
    for (const action of side.machine.handle(input)) {
      side.actions.push({ at: now, action });
      if (action.type !== 'send') continue;
      for (const r of server.handle({ type: 'stream-message', conn: side.conn, from: side.mapped, data: action.data, now })) {
        if (r.type !== 'send-stream') continue;
        const to = sides.find((s) => s.conn === r.conn);
        if (to) feed(to, { type: 'datagram', transport: 'server', from: SERVER, data: r.data, now });
      }
    }
  };
  const step = (until: number): void => {
    while (now < until) {
      now += 1;
      for (const s of sides) {
        const t = s.machine.nextTimeoutAt();
        if (t !== undefined && t <= now) feed(s, { type: 'timer', now });
      }
    }
  };
  const connects = (s: Side) => s.actions.flatMap((x) => (x.action.type === 'connect' ? [{ at: x.at, ...x.action }] : []));
  return { alice, bob, feed, step, connects, now: () => now };
}

describe('TCP punch (sans-IO)', () => {
  it('through NATs: both connect to the other\'s public mapping from the port the server saw, and the first secured connection wins', () => {
    const p = pair();
    p.feed(p.alice, { type: 'start', now: p.now() });
    p.feed(p.bob, { type: 'start', now: p.now() });
    const [a] = p.connects(p.alice);
    const [b] = p.connects(p.bob);
    assert.ok(a && b, 'no connect attempt');
    assert.deepEqual(a.target, p.bob.mapped);
    assert.deepEqual(b.target, p.alice.mapped);
    assert.equal(a.fromPort, 50001);
    assert.deepEqual(Buffer.from(a.context), Buffer.from(b.context)); // both derive the same handshake context
    p.feed(p.alice, { type: 'attempt-connected', attempt: a.attempt, now: p.now() + 30 });
    p.feed(p.alice, { type: 'secured', winner: { attempt: a.attempt }, localPort: 50001, now: p.now() + 40 });
    const done = p.alice.actions.find((x) => x.action.type === 'done')?.action;
    assert.ok(done?.type === 'done');
    assert.deepEqual(done.result.winner, { attempt: a.attempt });
    assert.equal(done.result.result.path, 'direct');
    assert.equal(done.result.result.remoteAddress, p.bob.mapped.address);
    assert.equal(done.result.result.elapsedMs, 40);
    assert.ok(p.alice.machine.isFinished);
  });

  it('retries a refused attempt 25 ms later and an unanswered one after its 400 ms budget, until the deadline', () => {
    const p = pair({ timeoutMs: 2000 });
    p.feed(p.alice, { type: 'start', now: p.now() });
    p.feed(p.bob, { type: 'start', now: p.now() });
    const first = p.connects(p.alice)[0]!;
    p.step(p.now() + 5);
    p.feed(p.alice, { type: 'attempt-failed', attempt: first.attempt, why: 'refused', detail: 'ECONNREFUSED', now: p.now() });
    const refusedAt = p.now();
    p.step(refusedAt + 30);
    const second = p.connects(p.alice)[1]!;
    assert.equal(second.at, refusedAt + 25);
    assert.deepEqual(second.target, first.target);
    // Unanswered: abandoned at its budget, then retried.
    p.step(second.at + 399);
    assert.ok(!p.alice.actions.some((x) => x.action.type === 'abandon'));
    p.step(second.at + 400);
    assert.ok(p.alice.actions.some((x) => x.action.type === 'abandon' && x.at === second.at + 400));
    p.step(second.at + 425);
    assert.equal(p.connects(p.alice)[2]?.at, second.at + 425);
    // A connection that completed its TCP handshake is not abandoned while its stream handshake runs; a failed
    // handshake is retried like a refusal.
    const third = p.connects(p.alice)[2]!;
    p.feed(p.alice, { type: 'attempt-connected', attempt: third.attempt, now: p.now() });
    p.step(third.at + 1000);
    assert.equal(p.alice.actions.filter((x) => x.action.type === 'abandon').length, 1);
    p.feed(p.alice, { type: 'attempt-failed', attempt: third.attempt, why: 'handshake', detail: 'bad MAC', now: p.now() });
    p.step(p.now() + 1500);
    const fail = p.alice.actions.find((x) => x.action.type === 'fail')?.action;
    assert.ok(fail?.type === 'fail');
    assert.equal(fail.error.code, 'NO_PATH');
    assert.match(fail.error.message, /TCP connection attempts failed \(1 refused or reset, \d+ unanswered, 1 failed handshakes; last: /);
    const f = punchFailureOf(fail.error);
    assert.equal(f?.stage, 'no-path');
    assert.equal(f.transport, 'tcp');
    assert.equal(f.tcp?.refused, 1);
    assert.equal(f.tcp.handshakesFailed, 1);
    assert.ok(f.tcp.attempts >= 4 && f.tcp.timedOut >= 1);
    // No attempt is made at or after the deadline.
    assert.ok(p.connects(p.alice).every((c) => c.at < 1_000_000 + 2000));
  });

  it('behind one NAT the side whose name sorts first connects to the partner\'s LAN listener; the other accepts it', () => {
    const p = pair({ sameNat: true });
    // Before its introduction a side takes no connection.
    p.feed(p.bob, { type: 'start', now: p.now() });
    p.feed(p.bob, { type: 'incoming', conn: 9, from: { address: '192.0.2.66', port: 1 }, now: p.now() });
    assert.ok(p.bob.actions.some((x) => x.action.type === 'reject-incoming' && x.action.conn === 9));
    p.feed(p.alice, { type: 'start', now: p.now() });
    const lan = p.connects(p.alice);
    assert.equal(lan.length, 1);
    assert.deepEqual(lan[0]!.target, { address: '192.0.2.11', port: 6002 });
    assert.equal(lan[0]!.fromPort, 0);
    assert.equal(p.connects(p.bob).length, 0, 'the side that sorts last must not connect');
    p.feed(p.bob, { type: 'incoming', conn: 10, from: { address: '192.0.2.10', port: 55555 }, now: p.now() });
    const secure = p.bob.actions.find((x) => x.action.type === 'secure-incoming')?.action;
    assert.ok(secure?.type === 'secure-incoming' && secure.conn === 10);
    p.feed(p.bob, { type: 'secured', winner: { conn: 10 }, localPort: 6002, now: p.now() + 3 });
    const done = p.bob.actions.find((x) => x.action.type === 'done')?.action;
    assert.ok(done?.type === 'done');
    assert.equal(done.result.result.path, 'lan');
    assert.deepEqual(done.result.winner, { conn: 10 });
  });

  it('without the server before the introduction it fails as unreachable; the peer never registering is PEER_NOT_FOUND', () => {
    const p = pair();
    p.feed(p.alice, { type: 'start', now: p.now() });
    p.step(p.now() + 500);
    p.feed(p.alice, { type: 'transport-closed', transport: 'server', reason: 'closed', now: p.now() });
    const fail = p.alice.actions.find((x) => x.action.type === 'fail')?.action;
    assert.ok(fail?.type === 'fail' && fail.error.code === 'SERVER_UNREACHABLE');
    const q = pair({ timeoutMs: 1000 });
    q.feed(q.alice, { type: 'start', now: q.now() });
    q.step(q.now() + 1001);
    const lonely = q.alice.actions.find((x) => x.action.type === 'fail')?.action;
    assert.ok(lonely?.type === 'fail');
    assert.equal(lonely.error.code, 'PEER_NOT_FOUND');
    assert.equal(punchFailureOf(lonely.error)?.stage, 'no-partner');
  });
});

describe('TCP punch: a partner that leaves (issue 9)', () => {
  const failure = (side: Side) => side.actions.find((x) => x.action.type === 'fail')?.action;

  it('the partner aborts while we connect: it withdraws over its server connection, and we fail PEER_LEFT at once', () => {
    const p = pair({ timeoutMs: 10_000 });
    p.feed(p.alice, { type: 'start', now: p.now() });
    p.feed(p.bob, { type: 'start', now: p.now() });
    p.step(p.now() + 500); // attempts go on (nothing answers in this test)
    p.feed(p.bob, { type: 'abort', now: p.now() });
    const bobFail = failure(p.bob);
    assert.ok(bobFail?.type === 'fail' && bobFail.error.code === 'ABORTED');
    const aliceFail = failure(p.alice);
    assert.ok(aliceFail?.type === 'fail', 'alice went on after bob left');
    assert.equal(aliceFail.error.code, 'PEER_LEFT');
    assert.match(aliceFail.error.message, /^bob registered but left before a path was found/);
  });

  it('a connection already up and being secured is waited for: the partner closing its server connection does not end it', () => {
    const p = pair({ timeoutMs: 10_000 });
    p.feed(p.alice, { type: 'start', now: p.now() });
    p.feed(p.bob, { type: 'start', now: p.now() });
    const [a] = p.connects(p.alice);
    const [b] = p.connects(p.bob);
    assert.ok(a && b);
    p.feed(p.alice, { type: 'attempt-connected', attempt: a.attempt, now: p.now() + 5 });
    p.feed(p.bob, { type: 'attempt-connected', attempt: b.attempt, now: p.now() + 5 });
    p.feed(p.bob, { type: 'secured', winner: { attempt: b.attempt }, localPort: 50002, now: p.now() + 10 }); // bob done, reports connected
    assert.equal(failure(p.alice), undefined, 'alice was told bob left although his side of the connection won');
    p.feed(p.alice, { type: 'secured', winner: { attempt: a.attempt }, localPort: 50001, now: p.now() + 12 });
    assert.ok(p.alice.actions.some((x) => x.action.type === 'done'));
  });

  it('the partner reaches its deadline without a path (REPORT failed): we say NO_PATH at once, not that it left', () => {
    const p = pair({ timeoutMs: 10_000 });
    p.feed(p.alice, { type: 'start', now: p.now() });
    p.feed(p.bob, { type: 'start', now: p.now() });
    p.step(p.now() + 10_001);
    const bobFail = failure(p.bob);
    const aliceFail = failure(p.alice);
    assert.ok(bobFail?.type === 'fail' && aliceFail?.type === 'fail');
    assert.deepEqual([bobFail.error.code, aliceFail.error.code].sort(), ['NO_PATH', 'NO_PATH']);
  });
});
