/**
 * The sans-IO TURN client with a fake clock against a scripted server: the 401 challenge and long-term credentials,
 * 438 stale nonces, wrong credentials, retransmissions and give-up, refresh timing, ChannelBind with a queue and
 * ChannelData, Data indications, refused peers, integrity of answers, and deleting the allocation.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import {
  decodeChannelData,
  decodeTurn,
  encodeChannelData,
  encodeTurn,
  longTermKey,
  looksLikeChannelData,
  TurnMethod,
  verifyTurnIntegrity,
  type TurnFields,
  type TurnMessage,
} from '../../src/codec/turn.js';
import { DEFAULT_TURN_TIMING, TurnClient, type TurnAction } from '../../src/core/turn/client.js';
import { counterBytes } from '../support/simnet.js';

const USER = '1700000000:alice';
const PASS = 'c2VjcmV0';
const REALM = 'burrow.test';
const KEY = longTermKey(USER, REALM, PASS);
const RELAYED: Endpoint = { address: '203.0.113.50', port: 49152 };
const MAPPED: Endpoint = { address: '198.51.100.2', port: 40000 };
const PEER: Endpoint = { address: '198.51.100.6', port: 41000 };

function client(lifetimeSeconds = 600): TurnClient {
  return new TurnClient({ credentials: { username: USER, password: PASS }, randomBytes: counterBytes('turn'), lifetimeSeconds });
}

function transmitted(actions: TurnAction[]): Uint8Array[] {
  return actions.flatMap((a) => (a.type === 'transmit' ? [a.data] : []));
}

function only(actions: TurnAction[]): { data: Uint8Array; msg: TurnMessage } {
  const t = transmitted(actions);
  assert.equal(t.length, 1, `expected one datagram, got ${t.length}: ${JSON.stringify(actions.map((a) => a.type))}`);
  const d = decodeTurn(t[0]!);
  assert.ok(d.ok, 'not a TURN message');
  return { data: t[0]!, msg: d.msg };
}

function answer(req: TurnMessage, cls: 'success' | 'error', fields: TurnFields, key: Uint8Array | null = KEY): Uint8Array {
  return encodeTurn(req.method, cls, req.transactionId, fields, key ? { key, fingerprint: true } : { fingerprint: true });
}

/** Runs the 401 dance and the allocation; returns the client at time `now`. */
function allocated(c: TurnClient, now = 0): void {
  const first = only(c.handle({ type: 'start', now }));
  const retry = only(c.handle({ type: 'datagram', data: answer(first.msg, 'error', { error: { code: 401, reason: 'Unauthorized' }, realm: REALM, nonce: 'n1' }, null), now }));
  const acts = c.handle({ type: 'datagram', data: answer(retry.msg, 'success', { relayed: RELAYED, mapped: MAPPED, lifetime: 600 }), now });
  assert.ok(acts.some((a) => a.type === 'allocated'));
}

describe('TURN client: Allocate', () => {
  it('answers the 401 challenge with USERNAME, REALM, NONCE and a MESSAGE-INTEGRITY that verifies; allocated names the relayed address', () => {
    const c = client();
    const first = only(c.handle({ type: 'start', now: 0 }));
    assert.equal(first.msg.method, TurnMethod.ALLOCATE);
    assert.equal(first.msg.requestedTransport, 17);
    assert.equal(first.msg.username, undefined);
    const retry = only(c.handle({ type: 'datagram', data: answer(first.msg, 'error', { error: { code: 401, reason: 'Unauthorized' }, realm: REALM, nonce: 'abcdefgh' }, null), now: 5 }));
    assert.equal(retry.msg.username, USER);
    assert.equal(retry.msg.realm, REALM);
    assert.equal(retry.msg.nonce, 'abcdefgh');
    assert.equal(verifyTurnIntegrity(retry.data, retry.msg, KEY), 'valid');
    const acts = c.handle({ type: 'datagram', data: answer(retry.msg, 'success', { relayed: RELAYED, mapped: MAPPED, lifetime: 300 }), now: 10 });
    assert.deepEqual(acts, [{ type: 'allocated', relayed: RELAYED, mapped: MAPPED, lifetimeSeconds: 300 }]);
    assert.deepEqual(c.relayed, RELAYED);
    // Refreshed at 5/6 of the granted lifetime.
    assert.equal(c.nextTimeoutAt(), 10 + 250_000);
    const refresh = only(c.handle({ type: 'timer', now: 250_010 }));
    assert.equal(refresh.msg.method, TurnMethod.REFRESH);
    assert.equal(refresh.msg.lifetime, 600);
    assert.equal(verifyTurnIntegrity(refresh.data, refresh.msg, KEY), 'valid');
  });

  it('a 438 stale nonce is retried once with the new nonce', () => {
    const c = client();
    const first = only(c.handle({ type: 'start', now: 0 }));
    const retry = only(c.handle({ type: 'datagram', data: answer(first.msg, 'error', { error: { code: 401, reason: 'Unauthorized' }, realm: REALM, nonce: 'old-nonce' }, null), now: 1 }));
    const again = only(c.handle({ type: 'datagram', data: answer(retry.msg, 'error', { error: { code: 438, reason: 'Stale Nonce' }, realm: REALM, nonce: 'new-nonce' }, null), now: 2 }));
    assert.equal(again.msg.nonce, 'new-nonce');
    assert.equal(verifyTurnIntegrity(again.data, again.msg, KEY), 'valid');
    const acts = c.handle({ type: 'datagram', data: answer(again.msg, 'success', { relayed: RELAYED, lifetime: 600 }), now: 3 });
    assert.equal(acts[0]?.type, 'allocated');
  });

  it('wrong credentials: a second 401 fails the allocation with the code and the reason phrase', () => {
    const c = client();
    const first = only(c.handle({ type: 'start', now: 0 }));
    const retry = only(c.handle({ type: 'datagram', data: answer(first.msg, 'error', { error: { code: 401, reason: 'Unauthorized' }, realm: REALM, nonce: 'n' }, null), now: 1 }));
    const acts = c.handle({ type: 'datagram', data: answer(retry.msg, 'error', { error: { code: 401, reason: 'Unauthorized' }, realm: REALM, nonce: 'n' }, null), now: 2 });
    assert.deepEqual(acts, [{ type: 'failed', failure: { stage: 'allocate', code: 401, reason: 'Unauthorized', attempts: 2 } }]);
    assert.ok(c.isFinished);
    assert.equal(c.nextTimeoutAt(), undefined);
  });

  it('403 (relay turned off) fails at once with the server’s words', () => {
    const c = client();
    const first = only(c.handle({ type: 'start', now: 0 }));
    const acts = c.handle({ type: 'datagram', data: answer(first.msg, 'error', { error: { code: 403, reason: 'Forbidden: relay disabled' } }, null), now: 1 });
    assert.deepEqual(acts, [{ type: 'failed', failure: { stage: 'allocate', code: 403, reason: 'Forbidden: relay disabled', attempts: 1 } }]);
  });

  it('an unanswered Allocate is retransmitted on the schedule, then fails with code 0', () => {
    const c = client();
    const first = only(c.handle({ type: 'start', now: 0 }));
    const times: number[] = [];
    let failed: TurnAction | undefined;
    for (let i = 0; i < 20 && !c.isFinished; i++) {
      const at = c.nextTimeoutAt()!;
      const acts = c.handle({ type: 'timer', now: at });
      for (const d of transmitted(acts)) {
        assert.deepEqual(Buffer.from(d), Buffer.from(first.data), 'a retransmission must be the same request');
        times.push(at);
      }
      failed = acts.find((a) => a.type === 'failed') ?? failed;
    }
    const steps = DEFAULT_TURN_TIMING.retransmitMs;
    const expected: number[] = [];
    let t = 0;
    for (let i = 0; i < steps.length - 1; i++) expected.push((t += steps[i]!));
    assert.deepEqual(times, expected);
    assert.deepEqual(failed, { type: 'failed', failure: { stage: 'allocate', code: 0, reason: 'no answer from the TURN server', attempts: steps.length } });
  });

  it('an answer with a bad MESSAGE-INTEGRITY is dropped, and one for no request too', () => {
    const c = client();
    const first = only(c.handle({ type: 'start', now: 0 }));
    const retry = only(c.handle({ type: 'datagram', data: answer(first.msg, 'error', { error: { code: 401, reason: 'Unauthorized' }, realm: REALM, nonce: 'n' }, null), now: 1 }));
    const forged = c.handle({ type: 'datagram', data: answer(retry.msg, 'success', { relayed: { address: '192.0.2.99', port: 1 } }, longTermKey(USER, REALM, 'wrong')), now: 2 });
    assert.equal(forged[0]?.type, 'dropped');
    const stray = c.handle({ type: 'datagram', data: encodeTurn(TurnMethod.ALLOCATE, 'success', new Uint8Array(12).fill(9), { relayed: RELAYED }), now: 3 });
    assert.equal(stray[0]?.type, 'dropped');
    assert.ok(!c.isAllocated);
  });
});

describe('TURN client: peers', () => {
  it('binds a channel on the first datagram to a peer, queues meanwhile, then sends ChannelData; both kinds of incoming data arrive', () => {
    const c = client();
    allocated(c);
    const bind = only(c.handle({ type: 'send', peer: PEER, data: Buffer.from('one'), now: 100 }));
    assert.equal(bind.msg.method, TurnMethod.CHANNEL_BIND);
    assert.deepEqual(bind.msg.peers, [PEER]);
    assert.ok(bind.msg.channel! >= 0x4000 && bind.msg.channel! <= 0x4fff);
    assert.equal(verifyTurnIntegrity(bind.data, bind.msg, KEY), 'valid');
    assert.deepEqual(c.handle({ type: 'send', peer: PEER, data: Buffer.from('two'), now: 101 }), []);
    const flushed = transmitted(c.handle({ type: 'datagram', data: answer(bind.msg, 'success', {}), now: 110 }));
    assert.deepEqual(flushed.map((d) => { const x = decodeChannelData(d); return x.ok ? [x.channel, Buffer.from(x.data).toString()] : []; }), [[bind.msg.channel, 'one'], [bind.msg.channel, 'two']]);
    const direct = transmitted(c.handle({ type: 'send', peer: PEER, data: Buffer.from('three'), now: 120 }));
    assert.equal(direct.length, 1);
    assert.ok(looksLikeChannelData(direct[0]!));
    // From the peer: ChannelData on its channel, and a Data indication (permission, no channel).
    const inCh = c.handle({ type: 'datagram', data: encodeChannelData(bind.msg.channel!, Buffer.from('hi')), now: 130 });
    assert.deepEqual(inCh.map((a) => (a.type === 'data' ? [a.peer, Buffer.from(a.data).toString()] : a.type)), [[PEER, 'hi']]);
    const other = { address: PEER.address, port: 41001 };
    const ind = encodeTurn(TurnMethod.DATA, 'indication', new Uint8Array(12).fill(1), { peers: [other], data: Buffer.from('yo') });
    const inInd = c.handle({ type: 'datagram', data: ind, now: 131 });
    assert.deepEqual(inInd.map((a) => (a.type === 'data' ? [a.peer, Buffer.from(a.data).toString()] : a.type)), [[other, 'yo']]);
    // ChannelData on an unbound channel is dropped.
    assert.equal(c.handle({ type: 'datagram', data: encodeChannelData(0x4fff, Buffer.from('x')), now: 132 })[0]?.type, 'dropped');
    // Channels (and with them the permissions) are re-bound before the 300 s permission lifetime runs out.
    const rebinds = transmitted(c.handle({ type: 'timer', now: 110 + DEFAULT_TURN_TIMING.channelRefreshMs }));
    assert.equal(rebinds.length, 1);
    const rb = decodeTurn(rebinds[0]!);
    assert.ok(rb.ok && rb.msg.method === TurnMethod.CHANNEL_BIND && rb.msg.channel === bind.msg.channel);
    assert.ok(DEFAULT_TURN_TIMING.channelRefreshMs < 300_000);
  });

  it('a peer the relay refuses (403) is reported once and left alone for a while', () => {
    const c = client();
    allocated(c);
    const bind = only(c.handle({ type: 'send', peer: PEER, data: Buffer.from('x'), now: 0 }));
    const acts = c.handle({ type: 'datagram', data: answer(bind.msg, 'error', { error: { code: 403, reason: 'Forbidden: not your partner' } }, null), now: 5 });
    assert.deepEqual(acts, [{ type: 'peer-refused', peer: PEER, code: 403, reason: 'Forbidden: not your partner' }]);
    assert.deepEqual(c.handle({ type: 'send', peer: PEER, data: Buffer.from('y'), now: 1000 }), []);
    const retry = only(c.handle({ type: 'send', peer: PEER, data: Buffer.from('z'), now: 5 + DEFAULT_TURN_TIMING.refusedRetryMs }));
    assert.equal(retry.msg.method, TurnMethod.CHANNEL_BIND);
    assert.ok(c.isAllocated, 'a refused peer must not cost the allocation');
  });

  it('sends before the allocation are dropped; close deletes the allocation with LIFETIME 0', () => {
    const c = client();
    c.handle({ type: 'start', now: 0 });
    assert.deepEqual(c.handle({ type: 'send', peer: PEER, data: Buffer.from('x'), now: 1 }), []);
    const c2 = client();
    allocated(c2);
    const acts = c2.handle({ type: 'close', now: 10 });
    const del = decodeTurn(transmitted(acts)[0]!);
    assert.ok(del.ok && del.msg.method === TurnMethod.REFRESH && del.msg.lifetime === 0);
    assert.equal(acts.at(-1)?.type, 'closed');
    assert.ok(c2.isFinished);
  });

  it('a failed refresh loses the allocation', () => {
    const c = client();
    allocated(c);
    const at = c.nextTimeoutAt()!;
    const refresh = only(c.handle({ type: 'timer', now: at }));
    const acts = c.handle({ type: 'datagram', data: answer(refresh.msg, 'error', { error: { code: 437, reason: 'Allocation Mismatch' } }, null), now: at + 1 });
    assert.deepEqual(acts, [{ type: 'failed', failure: { stage: 'refresh', code: 437, reason: 'Allocation Mismatch', attempts: 1 } }]);
  });
});
