/**
 * The server's side of lifecycle honesty (issue 9, item 1), with a fake clock: per-registration expiry from the
 * peer's REFRESH-INTERVAL; withdrawal by REPORT (outcome withdrawn) and the NOTICE to a waiting partner; a new
 * session displacing an old one (NOTICE to the old one, through its own address) and a refresh of the old one
 * answered 409 without taking the name back; MODE carried into the introduction, and UDP/TCP registrations pairing
 * only when both say what they run.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage, RegisterFlag, type BurrowMessage, type Outcome, type PeerMode } from '../../src/codec/messages.js';
import { decodeStun, verifyIntegrity } from '../../src/codec/stun.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import type { ServerAction } from '../../src/server/core.js';
import { counterBytes } from '../support/simnet.js';
import { TestServer } from './harness.js';

const KEYS = deriveNetworkKeys(Buffer.from('lifecycle test secret'));
const A: Endpoint = { address: '198.51.100.2', port: 40000 };
const A2: Endpoint = { address: '198.51.100.3', port: 40100 };
const B: Endpoint = { address: '198.51.100.6', port: 40001 };
const T0 = 1_700_000_000_000;

function server(): TestServer {
  return new TestServer({ networks: [KEYS], seed: 1, randomBytes: counterBytes('life') });
}

let tx = 0;
interface RegOpts {
  readonly nonce?: number;
  readonly ts?: number;
  readonly refreshMs?: number;
  readonly refresh?: boolean;
  readonly mode?: PeerMode;
  readonly transport?: 'tcp';
}
function register(name: string, target: string, o: RegOpts = {}): Buffer {
  const txid = Buffer.alloc(12);
  txid.writeUInt32BE(++tx, 8);
  const msg: BurrowMessage = {
    kind: 'register', txid, networkId: KEYS.networkId, name, target, sessionNonce: Buffer.alloc(16, o.nonce ?? 1), timestamp: o.ts ?? T0,
    candidates: [], mapping: 'unknown',
    ...(o.refreshMs !== undefined ? { refreshMs: o.refreshMs } : {}),
    ...(o.refresh === true ? { flags: RegisterFlag.REFRESH } : {}),
    ...(o.mode !== undefined ? { mode: o.mode } : {}),
    ...(o.transport !== undefined ? { transport: o.transport } : {}),
  };
  return encodeMessage(msg, { key: KEYS.clientToServer });
}
function report(name: string, nonce: number, outcome: Outcome, ts = T0): Buffer {
  const txid = Buffer.alloc(12);
  txid.writeUInt32BE(++tx, 8);
  return encodeMessage({ kind: 'report', txid, networkId: KEYS.networkId, name, sessionNonce: Buffer.alloc(16, nonce), timestamp: ts, outcome }, { key: KEYS.clientToServer });
}

/** Every message the server sent (UDP or TCP), authenticated with the server key, with where it went. */
function messages(actions: ServerAction[]): { to: Endpoint | number; msg: BurrowMessage }[] {
  return actions.flatMap((a) => {
    if (a.type !== 'send' && a.type !== 'send-stream') return [];
    const data = a.data;
    const stun = decodeStun(data);
    assert.ok(stun.ok);
    assert.equal(verifyIntegrity(data, stun.msg, KEYS.serverToClient), 'valid', 'an unauthenticated server message');
    const d = decodeMessage(data);
    assert.ok(d.ok);
    return [{ to: a.type === 'send' ? a.to : a.conn, msg: d.msg }];
  });
}

describe('expiry: a few of the peer\'s refresh periods', () => {
  it('REFRESH-INTERVAL 2 s: the registration lives 6 s after its last REGISTER (LIFETIME 6), then the partner no longer finds it', () => {
    const s = server();
    const [ok] = messages(s.datagram('main', A, register('carol', 'dave', { refreshMs: 2000 }), T0));
    assert.ok(ok?.msg.kind === 'register-ok');
    assert.equal(ok.msg.lifetimeSeconds, 6);
    assert.ok(s.store.lookup(KEYS.networkIdHex, 'carol', T0 + 5999));
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'carol', T0 + 6000), undefined);
    const [answer] = messages(s.datagram('main', B, register('dave', 'carol', { refreshMs: 2000, nonce: 2, ts: T0 + 6000 }), T0 + 6000));
    assert.ok(answer?.msg.kind === 'register-ok' && answer.msg.intro === undefined, 'dave was introduced to an expired carol');
    assert.equal(s.store.size, 1, 'carol is gone from the store (only dave is left)');
  });

  it('a refresh extends it; without REFRESH-INTERVAL (an older client) the server lifetime (60 s) applies; tiny periods get at least 1 s', () => {
    const s = server();
    s.datagram('main', A, register('carol', 'dave', { refreshMs: 2000 }), T0);
    s.datagram('main', A, register('carol', 'dave', { refreshMs: 2000, refresh: true, ts: T0 + 4000 }), T0 + 4000);
    assert.ok(s.store.lookup(KEYS.networkIdHex, 'carol', T0 + 9999));
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'carol', T0 + 10_000), undefined);
    s.datagram('main', B, register('old', 'x', { nonce: 3 }), T0);
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'old', T0)?.expiresAt, T0 + 60_000);
    s.datagram('main', B, register('fast', 'x', { nonce: 4, refreshMs: 1 }), T0);
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'fast', T0)?.expiresAt, T0 + 1000);
    s.datagram('main', B, register('slow', 'x', { nonce: 5, refreshMs: 3_600_000 }), T0);
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'slow', T0)?.expiresAt, T0 + 60_000, 'capped at the server lifetime');
  });

  it('entries expire in any order (each its own lifetime): the sweep finds an expired entry behind a live one', () => {
    const s = server();
    s.datagram('main', A, register('long', 'x', { refreshMs: 10_000 }), T0); // 30 s
    s.datagram('main', B, register('short', 'y', { nonce: 2, refreshMs: 1000 }), T0 + 1); // 3 s
    assert.equal(s.store.sweep(T0 + 3001), 1);
    assert.ok(s.store.lookup(KEYS.networkIdHex, 'long', T0 + 3001));
    assert.equal(s.store.size, 1);
  });
});

describe('withdrawal and the NOTICE to a waiting partner', () => {
  it('REPORT withdrawn ends the registration; before an introduction nobody is told', () => {
    const s = server();
    s.datagram('main', A, register('carol', 'dave', { refreshMs: 2000 }), T0);
    const out = messages(s.datagram('main', A, report('carol', 1, 'withdrawn'), T0 + 100));
    assert.deepEqual(out, [], 'a REPORT is never answered');
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'carol', T0 + 100), undefined);
    assert.equal(s.stats.withdrawals, 1);
    assert.equal(s.stats.partnersToldLeft, 0);
  });

  it('after an introduction, the partner that waits hears NOTICE partner-left (twice, at its own address, for its session)', () => {
    const s = server();
    s.datagram('main', A, register('carol', 'dave', { refreshMs: 2000 }), T0);
    s.datagram('main', B, register('dave', 'carol', { refreshMs: 2000, nonce: 2 }), T0 + 10);
    const out = messages(s.datagram('main', A, report('carol', 1, 'withdrawn', T0 + 20), T0 + 20));
    assert.equal(out.length, 2);
    for (const { to, msg } of out) {
      assert.deepEqual(to, B);
      assert.ok(msg.kind === 'notice');
      assert.equal(msg.notice, 'partner-left');
      assert.equal(msg.peerName, 'carol');
      assert.deepEqual(Buffer.from(msg.peerNonce), Buffer.alloc(16, 1));
      assert.deepEqual(Buffer.from(msg.recipientNonce), Buffer.alloc(16, 2));
      assert.equal(msg.outcome, 'withdrawn');
    }
    assert.equal(s.stats.partnersToldLeft, 1);
    // A replay of the REPORT changes nothing and tells nobody again.
    assert.deepEqual(messages(s.datagram('main', A, report('carol', 1, 'withdrawn', T0 + 20), T0 + 30)), []);
  });

  it('a connected partner is not told (it has its path); a failed one is', () => {
    const s = server();
    s.datagram('main', A, register('carol', 'dave', { refreshMs: 2000 }), T0);
    s.datagram('main', B, register('dave', 'carol', { refreshMs: 2000, nonce: 2 }), T0 + 10);
    assert.deepEqual(messages(s.datagram('main', A, report('carol', 1, 'connected', T0 + 20), T0 + 20)), []);
    s.datagram('main', A, register('carol', 'dave', { refreshMs: 2000, nonce: 7 }), T0 + 30);
    const failed = messages(s.datagram('main', A, report('carol', 7, 'failed', T0 + 40), T0 + 40)).filter((m) => m.msg.kind === 'notice');
    assert.equal(failed.length, 2);
    assert.ok(failed.every((m) => m.msg.kind === 'notice' && m.msg.outcome === 'failed'), 'the partner learns that carol found no path either');
  });

  it('a TCP peer whose connection closes (it ended, or was killed) is withdrawn, and its waiting partner told', () => {
    const s = server();
    s.streamMessage(1, A, register('carol', 'dave', { transport: 'tcp', mode: 'send' }), T0);
    s.streamMessage(2, B, register('dave', 'carol', { transport: 'tcp', mode: 'receive', nonce: 2 }), T0 + 10);
    const out = messages(s.streamClosed(1, T0 + 20));
    assert.deepEqual(out.map((m) => [m.to, m.msg.kind]), [[2, 'notice']], 'one NOTICE down dave\'s connection');
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'carol', T0 + 20), undefined);
  });
});

describe('a second live registration under the same name', () => {
  it('wins; the old session is told at its own address (NOTICE displaced, naming the new session)', () => {
    const s = server();
    s.datagram('main', A, register('alice', 'bob', { refreshMs: 2000 }), T0);
    const out = messages(s.datagram('main', A2, register('alice', 'bob', { refreshMs: 2000, nonce: 9, ts: T0 + 1000 }), T0 + 1000));
    const notices = out.filter((m) => m.msg.kind === 'notice');
    assert.equal(notices.length, 2);
    for (const { to, msg } of notices) {
      assert.deepEqual(to, A);
      assert.ok(msg.kind === 'notice' && msg.notice === 'displaced' && msg.peerName === 'alice');
      assert.deepEqual(Buffer.from(msg.recipientNonce), Buffer.alloc(16, 1));
      assert.deepEqual(Buffer.from(msg.peerNonce), Buffer.alloc(16, 9));
    }
    assert.ok(out.some((m) => m.msg.kind === 'register-ok' && (m.to as Endpoint).port === A2.port));
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'alice', T0 + 1000)?.nonce, Buffer.alloc(16, 9).toString('hex'));
  });

  it('the old session\'s refresh is answered 409 (authenticated) and does not take the name back; a REGISTER that starts a session still wins', () => {
    const s = server();
    s.datagram('main', A, register('alice', 'bob', { refreshMs: 2000 }), T0);
    s.datagram('main', A2, register('alice', 'bob', { refreshMs: 2000, nonce: 9 }), T0 + 1000);
    const [refused] = messages(s.datagram('main', A, register('alice', 'bob', { refreshMs: 2000, refresh: true, ts: T0 + 2000 }), T0 + 2000));
    assert.ok(refused?.msg.kind === 'error');
    assert.equal(refused.msg.code, 409);
    assert.equal(s.stats.registrationsRefused, 1);
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'alice', T0 + 2000)?.nonce, Buffer.alloc(16, 9).toString('hex'));
    // A refresh of the session that holds the name is an ordinary refresh.
    const [ok] = messages(s.datagram('main', A2, register('alice', 'bob', { refreshMs: 2000, nonce: 9, refresh: true, ts: T0 + 2500 }), T0 + 2500));
    assert.equal(ok?.msg.kind, 'register-ok');
    // Once the name is free again (the new session withdrew), a refresh takes it back: a server restart looks the same.
    s.datagram('main', A2, report('alice', 9, 'withdrawn', T0 + 3000), T0 + 3000);
    const [back] = messages(s.datagram('main', A, register('alice', 'bob', { refreshMs: 2000, refresh: true, ts: T0 + 3500 }), T0 + 3500));
    assert.equal(back?.msg.kind, 'register-ok');
  });
});

describe('MODE', () => {
  it('is carried into the introduction both ways (answer and push)', () => {
    const s = server();
    s.datagram('main', A, register('carol', 'dave', { mode: 'send' }), T0);
    const out = messages(s.datagram('main', B, register('dave', 'carol', { mode: 'punch', nonce: 2 }), T0 + 10));
    const push = out.find((m) => m.msg.kind === 'introduce');
    const answer = out.find((m) => m.msg.kind === 'register-ok');
    assert.ok(push?.msg.kind === 'introduce' && answer?.msg.kind === 'register-ok');
    assert.equal(push.msg.intro.peerMode, 'punch');
    assert.equal(answer.msg.intro?.peerMode, 'send');
  });

  it('UDP and TCP registrations share names; they pair when both say what they run, never otherwise', () => {
    const s = server();
    s.datagram('main', A, register('carol', 'dave', { mode: 'punch' }), T0);
    const withModes = messages(s.streamMessage(1, B, register('dave', 'carol', { transport: 'tcp', mode: 'send', nonce: 2 }), T0 + 10));
    const answer = withModes.find((m) => m.msg.kind === 'register-ok');
    assert.ok(answer?.msg.kind === 'register-ok' && answer.msg.intro?.peerMode === 'punch', 'a send facing a punch was not introduced (each side could not say what is wrong)');
    const t = server();
    t.datagram('main', A, register('carol', 'dave'), T0);
    const without = messages(t.streamMessage(1, B, register('dave', 'carol', { transport: 'tcp', nonce: 2 }), T0 + 10));
    const plain = without.find((m) => m.msg.kind === 'register-ok');
    assert.ok(plain?.msg.kind === 'register-ok' && plain.msg.intro === undefined, 'older clients of different transports were paired');
  });
});
