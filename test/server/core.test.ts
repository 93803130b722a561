/** The rendezvous server core, driven directly with datagrams and a fake clock. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzRuns } from '../support/fuzz.js';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage, type BurrowMessage } from '../../src/codec/messages.js';
import { decodeStun, verifyIntegrity } from '../../src/codec/stun.js';
import { bindingRequest } from '../../src/core/stun-client.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import type { ServerAction, ServerLimits } from '../../src/server/core.js';
import { TestServer } from './harness.js';
import { counterBytes } from '../support/simnet.js';

const KEYS = deriveNetworkKeys(Buffer.from('server test secret'));
const WRONG = deriveNetworkKeys(Buffer.from('another secret'));
const A: Endpoint = { address: '198.51.100.2', port: 40000 };
const B: Endpoint = { address: '198.51.100.6', port: 40001 };
const T0 = 1_700_000_000_000;

function server(limits: Partial<ServerLimits> = {}): TestServer {
  return new TestServer({ networks: [KEYS], alternate: { address: '203.0.113.1', port: 3479 }, limits, seed: 1, randomBytes: counterBytes('srv') });
}

let txCounter = 0;
function register(name: string, target: string, opts: { keys?: typeof KEYS; ts?: number; nonce?: number } = {}): Buffer {
  const keys = opts.keys ?? KEYS;
  const txid = Buffer.alloc(12);
  txid.writeUInt32BE(++txCounter, 8);
  const msg: BurrowMessage = {
    kind: 'register', txid, networkId: keys.networkId, name, target, sessionNonce: Buffer.alloc(16, opts.nonce ?? 1),
    timestamp: opts.ts ?? T0, candidates: [{ kind: 'host', priority: 2130706431, endpoint: { address: '192.0.2.10', port: 5000 } }], mapping: 'unknown',
  };
  return encodeMessage(msg, { key: keys.clientToServer });
}

function sends(actions: ServerAction[]): Extract<ServerAction, { type: 'send' }>[] {
  return actions.filter((a): a is Extract<ServerAction, { type: 'send' }> => a.type === 'send');
}

function decoded(a: Extract<ServerAction, { type: 'send' }>): BurrowMessage {
  const d = decodeMessage(a.data);
  assert.ok(d.ok);
  return d.msg;
}

describe('server core', () => {
  it('answers a standard STUN Binding request with XOR-MAPPED-ADDRESS, and FINGERPRINT when asked', () => {
    const s = server();
    const txid = Buffer.alloc(12, 5);
    const out = sends(s.datagram('main', A, encodeMessage({ kind: 'binding', txid, fingerprint: true }), T0));
    assert.equal(out.length, 1);
    const stun = decodeStun(out[0]!.data);
    assert.ok(stun.ok);
    assert.ok(stun.msg.attributes.some((x) => x.type === 0x8028));
    assert.deepEqual(decoded(out[0]!), { kind: 'binding-ok', txid: stun.msg.transactionId, mapped: A });
    assert.equal(s.stats.stunBindings, 1);
  });

  it('answers Burrow’s padded Binding request with no more bytes than it got', () => {
    const s = server();
    const req = encodeMessage(bindingRequest(Buffer.alloc(12, 1)));
    const out = sends(s.datagram('alternate', { address: '2001:db8::5', port: 1 }, req, T0));
    assert.equal(out.length, 1);
    assert.ok(out[0]!.data.length <= req.length, `${out[0]!.data.length} > ${req.length}`);
  });

  it('answers bare Binding requests (with and without FINGERPRINT) at full speed from many sources, with the minimal RFC answer', () => {
    const s = server();
    let answered = 0;
    // 1,000 sources, 100 requests each within one simulated second: 100,000 requests, 100 per source per second (the
    // per-source limit is 200/s): every one is answered, whatever the server-wide rate.
    for (let i = 0; i < 100_000; i++) {
      const fingerprint = i % 2 === 1;
      const v6 = i % 4 >= 2;
      const req = encodeMessage({ kind: 'binding', txid: Buffer.alloc(12, i & 0xff), fingerprint });
      assert.equal(req.length, fingerprint ? 28 : 20);
      const from: Endpoint = v6 ? { address: `2001:db8::${(i % 1000).toString(16)}`, port: 4000 } : { address: `198.51.${(i % 1000) >> 8}.${i % 256}`, port: 4000 };
      const out = sends(s.datagram('main', from, req, T0 + i / 100));
      assert.equal(out.length, 1);
      const stun = decodeStun(out[0]!.data);
      assert.ok(stun.ok);
      // XOR-MAPPED-ADDRESS, plus FINGERPRINT when asked: nothing else (RFC 8489 sections 14.2, 14.7).
      assert.deepEqual(stun.msg.attributes.map((a) => a.type), fingerprint ? [0x0020, 0x8028] : [0x0020]);
      assert.equal(out[0]!.data.length, (v6 ? 44 : 32) + (fingerprint ? 8 : 0));
      answered++;
    }
    assert.equal(answered, 100_000);
    assert.equal(s.stats.stunBindingsUnanswered, 0);
  });

  it('bounds the Binding answers toward one address by the per-source limit: burst + rate × t, at most 24 bytes more each', () => {
    const s = server({ perSourceRate: 200, perSourceBurst: 400 });
    const victim: Endpoint = { address: '203.0.113.9', port: 1000 };
    let answers = 0;
    let excess = 0;
    // 100,000 spoofed bare requests "from" the victim over 10 simulated seconds.
    for (let i = 0; i < 100_000; i++) {
      const req = encodeMessage({ kind: 'binding', txid: Buffer.alloc(12, i & 0xff), fingerprint: i % 2 === 0 });
      for (const a of sends(s.datagram('main', { ...victim, port: 1000 + (i % 1000) }, req, T0 + i / 10))) {
        answers++;
        excess += a.data.length - req.length;
      }
    }
    assert.ok(answers <= 400 + 200 * 10, `${answers} answers toward one address in 10 s`);
    assert.ok(answers >= 400 + 200 * 10 - 2, `${answers}: the limit is the rate, not less`);
    assert.ok(excess <= 24 * answers);
    assert.equal(s.stats.rateLimited, 100_000 - answers);
  });

  it('in strict mode (bare Bindings unanswered) never answers unauthenticated input with more bytes than it got (fuzz)', () => {
    const s = server({ answerBareBindings: false, perSourceRate: 1e9, perSourceBurst: 1e9 });
    const valid = [register('alice', 'bob', { keys: WRONG }), register('alice', 'bob', { ts: T0 - 10 * 60_000 }), encodeMessage({ kind: 'binding', txid: Buffer.alloc(12), fingerprint: true })];
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.constantFrom(...valid), fc.tuple(fc.constantFrom(...valid), fc.nat(), fc.nat(255)).map(([v, i, x]) => {
        const b = Buffer.from(v);
        b[i % b.length] = x;
        return b;
      })), (bytes) => {
        for (const a of sends(s.datagram('main', A, bytes, T0))) assert.ok(a.data.length <= bytes.length, `${a.data.length} > ${bytes.length}`);
      }),
      { numRuns: fuzzRuns(20_000) },
    );
    assert.equal(s.store.size, 0, 'unauthenticated input created registrations');
  });

  it('answers a wrong secret with a short 401 echoing the transaction id', () => {
    const s = server();
    const req = register('alice', 'bob', { keys: WRONG });
    const out = sends(s.datagram('main', A, req, T0));
    assert.equal(out.length, 1);
    const msg = decoded(out[0]!);
    assert.equal(msg.kind, 'error');
    assert.equal(msg.code, 401);
    assert.deepEqual(Buffer.from(msg.txid), req.subarray(8, 20));
    assert.ok(out[0]!.data.length <= req.length);
    assert.equal(s.stats.authFailures, 1);
    assert.equal(s.store.size, 0);
  });

  it('answers a stale timestamp with an authenticated 438 carrying the server time', () => {
    const s = server();
    const req = register('alice', 'bob', { ts: T0 - 120_000 });
    const out = sends(s.datagram('main', A, req, T0));
    assert.equal(out.length, 1);
    const msg = decoded(out[0]!);
    assert.ok(msg.kind === 'error' && msg.code === 438 && msg.timestamp === T0);
    const stun = decodeStun(out[0]!.data);
    assert.ok(stun.ok);
    assert.equal(verifyIntegrity(out[0]!.data, stun.msg, KEYS.serverToClient), 'valid');
    assert.equal(s.store.size, 0);
  });

  it('registers, then introduces the pair at once by pushing to the first and answering the second', () => {
    const s = server();
    const first = sends(s.datagram('main', A, register('alice', 'bob'), T0));
    assert.equal(first.length, 1);
    const okA = decoded(first[0]!);
    assert.ok(okA.kind === 'register-ok' && okA.intro === undefined);
    assert.deepEqual(okA.mapped, A);
    const second = sends(s.datagram('main', B, register('bob', 'alice', { nonce: 2 }), T0 + 5));
    assert.equal(second.length, 2);
    const push = second.find((x) => x.to.port === A.port)!;
    const pushed = decoded(push);
    assert.ok(pushed.kind === 'introduce');
    assert.deepEqual(pushed.intro.peerMapped, B);
    assert.equal(pushed.intro.peerName, 'bob');
    assert.deepEqual(Buffer.from(pushed.recipientNonce), Buffer.alloc(16, 1));
    const stun = decodeStun(push.data);
    assert.ok(stun.ok && verifyIntegrity(push.data, stun.msg, KEYS.serverToClient) === 'valid');
    const answer = decoded(second.find((x) => x.to.port === B.port)!);
    assert.ok(answer.kind === 'register-ok' && answer.intro?.peerName === 'alice');
    assert.equal(s.stats.introductions, 1);
  });

  it('re-sends an introduction push with back-off until the recipient registers again', () => {
    const s = server();
    s.datagram('main', A, register('alice', 'bob'), T0);
    s.datagram('main', B, register('bob', 'alice', { nonce: 2 }), T0 + 5);
    const pushesAt = (t: number) => sends(s.timer(t)).filter((x) => x.to.port === A.port && decoded(x).kind === 'introduce').length;
    assert.equal(pushesAt(T0 + 50), 0);
    assert.equal(pushesAt(T0 + 105), 1);
    assert.equal(pushesAt(T0 + 150), 0);
    assert.equal(pushesAt(T0 + 305), 1);
    // alice's next REGISTER acknowledges it: no more re-sends.
    s.datagram('main', A, register('alice', 'bob'), T0 + 310);
    for (let t = T0 + 320; t < T0 + 5000; t += 50) assert.equal(pushesAt(t), 0);
  });

  it('gives up re-sending a push after five tries', () => {
    const s = server();
    s.datagram('main', A, register('alice', 'bob'), T0);
    s.datagram('main', B, register('bob', 'alice', { nonce: 2 }), T0 + 5);
    let resent = 0;
    for (let t = T0 + 50; t < T0 + 20_000; t += 50) resent += sends(s.timer(t)).length;
    assert.equal(resent, 4);
  });

  it('drops a replayed REGISTER, from the same or another address, without a word', () => {
    const s = server();
    const req = register('alice', 'bob');
    assert.equal(sends(s.datagram('main', A, req, T0)).length, 1);
    assert.equal(sends(s.datagram('main', A, req, T0 + 10)).length, 0);
    assert.equal(sends(s.datagram('main', { address: '203.0.113.66', port: 9 }, req, T0 + 20)).length, 0);
    assert.equal(s.stats.replaysRejected, 2);
    const reg = s.store.lookup(KEYS.networkIdHex, 'alice', T0 + 30);
    assert.deepEqual(reg?.mapped, A, 'a replay moved the registration');
    // After the timestamp window the replay is refused as stale (438 no longer than the request).
    const late = sends(s.datagram('main', { address: '203.0.113.66', port: 9 }, req, T0 + 31_000));
    assert.ok(late.every((x) => x.data.length <= req.length));
    assert.deepEqual(s.store.lookup(KEYS.networkIdHex, 'alice', T0 + 31_000)?.mapped, A);
  });

  it('remembers a REGISTER for as long as its timestamp is acceptable (two windows)', () => {
    const s = server();
    const req = register('alice', 'bob', { ts: T0 + 25_000 }); // a client clock 25 s fast
    assert.equal(sends(s.datagram('main', A, req, T0)).length, 1);
    for (const t of [T0 + 31_000, T0 + 50_000, T0 + 54_000]) {
      assert.equal(sends(s.datagram('main', { address: '203.0.113.66', port: 9 }, req, t)).length, 0, `replay accepted at +${t - T0} ms`);
    }
    assert.deepEqual(s.store.lookup(KEYS.networkIdHex, 'alice', T0 + 54_000)?.mapped, A);
  });

  it('limits each source’s rate without slowing other sources', () => {
    const s = server({ perSourceRate: 10, perSourceBurst: 20 });
    let answered = 0;
    for (let i = 0; i < 1000; i++) {
      answered += sends(s.datagram('main', A, encodeMessage(bindingRequest(Buffer.alloc(12, i & 0xff))), T0)).length;
    }
    assert.equal(answered, 20);
    assert.equal(s.stats.rateLimited, 980);
    assert.equal(sends(s.datagram('main', B, register('bob', 'alice'), T0)).length, 1);
  });

  it('keeps registrations within the bound by evicting the oldest, and expires them', () => {
    const s = server({ maxRegistrations: 100, perSourceRate: 1e9, perSourceBurst: 1e9 });
    for (let i = 0; i < 150; i++) s.datagram('main', A, register(`peer${i}`, 'x'), T0 + i);
    assert.equal(s.store.size, 100);
    assert.equal(s.stats.evictions, 50);
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'peer0', T0 + 200), undefined);
    assert.ok(s.store.lookup(KEYS.networkIdHex, 'peer149', T0 + 200));
    // peerN expires at T0 + 60 000 + N; peer50..peer99 are gone half-way through.
    s.timer(T0 + 60_099.5);
    assert.equal(s.store.size, 50);
    s.timer(T0 + 62_000);
    assert.equal(s.store.size, 0);
  });

  it('creates no state from junk', () => {
    const s = server({ perSourceRate: 1e9, perSourceBurst: 1e9 });
    for (let i = 0; i < 50_000; i++) {
      const junk = Buffer.alloc(i % 200);
      junk.fill(i & 0xff);
      assert.equal(sends(s.datagram('main', { address: `203.0.113.${i % 250}`, port: i & 0xffff }, junk, T0)).length, 0);
    }
    assert.equal(s.store.size, 0);
    assert.equal(s.stats.malformed, 50_000);
  });
});
