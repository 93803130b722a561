/**
 * The rendezvous client with several servers (issue 12, item 3), on a fake clock: it registers with the first, moves
 * to the next once every REGISTER has gone unanswered for `failoverMs`, takes answers only from the current server,
 * never moves while the server answers, and rides out a 503 for STORE_DOWN_GRACE_MS before it gives up.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage, Method } from '../../src/codec/messages.js';
import { decodeStun } from '../../src/codec/stun.js';
import type { SendAction } from '../../src/core/machine.js';
import { DEFAULT_TIMING } from '../../src/core/punch/types.js';
import { DEFAULT_FAILOVER_MS, RendezvousClient, STORE_DOWN_GRACE_MS, type RendezvousNote } from '../../src/core/punch/rendezvous-client.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';

const KEYS = deriveNetworkKeys(Buffer.from('failover secret'));
const S1: Endpoint = { address: '203.0.113.1', port: 3478 };
const S3: Endpoint = { address: '203.0.113.3', port: 3478 };

function client(): RendezvousClient {
  return new RendezvousClient({
    name: 'alice', peer: 'bob', keys: KEYS, server: S1, fallbacks: [S3], transport: 'udp', wire: 'udp',
    sessionNonce: randomBytes(16), newTxid: () => randomBytes(12), timing: DEFAULT_TIMING,
  });
}

/** Runs timers every 50 ms from `from` to `to`; returns the sends and notes. */
function tick(c: RendezvousClient, from: number, to: number): { sends: SendAction[]; notes: RendezvousNote[] } {
  const sends: SendAction[] = [];
  const notes: RendezvousNote[] = [];
  for (let t = from; t <= to; t += 50) notes.push(...c.onTimer(t, { push: (...a: SendAction[]) => sends.push(...a) }));
  return { sends, notes };
}

/** The server's answer to `request`: register-ok, or an error `code`. */
function answer(request: Uint8Array, now: number, code?: number): { msg: ReturnType<typeof decodeMessage>; data: Buffer } {
  const req = decodeMessage(request);
  assert.ok(req.ok && req.msg.kind === 'register');
  const data = code === undefined
    ? encodeMessage({ kind: 'register-ok', txid: req.msg.txid, mapped: { address: '198.51.100.9', port: 4000 }, lifetimeSeconds: 6, timestamp: now, alternate: undefined, intro: undefined }, { key: KEYS.serverToClient })
    : encodeMessage({ kind: 'error', method: Method.REGISTER, txid: req.msg.txid, code, reason: 'Store Unavailable', timestamp: undefined }, { key: KEYS.serverToClient });
  return { msg: decodeMessage(data), data };
}

function feed(c: RendezvousClient, a: { msg: ReturnType<typeof decodeMessage>; data: Buffer }, now: number, sends: SendAction[]): RendezvousNote[] {
  assert.ok(a.msg.ok);
  const m = a.msg.msg;
  assert.ok(m.kind === 'register-ok' || m.kind === 'error');
  const stun = decodeStun(a.data);
  assert.ok(stun.ok);
  return c.handle(m, a.data, stun.msg, now, { push: (...x: SendAction[]) => sends.push(...x) });
}

describe('rendezvous client with several servers', () => {
  it('registers with the first; after failoverMs of silence, with the next (a failover note), and only the next', () => {
    const c = client();
    const sends: SendAction[] = [];
    c.start(0, [], { push: (...a: SendAction[]) => sends.push(...a) });
    assert.deepEqual(sends[0]?.to, S1);
    const before = tick(c, 50, DEFAULT_FAILOVER_MS - 50);
    assert.ok(before.sends.every((s) => s.to === S1 || (s.to.address === S1.address && s.to.port === S1.port)));
    assert.equal(before.notes.length, 0);
    const after = tick(c, DEFAULT_FAILOVER_MS, DEFAULT_FAILOVER_MS + 500);
    assert.deepEqual(after.notes[0], { type: 'failover', from: S1, to: S3 });
    assert.deepEqual(after.sends.at(-1)?.to, S3);
    assert.deepEqual(c.server, S3);
    assert.equal(c.isFromServer('udp', S1), false, 'the old server is no longer listened to');
    assert.equal(c.isFromServer('udp', S3), true);
  });

  it('never moves while the server answers', () => {
    const c = client();
    const sends: SendAction[] = [];
    c.start(0, [], { push: (...a: SendAction[]) => sends.push(...a) });
    let last = sends.length;
    for (let t = 50; t <= 20_000; t += 50) {
      c.onTimer(t, { push: (...a: SendAction[]) => sends.push(...a) });
      for (const s of sends.slice(last)) feed(c, answer(s.data, t), t, sends);
      last = sends.length;
    }
    assert.deepEqual(c.server, S1);
    assert.ok(c.registered);
  });

  it(`a 503 is ridden out for ${STORE_DOWN_GRACE_MS} ms, then STORE_UNAVAILABLE`, () => {
    const c = client();
    const sends: SendAction[] = [];
    c.start(0, [], { push: (...a: SendAction[]) => sends.push(...a) });
    const first = feed(c, answer(sends[0]!.data, 10, 503), 10, sends);
    assert.equal(first[0]?.type, 'dropped');
    const retries = tick(c, 50, 1000);
    assert.ok(retries.sends.length > 0, 'it keeps sending');
    const late = feed(c, answer(retries.sends.at(-1)!.data, STORE_DOWN_GRACE_MS + 20, 503), STORE_DOWN_GRACE_MS + 20, sends);
    const note = late[0];
    assert.ok(note?.type === 'failed', JSON.stringify(late));
    assert.equal(note.error.code, 'STORE_UNAVAILABLE');
  });
});
