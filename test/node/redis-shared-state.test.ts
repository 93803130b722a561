/**
 * `RedisSharedState` against a real redis-server (nothing on disk): the same contract as the in-memory shared state.
 * Register-and-find-partner is atomic across two clients (two "servers") racing, in many rounds; refresh of a
 * displaced session writes nothing; withdraw removes only its own session and owner; registrations expire with their
 * lifetime; the replay guard says fresh, replay, and stale for requests older than an emptied store's epoch; the router
 * reaches the owner's listener and answers false when nobody listens; WireGuard records; the proof key is the same for
 * every server of one Redis, different for another salt, and no secret is stored.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import dgram from 'node:dgram';
import { createClient } from 'redis';
import { decodeWgSync, encodeWgSync, wgProof } from '../../src/codec/wg-messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { consumeResponse, createInitiation, dh, publicKeyOf, sealTransport, tai64n } from '../../src/crypto/wireguard.js';
import { startServer } from '../../src/node/server.js';
import { RedisSharedState } from '../../src/node/redis/shared-state.js';
import type { Registration } from '../../src/server/store.js';
import type { Push } from '../../src/server/types.js';
import { startRedis, type RedisProcess } from '../support/redis.js';

const SECRET = Buffer.from('redis shared state secret');
const NET = 'aabbccddeeff0011';

function reg(name: string, target: string, server: string, now: number, opts: { nonce?: string; lifetimeMs?: number } = {}): Registration {
  return {
    network: NET,
    name,
    target,
    nonce: opts.nonce ?? randomBytes(16).toString('hex'),
    mapped: { address: '198.51.100.7', port: 40000 },
    candidates: [{ kind: 'host', priority: 2130706431, endpoint: { address: '192.0.2.7', port: 40000 } }],
    mapping: 'endpoint-independent',
    mode: 'punch',
    expiresAt: now + (opts.lifetimeMs ?? 6000),
    owner: { server, channel: { kind: 'udp' } },
    version: randomBytes(12).toString('hex'),
  };
}

describe('RedisSharedState over a real redis-server', () => {
  let redis: RedisProcess;
  let s1: RedisSharedState;
  let s2: RedisSharedState;

  before(async () => {
    redis = await startRedis();
    const options = { url: redis.url, prefix: 'unit', secrets: [SECRET], timestampWindowMs: 30_000 };
    s1 = await RedisSharedState.connect(options);
    s2 = await RedisSharedState.connect(options);
  });
  after(async () => {
    s1.close();
    s2.close();
    await redis.kill();
  });

  it('two servers registering partners at once never both miss each other (200 races)', async () => {
    for (let i = 0; i < 200; i++) {
      const now = Date.now();
      const [ra, rb] = await Promise.all([s1.store.register(reg(`a${i}`, `b${i}`, 's1', now), now), s2.store.register(reg(`b${i}`, `a${i}`, 's2', now), now)]);
      const found = [ra.partner?.name, rb.partner?.name].filter((n) => n !== undefined);
      assert.ok(found.length >= 1, `race ${i}: neither saw the other`);
      if (ra.partner) assert.equal(ra.partner.owner.server, 's2');
    }
  });

  it('a refresh of a displaced session writes nothing (superseded); a new session displaces', async () => {
    const now = Date.now();
    const old = reg('dup', 'x', 's1', now, { nonce: 'aa'.repeat(16) });
    await s1.store.register(old, now);
    const newer = reg('dup', 'x', 's2', now, { nonce: 'bb'.repeat(16) });
    const r = await s2.store.register(newer, now);
    assert.equal(r.previous?.nonce, old.nonce);
    const refresh = await s1.store.register({ ...old, version: 'v2' }, now, true);
    assert.equal(refresh.superseded, true);
    assert.equal((await s1.store.lookup(NET, 'dup'))?.nonce, newer.nonce);
  });

  it('withdraw removes only its own session and owner', async () => {
    const now = Date.now();
    const r = reg('w', 'x', 's1', now);
    await s1.store.register(r, now);
    assert.equal(await s2.store.withdraw(NET, 'w', 'ff'.repeat(16), undefined), undefined, 'another nonce');
    assert.equal(await s2.store.withdraw(NET, 'w', r.nonce, { server: 's2', channel: { kind: 'udp' } }), undefined, 'another owner');
    assert.equal((await s2.store.withdraw(NET, 'w', r.nonce, { server: 's1', channel: { kind: 'udp' } }))?.name, 'w');
    assert.equal(await s1.store.lookup(NET, 'w'), undefined);
  });

  it('a registration expires with its own lifetime', async () => {
    const now = Date.now();
    await s1.store.register(reg('short', 'x', 's1', now, { lifetimeMs: 300 }), now);
    assert.ok(await s2.store.lookup(NET, 'short'));
    await sleep(500);
    assert.equal(await s2.store.lookup(NET, 'short'), undefined);
  });

  it('replay guard: fresh, then replay on any server; stale before the epoch of an emptied store', async () => {
    const fp = randomBytes(8);
    const now = Date.now();
    assert.equal(await s1.replays.checkAndInsert(fp, now, now), 'fresh');
    assert.equal(await s2.replays.checkAndInsert(fp, now, now), 'replay');
    const client = createClient({ url: redis.url });
    client.on('error', () => undefined);
    await client.connect();
    await client.flushAll(); // the store emptied (as a restart without data would)
    client.destroy();
    const later = Date.now() + 5;
    assert.equal(await s2.replays.checkAndInsert(fp, later, now), 'stale', 'a request older than the emptied store');
    assert.equal(await s1.replays.checkAndInsert(randomBytes(8), later + 1, later + 1), 'fresh', 'a fresh request after it');
  });

  it('the router reaches the owner; nobody listening is false', async () => {
    const got: Push[] = [];
    const stop = await s1.router.listen('s1', (p) => { got.push(p); });
    const push: Push = { network: NET, recipient: 'a', version: 'v', owner: { server: 's1', channel: { kind: 'udp' } }, to: { address: '198.51.100.7', port: 4 }, data: new Uint8Array([1, 2, 3]) };
    assert.equal(await s2.router.deliver(push), true);
    for (let i = 0; i < 50 && got.length === 0; i++) await sleep(10);
    assert.deepEqual(Array.from(got[0]?.data ?? []), [1, 2, 3]);
    assert.equal(await s2.router.deliver({ ...push, owner: { server: 'gone', channel: { kind: 'udp' } } }), false);
    await assert.rejects(async () => s2.router.listen('s1', () => undefined), /already runs under id "s1"/);
    stop();
  });

  it('WireGuard records are shared and expire', async () => {
    const key = randomBytes(32);
    const now = Date.now();
    await s1.wg.announce(NET, key, { listenPort: 51820, hosts: [{ address: '192.0.2.9', port: 51820 }], mapping: 'endpoint-independent' }, now);
    await s1.wg.setEndpoint(NET, key, { address: '203.0.113.9', port: 40404 }, now);
    const [info] = await s2.wg.lookup(NET, [key], now + 1000);
    assert.equal(info?.announced, true);
    assert.deepEqual(info.endpoint, { address: '203.0.113.9', port: 40404 });
    assert.equal(info.listenPort, 51820);
    const [unknown] = await s2.wg.lookup(NET, [randomBytes(32)], now);
    assert.equal(unknown?.announced, false);
  });

  it('the proof key is the same on every server of one Redis, another with another salt; no secret stored', async () => {
    const k1 = await s1.proofKey();
    const k2 = await s2.proofKey();
    assert.deepEqual(Buffer.from(k1.publicKey), Buffer.from(k2.publicKey));
    const other = await RedisSharedState.connect({ url: redis.url, prefix: 'other', secrets: [SECRET], timestampWindowMs: 30_000 });
    try {
      assert.notDeepEqual(Buffer.from((await other.proofKey()).publicKey), Buffer.from(k1.publicKey));
    } finally {
      other.close();
    }
    const client = createClient({ url: redis.url });
    client.on('error', () => undefined);
    await client.connect();
    try {
      for (const k of await client.keys('*')) {
        const type = await client.type(k);
        const v = type === 'string' ? (await client.get(k)) ?? '' : JSON.stringify(await client.hGetAll(k));
        assert.ok(!v.includes(SECRET.toString()) && !v.includes(SECRET.toString('hex')), `secret in ${k}`);
      }
    } finally {
      client.destroy();
    }
  });

  it('an unreachable URL fails connect at once, naming it', async () => {
    const started = Date.now();
    await assert.rejects(RedisSharedState.connect({ url: 'redis://127.0.0.1:1', secrets: [SECRET], timestampWindowMs: 30_000 }), (err: Error) => {
      assert.match(err.message, /redis:\/\/127\.0\.0\.1:1/);
      return true;
    });
    assert.ok(Date.now() - started < 5000);
  });
});

describe('WireGuard discovery across two servers over one Redis (real sockets)', () => {
  it('a handshake with server 1 and a WG-PROOF made for server 1 both count on server 2', async () => {
    const redis = await startRedis();
    const secret = 'redis wg secret';
    const keys = deriveNetworkKeys(Buffer.from(secret));
    const s1 = await startServer({ listen: '127.0.0.1:0', secrets: [secret], alternatePort: false, tcp: false, redis: { url: redis.url }, serverId: 'wg1' });
    const s2 = await startServer({ listen: '127.0.0.1:0', secrets: [secret], alternatePort: false, tcp: false, redis: { url: redis.url }, serverId: 'wg2' });
    const wgSock = dgram.createSocket('udp4');
    const syncSock = dgram.createSocket('udp4');
    try {
      await new Promise<void>((r) => wgSock.bind(0, '127.0.0.1', r));
      await new Promise<void>((r) => syncSock.bind(0, '127.0.0.1', r));
      const next = (s: dgram.Socket): Promise<Buffer> => new Promise((r) => { s.once('message', (m) => { r(m); }); });
      // Interface X handshakes with server 1: its endpoint is proven there, and recorded in Redis.
      const priv = randomBytes(32);
      const init = createInitiation(priv, keys.wireguard.publicKey, randomBytes(32), 7, tai64n(Date.now()));
      const gotResponse = next(wgSock);
      wgSock.send(init.packet, s1.address.port, '127.0.0.1');
      const session = consumeResponse(init, await gotResponse, keys.wireguard.presharedKey);
      assert.ok(session);
      wgSock.send(sealTransport(session.receiverIndex, 0n, session.sendKey, new Uint8Array(0)), s1.address.port, '127.0.0.1');
      // Interface Y learns the proof key from server 1, then announces itself with that proof to server 2.
      const other = randomBytes(32);
      const sync = async (port: number, proofKey: Uint8Array | undefined) => {
        const facts = { txid: randomBytes(12), networkId: keys.networkId, timestamp: Date.now(), key: publicKeyOf(other), listenPort: 51820, hosts: [], mapping: 'unknown' as const };
        const shared = proofKey ? dh(other, proofKey) : undefined;
        const got = next(syncSock);
        syncSock.send(encodeWgSync({ kind: 'wg-sync', ...facts, query: [publicKeyOf(priv)], proof: shared ? wgProof(shared, facts) : undefined }, keys.clientToServer), port, '127.0.0.1');
        const d = decodeWgSync(await got);
        assert.ok(d.ok && d.msg.kind === 'wg-sync-ok');
        return d.msg;
      };
      const first = await sync(s1.address.port, undefined);
      let answer = await sync(s2.address.port, first.proofKey);
      assert.deepEqual(Buffer.from(answer.proofKey), Buffer.from(first.proofKey), 'one proof key for both servers');
      for (let i = 0; i < 20 && !(answer.self.announced && answer.peers[0]?.endpoint); i++) {
        await sleep(50);
        answer = await sync(s2.address.port, first.proofKey);
      }
      assert.equal(answer.self.announced, true, 'the proof made for server 1 verified on server 2');
      assert.deepEqual(answer.peers[0]?.endpoint, { address: '127.0.0.1', port: wgSock.address().port }, 'server 2 reports the endpoint proven on server 1');
    } finally {
      wgSock.close();
      syncSock.close();
      await s1.close();
      await s2.close();
      await redis.kill();
    }
  });
});
