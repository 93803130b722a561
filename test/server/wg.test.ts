/** The server's WireGuard responder and WG-SYNC, with a fake clock: proof, replay, roaming, bounds, amplification. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage } from '../../src/codec/messages.js';
import { decodeWgSync, encodeWgSync, wgProof, type WgSyncRequest, type WgSyncSuccess } from '../../src/codec/wg-messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { consumeResponse, createInitiation, dh, publicKeyOf, sealTransport, tai64n } from '../../src/crypto/wireguard.js';
import type { ServerAction } from '../../src/server/core.js';
import { TestServer } from './harness.js';
import { counterBytes } from '../support/simnet.js';

const KEYS = deriveNetworkKeys(Buffer.from('wg server secret'));
const WRONG = deriveNetworkKeys(Buffer.from('some other secret'));
const T0 = 1_700_000_000_000;
const NAT_A: Endpoint = { address: '198.51.100.2', port: 51820 };
const ELSEWHERE: Endpoint = { address: '203.0.113.66', port: 40000 };

function server(maxPeers?: number): TestServer {
  return new TestServer({ networks: [KEYS], alternate: { address: '203.0.113.1', port: 3479 }, seed: 1, randomBytes: counterBytes('wg'), ...(maxPeers ? { limits: { maxRegistrations: maxPeers } } : {}) });
}

function sends(actions: ServerAction[]): Extract<ServerAction, { type: 'send' }>[] {
  return actions.filter((a): a is Extract<ServerAction, { type: 'send' }> => a.type === 'send');
}

/** A WireGuard interface as wireguard-go behaves towards the server: handshake, then keepalives. */
class Client {
  readonly priv = randomBytes(32);
  readonly pub = publicKeyOf(this.priv);
  counter = 0n;
  sendKey: Buffer | undefined;
  index = 0;
  initiation(now: number, keys = KEYS): ReturnType<typeof createInitiation> {
    return createInitiation(this.priv, keys.wireguard.publicKey, randomBytes(32), 1234, tai64n(now));
  }
  handshake(core: TestServer, from: Endpoint, now: number, psk = KEYS.wireguard.presharedKey): { init: Buffer; keepalive: Buffer | undefined } {
    const init = this.initiation(now);
    const out = sends(core.datagram('main', from, init.packet, now));
    assert.equal(out.length, 1);
    const reply = out[0]?.data ?? new Uint8Array(0);
    assert.ok(reply.length < init.packet.length, 'the answer to an initiation is shorter than it');
    const r = consumeResponse(init, reply, psk);
    if (!r) return { init: init.packet, keepalive: undefined };
    this.sendKey = r.sendKey;
    this.index = r.receiverIndex;
    this.counter = 0n;
    const keepalive = this.keepalive();
    assert.deepEqual(sends(core.datagram('main', from, keepalive, now)), []);
    return { init: init.packet, keepalive };
  }
  keepalive(): Buffer {
    return sealTransport(this.index, this.counter++, this.sendKey ?? Buffer.alloc(32), new Uint8Array(0));
  }
}

/**
 * WG-SYNC as burrow wg sends it: the first request has no proof and learns the server's proof key from the answer;
 * the second carries the proof. `proofKey` overrides the key the proof is computed with (a forgery).
 */
function sync(core: TestServer, client: Client, from: Endpoint, now: number, query: Uint8Array[], opts: { sharedKey?: Uint8Array; keys?: typeof KEYS; noProof?: boolean } = {}): { actions: ServerAction[]; bytes: Buffer } {
  const keys = opts.keys ?? KEYS;
  const facts = (ts: number): Omit<WgSyncRequest, 'kind' | 'query' | 'proof'> => ({ txid: randomBytes(12), networkId: keys.networkId, timestamp: ts, key: client.pub, listenPort: 51820, hosts: [{ address: '192.0.2.2', port: 51820 }], mapping: 'endpoint-independent' as const });
  const first = facts(now);
  const firstBytes = encodeWgSync({ kind: 'wg-sync', ...first, query, proof: undefined }, keys.clientToServer);
  const firstActions = core.datagram('main', from, firstBytes, now);
  if (opts.noProof === true || keys !== KEYS) return { actions: firstActions, bytes: firstBytes };
  const proofKey = answerOf(firstActions).proofKey;
  const second = facts(now);
  const shared = opts.sharedKey ?? dh(client.priv, proofKey) ?? Buffer.alloc(32);
  const bytes = encodeWgSync({ kind: 'wg-sync', ...second, query, proof: wgProof(shared, second) }, keys.clientToServer);
  return { actions: core.datagram('main', from, bytes, now), bytes };
}

function answerOf(actions: ServerAction[]): WgSyncSuccess {
  const [reply] = sends(actions);
  assert.ok(reply, 'no answer');
  const d = decodeWgSync(reply.data);
  assert.ok(d.ok && d.msg.kind === 'wg-sync-ok', 'not a WG-SYNC answer');
  return d.msg;
}

describe('server: WireGuard endpoints', () => {
  it('learns an endpoint only after the handshake is confirmed with the network\'s preshared key', () => {
    const core = server();
    const a = new Client();
    const b = new Client();
    // Before any handshake: unknown.
    let answer = answerOf(sync(core, b, ELSEWHERE, T0, [a.pub]).actions);
    assert.deepEqual([answer.peers[0]?.announced, answer.peers[0]?.endpoint], [false, undefined]);
    // An initiation alone (no confirmation) records nothing.
    const init = a.initiation(T0);
    assert.equal(sends(core.datagram('main', NAT_A, init.packet, T0)).length, 1);
    answer = answerOf(sync(core, b, ELSEWHERE, T0 + 1, [a.pub]).actions);
    assert.equal(answer.peers[0]?.endpoint, undefined);
    // A client with the wrong preshared key cannot confirm.
    const stranger = new Client();
    const { keepalive } = stranger.handshake(core, NAT_A, T0 + 2, WRONG.wireguard.presharedKey);
    assert.equal(keepalive, undefined);
    // The real thing.
    a.handshake(core, NAT_A, T0 + 3);
    answer = answerOf(sync(core, b, ELSEWHERE, T0 + 4, [a.pub, stranger.pub]).actions);
    assert.deepEqual(answer.peers[0]?.endpoint, NAT_A);
    assert.equal(answer.peers[1]?.endpoint, undefined);
    assert.deepEqual(answer.alternate, { address: '203.0.113.1', port: 3479 });
  });

  it('replays of initiations and keepalives, from anywhere, change nothing and draw no reply', () => {
    const core = server();
    const a = new Client();
    const b = new Client();
    const { init, keepalive } = a.handshake(core, NAT_A, T0);
    assert.ok(keepalive);
    const before = core.stats.replaysRejected;
    for (const from of [NAT_A, ELSEWHERE]) {
      assert.deepEqual(sends(core.datagram('main', from, init, T0 + 10)), []);
      assert.deepEqual(sends(core.datagram('main', from, keepalive, T0 + 10)), []);
    }
    assert.equal(core.stats.replaysRejected - before, 4);
    assert.deepEqual(answerOf(sync(core, b, ELSEWHERE, T0 + 20, [a.pub]).actions).peers[0]?.endpoint, NAT_A);
  });

  it('follows the interface when its mapping moves (authenticated keepalive from a new address)', () => {
    const core = server();
    const a = new Client();
    const b = new Client();
    a.handshake(core, NAT_A, T0);
    const moved: Endpoint = { address: '198.51.100.2', port: 61000 };
    const events = core.datagram('main', moved, a.keepalive(), T0 + 1000);
    assert.ok(events.some((e) => e.type === 'event' && e.event.type === 'wg-endpoint'));
    assert.deepEqual(answerOf(sync(core, b, ELSEWHERE, T0 + 2000, [a.pub]).actions).peers[0]?.endpoint, moved);
  });

  it('WG-SYNC: a wrong secret gets a short 401; a proof not made with the interface key announces nothing; a replay draws nothing', () => {
    const core = server();
    const a = new Client();
    const b = new Client();
    const wrongNet = sync(core, a, ELSEWHERE, T0, [], { keys: WRONG });
    const [e401] = sends(wrongNet.actions);
    assert.ok(e401 && e401.data.length <= wrongNet.bytes.length);
    const d = decodeMessage(e401.data);
    assert.ok(d.ok && d.msg.kind === 'error' && d.msg.code === 401);
    // Every holder of the secret knows the server's WireGuard private key (it derives from the secret); a proof made
    // with it against a's public key must not count: proofs are made against the server's own random proof key.
    const forgedWithNetworkKey = dh(KEYS.wireguard.privateKey, a.pub) ?? Buffer.alloc(32);
    assert.equal(answerOf(sync(core, a, ELSEWHERE, T0, [], { sharedKey: forgedWithNetworkKey }).actions).self.announced, false);
    assert.equal(answerOf(sync(core, a, ELSEWHERE, T0, [], { sharedKey: randomBytes(32) }).actions).self.announced, false);
    // Without a proof: lookups are answered, nothing is announced.
    assert.equal(answerOf(sync(core, a, ELSEWHERE, T0, [b.pub], { noProof: true }).actions).self.announced, false);
    assert.equal(answerOf(sync(core, b, ELSEWHERE, T0 + 1, [a.pub]).actions).peers[0]?.announced, false);
    // Announce for real, then replay the exact bytes from elsewhere.
    const real = sync(core, a, NAT_A, T0 + 2, []);
    assert.equal(answerOf(real.actions).self.announced, true);
    assert.deepEqual(sends(core.datagram('main', ELSEWHERE, real.bytes, T0 + 3)), []);
    const lan = answerOf(sync(core, b, ELSEWHERE, T0 + 4, [a.pub]).actions).peers[0];
    assert.deepEqual(lan?.hosts, [{ address: '192.0.2.2', port: 51820 }]);
  });

  it('initiation floods: duplicates and initiations over the budget draw nothing; pending ones never displace confirmed sessions', () => {
    const core = new TestServer({ networks: [KEYS], seed: 1, randomBytes: counterBytes('wgf'), wgLimits: { maxPending: 8, initiationsPerSecond: 10, initiationBurst: 20 } });
    const a = new Client();
    const b = new Client();
    a.handshake(core, NAT_A, T0);
    // The same (pending) initiation again and again: answered once.
    const stray = new Client().initiation(T0 + 1).packet;
    const answered = [0, 1, 2].map(() => sends(core.datagram('main', ELSEWHERE, stray, T0 + 1)).length);
    assert.deepEqual(answered, [1, 0, 0]);
    // Distinct initiations (anyone can make them): at most the budget is answered.
    let replies = 0;
    for (let i = 0; i < 100; i++) replies += sends(core.datagram('main', { address: '203.0.113.9', port: 1000 + i }, new Client().initiation(T0 + 2).packet, T0 + 2)).length;
    assert.ok(replies <= 20, `${replies} initiations answered beyond the budget`);
    assert.ok(core.wg.sessionCount <= 1 + 8);
    // a's confirmed session survived the flood: its keepalive from a new address still moves its endpoint.
    const moved: Endpoint = { address: '198.51.100.2', port: 62000 };
    core.datagram('main', moved, a.keepalive(), T0 + 3);
    assert.deepEqual(answerOf(sync(core, b, ELSEWHERE, T0 + 4, [a.pub]).actions).peers[0]?.endpoint, moved);
  });

  it('bounds: records are capped (oldest evicted) and expire; pending handshakes expire', () => {
    const core = server(3);
    const clients = Array.from({ length: 5 }, () => new Client());
    clients.forEach((c, i) => c.handshake(core, { address: '198.51.100.2', port: 50000 + i }, T0 + i));
    assert.equal(core.wg.peerCount, 3);
    const probe = new Client();
    const answer = answerOf(sync(core, probe, ELSEWHERE, T0 + 10, clients.map((c) => c.pub).slice(0, 5)).actions);
    assert.deepEqual(answer.peers.map((p) => p.endpoint !== undefined), [false, false, false, true, true]);
    // Unconfirmed initiations leave only a pending session, gone after 10 s.
    for (let i = 0; i < 10; i++) core.datagram('main', ELSEWHERE, new Client().initiation(T0 + 20).packet, T0 + 20);
    const pending = core.wg.sessionCount;
    core.timer(T0 + 31_000);
    assert.ok(core.wg.sessionCount <= pending - 10);
    core.timer(T0 + 400_000);
    assert.equal(core.wg.peerCount, 0);
  });

  it('junk shaped like WireGuard draws no reply and creates no state', () => {
    const core = server();
    let out = 0;
    for (let i = 0; i < 2000; i++) {
      const type = 1 + (i % 4);
      const len = type === 1 ? 148 : type === 2 ? 92 : type === 3 ? 64 : 32 + 16 * (i % 5);
      const b = randomBytes(len);
      b[0] = type; b[1] = 0; b[2] = 0; b[3] = 0;
      out += sends(core.datagram('main', { address: '203.0.113.77', port: 1000 + (i % 50) }, b, T0 + i)).length;
    }
    assert.equal(out, 0);
    assert.equal(core.wg.peerCount, 0);
    assert.equal(core.wg.sessionCount, 0);
  });
});
