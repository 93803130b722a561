/**
 * The built-in relay's sans-IO core (src/server/relay/core.ts) with a fake clock and a recording sink: long-term
 * authentication, allocations bound to one introduced pair, permissions checked against the partner's registration,
 * relay to relay, the quotas, rates, idle timeout, lifetime and Refresh. The abuse cases of issue 10 are here at the
 * protocol level; test/node/relay-loopback.test.ts repeats them through real sockets.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import {
  builtinCredentials,
  decodeChannelData,
  decodeTurn,
  encodeChannelData,
  encodeTurn,
  longTermKey,
  TurnMethod,
  verifyTurnIntegrity,
  type TurnFields,
  type TurnMessage,
} from '../../src/codec/turn.js';
import { deriveNetworkKeys, type NetworkKeys } from '../../src/crypto/keys.js';
import { RelayCore, type RelayEvent, type RelaySink } from '../../src/server/relay/core.js';
import type { RelayLimits } from '../../src/server/relay/config.js';
import type { Registration } from '../../src/server/store.js';

/** A first (unauthenticated) Allocate is padded, as clients do: the server never answers it with more bytes than it carried. */
const PAD = 'burrow'.padEnd(88, ' ');
const PADDED: TurnFields = { requestedTransport: 17, software: PAD };

const T0 = 1_800_000_000_000;
const KEYS = deriveNetworkKeys(Buffer.from('relay core test secret'));
const OTHER = deriveNetworkKeys(Buffer.from('another network entirely'));
const SERVER_IP = '203.0.113.1';

interface Sent { to: Endpoint; data: Buffer }

class Harness implements RelaySink {
  readonly core: RelayCore;
  now = T0;
  readonly toClients: Sent[] = [];
  readonly toPeers: { alloc: number; to: Endpoint; data: Buffer }[] = [];
  readonly binds: { alloc: number; client: Endpoint }[] = [];
  readonly released: number[] = [];
  readonly lookups: { ticket: number; network: string; name: string }[] = [];
  readonly events: RelayEvent[] = [];
  /** Registrations the fake store answers with, by name. */
  readonly registrations = new Map<string, Registration>();
  /** Answer lookups at once (else the test answers them). */
  autoLookup = true;
  private nextPort = 50000;

  constructor(limits: Partial<RelayLimits> = {}, enabled = true) {
    this.core = new RelayCore({ enabled, limits, nonceKey: new Uint8Array(32).fill(7), seed: 1 }, this);
    this.core.setNetworks([KEYS]);
  }
  toClient(to: Endpoint, data: Uint8Array): void { this.toClients.push({ to, data: Buffer.from(data) }); }
  toPeer(alloc: number, to: Endpoint, data: Uint8Array): void { this.toPeers.push({ alloc, to, data: Buffer.from(data) }); }
  bind(alloc: number, client: Endpoint): void {
    this.binds.push({ alloc, client });
    // The driver answers later; here at once, with the next port.
    queueMicrotask(() => undefined);
    this.core.bound(alloc, { address: SERVER_IP, port: this.nextPort++ }, this.now);
  }
  release(alloc: number): void { this.released.push(alloc); }
  lookup(ticket: number, network: string, name: string): void {
    this.lookups.push({ ticket, network, name });
    if (this.autoLookup) this.core.lookupDone(ticket, this.registrations.get(`${network}|${name}`), this.now);
  }
  event(e: RelayEvent): void { this.events.push(e); }

  /** Registers `name` (targeting `target`) as seen from `from`. */
  register(name: string, target: string, from: Endpoint, network: NetworkKeys = KEYS): void {
    this.registrations.set(`${network.networkIdHex}|${name}`, {
      network: network.networkIdHex, name, target, nonce: '00', mapped: from, candidates: [], mapping: 'unknown',
      expiresAt: this.now + 60_000, owner: { server: 's', channel: { kind: 'udp' } }, version: '00',
    });
  }

  /** The last answer to `client`, decoded. */
  last(client: Endpoint): { msg: TurnMessage; bytes: Buffer } {
    const sent = [...this.toClients].reverse().find((s) => s.to.address === client.address && s.to.port === client.port);
    assert.ok(sent, 'no answer');
    const d = decodeTurn(sent.data);
    assert.ok(d.ok, d.ok ? '' : d.reason);
    return { msg: d.msg, bytes: sent.data };
  }
}

/** A TURN client of the harness: does the 401 dance, then signs every request. */
class Client {
  nonce = '';
  key: Uint8Array;
  username: string;
  relayed: Endpoint | undefined;

  constructor(
    readonly h: Harness,
    readonly from: Endpoint,
    readonly name: string,
    readonly peer: string,
    opts: { password?: string; expiry?: number; keys?: NetworkKeys } = {},
  ) {
    const keys = opts.keys ?? KEYS;
    const c = builtinCredentials(keys.relay, { expiry: opts.expiry ?? Math.floor(h.now / 1000) + 600, networkIdHex: keys.networkIdHex, name, peer });
    this.username = c.username;
    this.key = opts.password !== undefined ? longTermKey(c.username, 'burrow', opts.password) : c.key;
  }

  request(method: number, fields: TurnFields, txid: Uint8Array = randomBytes(12)): { msg: TurnMessage; bytes: Buffer } {
    const bytes = encodeTurn(method, 'request', txid, { ...fields, username: this.username, realm: 'burrow', nonce: this.nonce }, { key: this.key, fingerprint: true });
    this.h.core.fromClient(this.from, bytes, this.h.now);
    return this.h.last(this.from);
  }

  /** Allocate: the unauthenticated first try (401, learns the nonce), then the signed one. */
  allocate(fields: TurnFields = { requestedTransport: 17 }): TurnMessage {
    this.h.core.fromClient(this.from, encodeTurn(TurnMethod.ALLOCATE, 'request', randomBytes(12), { ...fields, software: PAD }), this.h.now);
    const challenge = this.h.last(this.from).msg;
    assert.equal(challenge.error?.code, 401);
    assert.equal(challenge.realm, 'burrow');
    this.nonce = challenge.nonce ?? '';
    const { msg } = this.request(TurnMethod.ALLOCATE, fields);
    if (msg.cls === 'success') this.relayed = msg.relayed;
    return msg;
  }

  permit(...peers: Endpoint[]): TurnMessage {
    return this.request(TurnMethod.CREATE_PERMISSION, { peers }).msg;
  }

  send(peer: Endpoint, data: Buffer): void {
    this.h.core.fromClient(this.from, encodeTurn(TurnMethod.SEND, 'indication', randomBytes(12), { peers: [peer], data }), this.h.now);
  }
}

const ALICE: Endpoint = { address: '198.51.100.10', port: 40000 };
const BOB: Endpoint = { address: '198.51.100.20', port: 41000 };
const MALLORY: Endpoint = { address: '198.51.100.66', port: 666 };

describe('relay core: authentication', () => {
  it('answers an unauthenticated Allocate with 401, REALM and NONCE, and allocates with derived credentials', () => {
    const h = new Harness();
    const alice = new Client(h, ALICE, 'alice', 'bob');
    const ok = alice.allocate({ requestedTransport: 17, lifetime: 1200 });
    assert.equal(ok.cls, 'success');
    assert.deepEqual(ok.relayed, { address: SERVER_IP, port: 50000 });
    assert.deepEqual(ok.mapped, ALICE);
    assert.equal(ok.lifetime, 1200);
    const { bytes, msg } = h.last(ALICE);
    assert.equal(verifyTurnIntegrity(bytes, msg, alice.key), 'valid', 'the success is signed with the same key');
    assert.equal(h.core.sessions, 1);
    assert.equal(h.core.stats.allocationsTotal, 1);
    assert.equal(h.core.stats.refused.unauthenticated, 1);
  });

  it('an unauthenticated Allocate shorter than its 401 gets no answer (no amplification), and is counted', () => {
    const h = new Harness();
    const bare = encodeTurn(TurnMethod.ALLOCATE, 'request', randomBytes(12), { requestedTransport: 17 }, { fingerprint: true });
    h.core.fromClient(MALLORY, bare, h.now);
    assert.equal(h.toClients.length, 0);
    assert.equal(h.core.stats.unauthDropped, 1);
    h.core.fromClient(MALLORY, encodeTurn(TurnMethod.ALLOCATE, 'request', randomBytes(12), PADDED, { fingerprint: true }), h.now);
    assert.equal(h.toClients.length, 1);
    assert.ok(h.core.stats.unauthBytesOut <= h.core.stats.unauthBytesIn, 'never more out than in');
  });

  it('the 401 challenge is answered to a bare Allocate at most a few times per second per source', () => {
    const h = new Harness({ controlRate: 5, controlBurst: 10 });
    for (let i = 0; i < 100; i++) h.core.fromClient(MALLORY, encodeTurn(TurnMethod.ALLOCATE, 'request', randomBytes(12), PADDED), h.now);
    assert.equal(h.toClients.length, 10);
    assert.equal(h.core.stats.requestsRateLimited, 90);
  });

  it('refuses a wrong password, another network, expired and too long-lived credentials (no allocation without the secret)', () => {
    const h = new Harness();
    const cases: [Client, string][] = [
      [new Client(h, { ...MALLORY, port: 1 }, 'alice', 'bob', { password: 'guess' }), 'bad-credentials'],
      [new Client(h, { ...MALLORY, port: 2 }, 'alice', 'bob', { keys: OTHER }), 'bad-credentials'],
      [new Client(h, { ...MALLORY, port: 3 }, 'alice', 'bob', { expiry: Math.floor(T0 / 1000) - 1 }), 'expired-credentials'],
      [new Client(h, { ...MALLORY, port: 4 }, 'alice', 'bob', { expiry: Math.floor(T0 / 1000) + 10 * 86_400 }), 'expired-credentials'],
    ];
    for (const [c, reason] of cases) {
      const before = h.core.stats.refused[reason as 'bad-credentials'];
      const msg = c.allocate();
      assert.equal(msg.error?.code, 401, reason);
      assert.equal(h.core.stats.refused[reason as 'bad-credentials'], before + 1, reason);
    }
    assert.equal(h.core.sessions, 0);
    assert.equal(h.binds.length, 0);
  });

  it('a stale nonce gets 438 with a fresh one, and the retry succeeds', () => {
    const h = new Harness({ nonceSeconds: 60 });
    const alice = new Client(h, ALICE, 'alice', 'bob');
    alice.allocate();
    h.now += 61_000;
    const stale = alice.request(TurnMethod.REFRESH, { lifetime: 600 }).msg;
    assert.equal(stale.error?.code, 438);
    assert.ok(stale.nonce && stale.nonce !== alice.nonce);
    alice.nonce = stale.nonce;
    assert.equal(alice.request(TurnMethod.REFRESH, { lifetime: 600 }).msg.cls, 'success');
  });

  it('a nonce works only from the address it was given to', () => {
    const h = new Harness();
    const alice = new Client(h, ALICE, 'alice', 'bob');
    alice.allocate();
    const thief = new Client(h, { ...ALICE, address: '198.51.100.11' }, 'alice', 'bob');
    thief.nonce = alice.nonce;
    assert.equal(thief.request(TurnMethod.ALLOCATE, { requestedTransport: 17 }).msg.error?.code, 438);
  });

  it('a server with the relay off answers 403 and allocates nothing', () => {
    const h = new Harness({}, false);
    h.core.fromClient(ALICE, encodeTurn(TurnMethod.ALLOCATE, 'request', randomBytes(12), PADDED), h.now);
    const msg = h.last(ALICE).msg;
    assert.equal(msg.error?.code, 403);
    assert.ok(msg.error);
    assert.match(msg.error.reason, /disabled/);
    assert.equal(h.core.stats.refused.disabled, 1);
  });

  it('answers a retransmitted Allocate again, and 437 to a new one on the same address', () => {
    const h = new Harness();
    const alice = new Client(h, ALICE, 'alice', 'bob');
    alice.h.core.fromClient(ALICE, encodeTurn(TurnMethod.ALLOCATE, 'request', randomBytes(12), PADDED), h.now);
    alice.nonce = h.last(ALICE).msg.nonce ?? '';
    const txid = randomBytes(12);
    const first = alice.request(TurnMethod.ALLOCATE, { requestedTransport: 17 }, txid);
    const again = alice.request(TurnMethod.ALLOCATE, { requestedTransport: 17 }, txid);
    assert.deepEqual(again.bytes, first.bytes);
    assert.equal(alice.request(TurnMethod.ALLOCATE, { requestedTransport: 17 }).msg.error?.code, 437);
    assert.equal(h.binds.length, 1);
  });

  it('refuses TCP relaying (442) and a request without REQUESTED-TRANSPORT (400)', () => {
    const h = new Harness();
    assert.equal(new Client(h, ALICE, 'alice', 'bob').allocate({ requestedTransport: 6 }).error?.code, 442);
    assert.equal(new Client(h, BOB, 'bob', 'alice').allocate({ lifetime: 600 }).error?.code, 400);
  });
});

describe('relay core: never an open relay', () => {
  it('permits only the partner’s registered address, and only when the partner targets this peer', () => {
    const h = new Harness();
    const alice = new Client(h, ALICE, 'alice', 'bob');
    alice.allocate();
    // bob is not registered yet: 403.
    assert.equal(alice.permit(BOB).error?.code, 403);
    // bob registered, but for carol: 403.
    h.register('bob', 'carol', BOB);
    assert.equal(alice.permit(BOB).error?.code, 403);
    h.register('bob', 'alice', BOB);
    assert.equal(alice.permit(BOB).cls, 'success');
    // Anybody else: 403, even mixed into one request with the partner.
    assert.equal(alice.permit(MALLORY).error?.code, 403);
    assert.equal(alice.permit(BOB, MALLORY).error?.code, 403);
    assert.equal(alice.request(TurnMethod.CHANNEL_BIND, { channel: 0x4001, peers: [MALLORY] }).msg.error?.code, 403);
    assert.equal(h.core.stats.permissionsForbidden, 5);
    assert.ok(h.events.some((e) => e.type === 'relay-forbidden'));
  });

  it('forwards Send indications to the partner only, and the partner’s datagrams back as Data indications', () => {
    const h = new Harness();
    const alice = new Client(h, ALICE, 'alice', 'bob');
    const relayed = alice.allocate().relayed;
    assert.ok(relayed);
    h.register('bob', 'alice', BOB);
    alice.permit(BOB);
    alice.send(BOB, Buffer.from('to bob'));
    alice.send(MALLORY, Buffer.from('to mallory'));
    alice.send({ address: SERVER_IP, port: 50001 }, Buffer.from('to another allocation'));
    assert.deepEqual(h.toPeers.map((p) => [p.to, p.data.toString()]), [[BOB, 'to bob']]);
    assert.equal(h.core.stats.droppedNoPermission, 2);
    // Inbound: from bob (any port of his address) in, from mallory not.
    h.core.fromPeer(1, { ...BOB, port: 9999 }, Buffer.from('from bob'), h.now);
    h.core.fromPeer(1, MALLORY, Buffer.from('from mallory'), h.now);
    const data = h.last(ALICE).msg;
    assert.equal(data.method, TurnMethod.DATA);
    assert.deepEqual(data.peers[0], { ...BOB, port: 9999 });
    assert.equal(Buffer.from(data.data ?? []).toString(), 'from bob');
    assert.equal(h.core.stats.droppedNoPermission, 3);
  });

  it('binds a channel to the partner and relays ChannelData both ways', () => {
    const h = new Harness();
    const alice = new Client(h, ALICE, 'alice', 'bob');
    alice.allocate();
    h.register('bob', 'alice', BOB);
    assert.equal(alice.request(TurnMethod.CHANNEL_BIND, { channel: 0x4001, peers: [BOB] }).msg.cls, 'success');
    h.core.fromClient(ALICE, encodeChannelData(0x4001, Buffer.from('hello')), h.now);
    assert.equal(h.toPeers.at(-1)?.data.toString(), 'hello');
    h.core.fromPeer(1, BOB, Buffer.from('hi back'), h.now);
    const back = h.toClients.at(-1);
    assert.ok(back);
    const d = decodeChannelData(back.data);
    assert.ok(d.ok);
    assert.equal(d.channel, 0x4001);
    assert.equal(Buffer.from(d.data).toString(), 'hi back');
    // An unbound channel carries nothing; rebinding the channel to another peer is refused.
    h.core.fromClient(ALICE, encodeChannelData(0x4002, Buffer.from('x')), h.now);
    assert.equal(h.toPeers.length, 1);
    assert.equal(alice.request(TurnMethod.CHANNEL_BIND, { channel: 0x4001, peers: [{ ...BOB, port: 1 }] }).msg.error?.code, 400);
  });

  it('relays between the two allocations of a pair inside the server, and never into a third', () => {
    const h = new Harness();
    const alice = new Client(h, ALICE, 'alice', 'bob');
    const bob = new Client(h, BOB, 'bob', 'alice');
    const carol = new Client(h, { address: '198.51.100.30', port: 3000 }, 'carol', 'alice');
    const ra = alice.allocate().relayed;
    const rb = bob.allocate().relayed;
    const rc = carol.allocate().relayed;
    assert.ok(ra && rb && rc);
    // Relay to relay needs no registration: the partner's allocation names this peer.
    assert.equal(alice.permit(rb).cls, 'success');
    assert.equal(bob.permit(ra).cls, 'success');
    assert.equal(h.lookups.length, 0);
    // carol names alice as partner, but alice names bob: both directions forbidden.
    assert.equal(alice.permit(rc).error?.code, 403);
    assert.equal(carol.permit(ra).error?.code, 403);
    alice.send(rb, Buffer.from('relay to relay'));
    const got = h.last(BOB).msg;
    assert.equal(got.method, TurnMethod.DATA);
    assert.deepEqual(got.peers[0], ra);
    assert.equal(Buffer.from(got.data ?? []).toString(), 'relay to relay');
    assert.equal(h.toPeers.length, 0, 'short-circuited: no socket send');
    // An IP permission for the server's own address (a partner registered from it) still never reaches carol.
    h.register('bob', 'alice', { address: SERVER_IP, port: 1 });
    const alice2 = new Client(h, { ...ALICE, port: 40001 }, 'alice', 'bob');
    alice2.allocate();
    assert.equal(alice2.permit({ address: SERVER_IP, port: 1 }).cls, 'success');
    alice2.send(rc, Buffer.from('to carol'));
    assert.ok(!h.toClients.some((s) => s.to.address === '198.51.100.30' && s.data.includes(Buffer.from('to carol'))));
  });
});

describe('relay core: bounds', () => {
  it('limits allocations per peer name, per source address and in total', () => {
    const h = new Harness({ sessionsPerPeer: 2, sessionsPerSource: 3, sessions: 4 });
    const a = (port: number, ip = '198.51.100.10', name = 'alice'): TurnMessage => new Client(h, { address: ip, port }, name, 'bob').allocate();
    assert.equal(a(1).cls, 'success');
    assert.equal(a(2).cls, 'success');
    assert.equal(a(3).error?.code, 486); // third for alice
    assert.equal(a(4, '198.51.100.10', 'dave').cls, 'success');
    assert.equal(a(5, '198.51.100.10', 'erin').error?.code, 486); // fourth from one address
    assert.equal(a(6, '198.51.100.11', 'erin').cls, 'success');
    assert.equal(a(7, '198.51.100.12', 'frank').error?.code, 508); // fifth in total
    assert.equal(h.core.stats.refused['quota-peer'], 1);
    assert.equal(h.core.stats.refused['quota-source'], 1);
    assert.equal(h.core.stats.refused.capacity, 1);
  });

  it('enforces bytes per second per allocation: datagrams beyond the rate are dropped', () => {
    const rate = 100_000;
    const h = new Harness({ rateBytesPerSecond: rate });
    const alice = new Client(h, ALICE, 'alice', 'bob');
    alice.allocate();
    h.register('bob', 'alice', BOB);
    alice.request(TurnMethod.CHANNEL_BIND, { channel: 0x4001, peers: [BOB] });
    const payload = Buffer.alloc(1000);
    // Ten seconds at 1000 datagrams (1 MB) per second: ten times the rate.
    for (let s = 0; s < 10; s++) {
      for (let i = 0; i < 1000; i++) {
        h.now += 1;
        h.core.fromClient(ALICE, encodeChannelData(0x4001, payload), h.now);
      }
    }
    const relayed = h.toPeers.length * 1000;
    // The bucket starts full (its burst, 256 KiB), then refills at the rate.
    assert.ok(relayed <= 10 * rate + 256 * 1024 + 1000, `relayed ${relayed}`);
    assert.ok(relayed >= 10 * rate, `relayed ${relayed}`);
    assert.ok(h.core.stats.droppedRate > 8000);
  });

  it('enforces the total rate across allocations', () => {
    const h = new Harness({ rateBytesPerSecond: 10_000_000, totalRateBytesPerSecond: 2_000_000 });
    const pairs = [0, 1, 2, 3].map((i) => {
      const c = new Client(h, { address: `198.51.100.${10 + i}`, port: 5000 }, `p${i}`, `q${i}`);
      c.allocate();
      h.register(`q${i}`, `p${i}`, { address: `198.51.100.${100 + i}`, port: 6000 });
      c.request(TurnMethod.CHANNEL_BIND, { channel: 0x4001, peers: [{ address: `198.51.100.${100 + i}`, port: 6000 }] });
      return c;
    });
    for (let t = 0; t < 2000; t++) {
      h.now += 1;
      for (const c of pairs) h.core.fromClient(c.from, encodeChannelData(0x4001, Buffer.alloc(1000)), h.now);
    }
    const relayed = h.toPeers.length * 1000;
    assert.ok(relayed <= 2 * 2_000_000 + (1 << 20) + 1000, `relayed ${relayed}`);
    assert.ok(h.core.stats.droppedRate > 0);
  });

  it('ends an idle allocation, an expired one, and one refreshed with LIFETIME 0; Refresh extends the lifetime', () => {
    const h = new Harness({ idleSeconds: 30, defaultLifetimeSeconds: 600, nonceSeconds: 3600 });
    const idle = new Client(h, ALICE, 'alice', 'bob');
    idle.allocate();
    const busy = new Client(h, BOB, 'bob', 'alice');
    busy.allocate();
    const gone = new Client(h, { address: '198.51.100.30', port: 1 }, 'carol', 'dave');
    gone.allocate();
    assert.equal(gone.request(TurnMethod.REFRESH, { lifetime: 0 }).msg.cls, 'success');
    assert.equal(h.core.sessions, 2);
    h.register('alice', 'bob', ALICE);
    busy.permit(ALICE);
    for (let s = 0; s < 40; s++) {
      h.now += 1000;
      busy.send(ALICE, Buffer.from('keepalive'));
      h.core.timer(h.now);
    }
    assert.equal(h.core.sessions, 1, 'the idle one ended');
    assert.deepEqual(h.events.flatMap((e) => (e.type === 'relay-released' ? [e.reason] : [])), ['refresh-zero', 'idle']);
    // Refresh to 900 s keeps it past 600 s of activity; then it expires at its lifetime.
    assert.equal(busy.request(TurnMethod.REFRESH, { lifetime: 900 }).msg.lifetime, 900);
    const refreshedAt = h.now;
    while (h.now < refreshedAt + 901_000) {
      h.now += 1000;
      busy.send(ALICE, Buffer.from('keepalive'));
      if ((h.now - refreshedAt) % 200_000 === 0) busy.permit(ALICE); // permissions last 300 s
      h.core.timer(h.now);
      if (h.now - refreshedAt < 899_000) assert.equal(h.core.sessions, 1, `alive at ${(h.now - refreshedAt) / 1000} s`);
    }
    assert.equal(h.core.sessions, 0);
    assert.equal(h.released.length, 3);
  });

  it('permissions expire after 300 s unless refreshed', () => {
    const h = new Harness({ idleSeconds: 3600 });
    const alice = new Client(h, ALICE, 'alice', 'bob');
    alice.allocate();
    h.register('bob', 'alice', BOB);
    alice.permit(BOB);
    h.now += 301_000;
    h.core.timer(h.now);
    alice.send(BOB, Buffer.from('late'));
    assert.equal(h.toPeers.length, 0);
  });

  it('holds CreatePermission until the store answers, and forgets it if the allocation goes meanwhile', () => {
    const h = new Harness();
    h.autoLookup = false;
    const alice = new Client(h, ALICE, 'alice', 'bob');
    alice.allocate();
    h.register('bob', 'alice', BOB);
    const before = h.toClients.length;
    alice.h.core.fromClient(ALICE, encodeTurn(TurnMethod.CREATE_PERMISSION, 'request', randomBytes(12), { peers: [BOB], username: alice.username, realm: 'burrow', nonce: alice.nonce }, { key: alice.key }), h.now);
    assert.equal(h.toClients.length, before, 'no answer before the store answers');
    const lookup = h.lookups.at(-1);
    assert.ok(lookup);
    h.core.lookupDone(lookup.ticket, h.registrations.get(`${KEYS.networkIdHex}|bob`), h.now);
    assert.equal(h.last(ALICE).msg.cls, 'success');
  });
});
