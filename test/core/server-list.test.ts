/**
 * The server list every command shares for `--server S1,S2` (src/core/server-list.ts), on a fake clock: silence for
 * failoverMs moves on, an answer resets the clock, a server known gone is left at once but at most once per
 * lostGapMs (a list of refusing servers is walked at a bounded pace), the last wraps to the first, one server never
 * moves. And the TCP punch over it: a closed connection before the introduction moves the REGISTER to the next server
 * at once (a failover event), where one server alone fails with SERVER_UNREACHABLE.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage } from '../../src/codec/messages.js';
import { DEFAULT_FAILOVER_MS, LOST_FAILOVER_GAP_MS, ServerList } from '../../src/core/server-list.js';
import { TcpPunchMachine, type TcpPunchAction } from '../../src/core/tcp-punch.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { counterBytes } from '../support/simnet.js';

const S1: Endpoint = { address: '203.0.113.1', port: 3478 };
const S2: Endpoint = { address: '203.0.113.2', port: 3478 };
const S3: Endpoint = { address: '203.0.113.1', port: 3490 };

describe('server list (failover for every command)', () => {
  it('moves on after failoverMs of unanswered requests, in order, wrapping to the first', () => {
    const list = new ServerList([S1, S2, S3, { ...S1 }]);
    assert.equal(list.all.length, 3, 'repeats are dropped');
    list.sent(0);
    list.sent(1000);
    assert.equal(list.dueAt(), DEFAULT_FAILOVER_MS, 'the clock runs from the first unanswered request');
    assert.equal(list.advance(DEFAULT_FAILOVER_MS - 1), undefined);
    assert.deepEqual(list.advance(DEFAULT_FAILOVER_MS), { from: S1, to: S2 });
    assert.equal(list.dueAt(), undefined, 'a fresh server has no clock running');
    list.sent(5000);
    assert.deepEqual(list.advance(5000 + DEFAULT_FAILOVER_MS), { from: S2, to: S3 });
    list.sent(9000);
    assert.deepEqual(list.advance(9000 + DEFAULT_FAILOVER_MS), { from: S3, to: S1 });
    assert.ok(list.isCurrent({ address: '203.0.113.1', port: 3478 }));
  });

  it('never moves while the server answers, nor with one server', () => {
    const list = new ServerList([S1, S2]);
    for (let t = 0; t < 60_000; t += 500) {
      list.sent(t);
      list.answered();
      assert.equal(list.advance(t + 400), undefined);
    }
    const one = new ServerList([S1]);
    one.sent(0);
    one.lost(0);
    assert.equal(one.dueAt(), undefined);
    assert.equal(one.advance(1e9), undefined);
    assert.equal(one.several, false);
  });

  it(`a server known gone is left at once, then at most once per ${LOST_FAILOVER_GAP_MS} ms`, () => {
    const list = new ServerList([S1, S2, S3]);
    list.lost(100);
    assert.deepEqual(list.advance(100), { from: S1, to: S2 });
    list.lost(110); // S2 refuses at once
    assert.equal(list.dueAt(), 100 + LOST_FAILOVER_GAP_MS);
    assert.equal(list.advance(500), undefined);
    assert.deepEqual(list.advance(100 + LOST_FAILOVER_GAP_MS), { from: S2, to: S3 });
    // Walking a list of refusing servers for 10 s: bounded.
    let moves = 0;
    for (let t = 1100; t < 11_100; t += 10) {
      list.lost(t);
      if (list.advance(t)) moves++;
    }
    assert.ok(moves <= 10_000 / LOST_FAILOVER_GAP_MS + 1, `${moves} moves`);
  });
});

describe('TCP punch with several servers', () => {
  const keys = deriveNetworkKeys(Buffer.from('tcp failover secret'));
  const machine = (fallbacks?: readonly Endpoint[]): TcpPunchMachine => new TcpPunchMachine({
    name: 'alice', peer: 'bob', keys, server: S1, ...(fallbacks ? { fallbacks } : {}), serverTransport: 'server', localAddress: '0.0.0.0', localPort: 50001,
    lanHosts: [{ address: '192.0.2.10', port: 6001 }], timeoutMs: 20_000, sessionNonce: counterBytes('n')(16), randomBytes: counterBytes('t'),
  });
  const registers = (actions: readonly TcpPunchAction[]): Endpoint[] => actions.flatMap((a) => {
    if (a.type !== 'send') return [];
    const d = decodeMessage(a.data);
    return d.ok && d.msg.kind === 'register' ? [a.to] : [];
  });

  it('the connection to the server closes before the introduction: REGISTER goes to the next server at once', () => {
    const m = machine([S3]);
    const start = m.handle({ type: 'start', now: 0 });
    assert.deepEqual(registers(start), [S1]);
    assert.deepEqual(m.handle({ type: 'transport-closed', transport: 'server', reason: 'closed', now: 200 }), []);
    assert.ok((m.nextTimeoutAt() ?? Infinity) <= 200, 'moves at the next timer, at once');
    const moved = m.handle({ type: 'timer', now: 200 });
    assert.deepEqual(moved.flatMap((a) => (a.type === 'event' ? [a.event] : [])), [{ type: 'failover', from: S1, to: S3 }]);
    assert.deepEqual(registers(moved), [S3]);
    assert.equal(m.isFinished, false);
  });

  it('silence for failoverMs moves too; with one server a closed connection is SERVER_UNREACHABLE', () => {
    const m = machine([S2]);
    m.handle({ type: 'start', now: 0 });
    const seen: Endpoint[] = [];
    for (let t = 50; t <= DEFAULT_FAILOVER_MS + 50; t += 50) seen.push(...registers(m.handle({ type: 'timer', now: t })));
    assert.deepEqual(seen.at(-1), S2);
    const alone = machine();
    alone.handle({ type: 'start', now: 0 });
    const end = alone.handle({ type: 'transport-closed', transport: 'server', reason: 'closed', now: 100 });
    const fail = end.find((a) => a.type === 'fail');
    assert.ok(fail?.type === 'fail');
    assert.equal(fail.error.code, 'SERVER_UNREACHABLE');
  });
});
