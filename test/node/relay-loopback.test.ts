/**
 * The built-in relay through real sockets on loopback (startServer): relay to relay and relay to a registered
 * partner, data intact both ways; and the abuse cases of issue 10: no allocation without the secret, an allocation
 * reaches nobody but its partner (a stranger on 127.0.0.2 can neither be reached nor get in), the session and
 * bytes-per-second limits hold, `--no-relay` refuses, and the metrics count it all.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { after, before, describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { encodeMessage } from '../../src/codec/messages.js';
import { builtinCredentials } from '../../src/codec/turn.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { startServer, type RendezvousServer } from '../../src/node/server.js';
import { TestTurnClient } from '../support/turn-client.js';

const SECRET = 'relay loopback secret, long enough';
const keys = deriveNetworkKeys(Buffer.from(SECRET));

function creds(name: string, peer: string): { username: string; password: string } {
  return builtinCredentials(keys.relay, { expiry: Math.floor(Date.now() / 1000) + 3600, networkIdHex: keys.networkIdHex, name, peer });
}

async function udp(address = '127.0.0.1'): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, address, r));
  return s;
}

/** Registers `name` → `target` from `socket`, as a Burrow peer does; resolves on the answer. */
async function register(server: RendezvousServer, socket: dgram.Socket, name: string, target: string): Promise<void> {
  const msg = encodeMessage({ kind: 'register', txid: randomBytes(12), networkId: keys.networkId, name, target, sessionNonce: randomBytes(16), timestamp: Date.now(), candidates: [], mapping: 'unknown' }, { key: keys.clientToServer });
  const answered = new Promise<void>((resolve) => socket.once('message', () => { resolve(); }));
  socket.send(msg, server.address.port, '127.0.0.1');
  await answered;
}

function collect(client: TestTurnClient): Buffer[] {
  const got: Buffer[] = [];
  client.onData = (_peer, data) => { got.push(data); };
  return got;
}

async function until(check: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('built-in relay on loopback', () => {
  let server: RendezvousServer;
  let serverEp: Endpoint;
  const clients: TestTurnClient[] = [];
  const sockets: dgram.Socket[] = [];

  before(async () => {
    server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, tcp: false, relay: { limits: { sessionsPerSource: 64, sessionsPerPeer: 8 } } });
    serverEp = server.address;
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const s of sockets) s.close();
    await server.close();
  });
  const open = async (name: string, peer: string): Promise<TestTurnClient> => {
    const c = await TestTurnClient.open(serverEp, creds(name, peer));
    clients.push(c);
    return c;
  };

  it('relays relay-to-relay between the two peers of a pair, both ways, intact', async () => {
    const alice = await open('alice', 'bob');
    const bob = await open('bob', 'alice');
    assert.equal((await alice.allocate()).cls, 'success');
    assert.equal((await bob.allocate()).cls, 'success');
    assert.ok(alice.relayed && bob.relayed);
    assert.equal(alice.relayed.address, '127.0.0.1');
    assert.equal((await alice.bind(0x4000, bob.relayed)).cls, 'success');
    assert.equal((await bob.bind(0x4000, alice.relayed)).cls, 'success');
    const atBob = collect(bob);
    const atAlice = collect(alice);
    const sent = Array.from({ length: 200 }, (_, i) => randomBytes(100 + i));
    for (const p of sent) alice.sendChannel(0x4000, p);
    for (const p of sent) bob.sendChannel(0x4000, p);
    await until(() => atBob.length === 200 && atAlice.length === 200);
    assert.deepEqual(atBob, sent);
    assert.deepEqual(atAlice, sent);
  });

  it('relays to the partner’s registered address (Send and Data indications)', async () => {
    const peer = await udp();
    sockets.push(peer);
    await register(server, peer, 'dave', 'carol');
    const carol = await open('carol', 'dave');
    await carol.allocate();
    const pa = peer.address();
    assert.equal((await carol.permit({ address: '127.0.0.1', port: pa.port })).cls, 'success');
    const atPeer: Buffer[] = [];
    peer.on('message', (m, rinfo) => {
      atPeer.push(m);
      peer.send(Buffer.concat([Buffer.from('echo:'), m]), rinfo.port, rinfo.address);
    });
    const atCarol = collect(carol);
    carol.sendIndication({ address: '127.0.0.1', port: pa.port }, Buffer.from('hello dave'));
    await until(() => atCarol.length === 1);
    assert.equal(atPeer[0]?.toString(), 'hello dave');
    assert.equal(atCarol[0]?.toString(), 'echo:hello dave');
  });

  it('abuse: no allocation without the secret', async () => {
    const wrong = await TestTurnClient.open(serverEp, { username: creds('eve', 'bob').username, password: 'not derived from the secret' });
    clients.push(wrong);
    const m = await wrong.allocate();
    assert.equal(m.error?.code, 401);
    const otherNet = deriveNetworkKeys(Buffer.from('some other network'));
    const foreign = await TestTurnClient.open(serverEp, builtinCredentials(otherNet.relay, { expiry: Math.floor(Date.now() / 1000) + 60, networkIdHex: otherNet.networkIdHex, name: 'eve', peer: 'bob' }));
    clients.push(foreign);
    assert.equal((await foreign.allocate()).error?.code, 401);
    assert.ok((server.relay?.stats.refused['bad-credentials'] ?? 0) >= 2);
  });

  it('abuse: an allocation reaches nobody but its partner, and nobody else gets in', async () => {
    const partner = await udp();
    const stranger = await udp('127.0.0.2');
    sockets.push(partner, stranger);
    await register(server, partner, 'frank', 'erin');
    const erin = await open('erin', 'frank');
    await erin.allocate();
    assert.ok(erin.relayed);
    // A permission or channel for the stranger, or for another pair's relayed address: 403.
    assert.equal((await erin.permit({ address: '127.0.0.2', port: stranger.address().port })).error?.code, 403);
    assert.equal((await erin.bind(0x4001, { address: '127.0.0.2', port: stranger.address().port })).error?.code, 403);
    const other = await open('gina', 'hank');
    await other.allocate();
    assert.ok(other.relayed);
    assert.equal((await erin.permit(other.relayed)).error?.code, 403);
    // Send indications to them go nowhere.
    const atStranger: Buffer[] = [];
    stranger.on('message', (m) => atStranger.push(m));
    erin.sendIndication({ address: '127.0.0.2', port: stranger.address().port }, Buffer.from('leak'));
    // The partner is permitted; the stranger's datagrams to the relayed address are dropped.
    assert.equal((await erin.permit({ address: '127.0.0.1', port: partner.address().port })).cls, 'success');
    const atErin = collect(erin);
    for (let i = 0; i < 20; i++) stranger.send(Buffer.from('let me in'), erin.relayed.port, erin.relayed.address);
    partner.send(Buffer.from('from frank'), erin.relayed.port, erin.relayed.address);
    await until(() => atErin.length >= 1);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(atErin.map((b) => b.toString()), ['from frank']);
    assert.deepEqual(atStranger, []);
    assert.ok((server.relay?.stats.droppedNoPermission ?? 0) >= 21);
  });
});

describe('built-in relay limits on loopback', () => {
  it('abuse: sessions per peer and per source are enforced (486)', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, tcp: false, relay: { limits: { sessionsPerPeer: 2, sessionsPerSource: 3 } } });
    const clients: TestTurnClient[] = [];
    try {
      const codes: (number | undefined)[] = [];
      for (const [name, peer] of [['a', 'b'], ['a', 'b'], ['a', 'b'], ['c', 'd'], ['e', 'f']] as const) {
        const c = await TestTurnClient.open(server.address, creds(name, peer));
        clients.push(c);
        const m = await c.allocate();
        codes.push(m.cls === 'success' ? 200 : m.error?.code);
      }
      assert.deepEqual(codes, [200, 200, 486, 200, 486]);
      const relay = server.relay;
      assert.ok(relay);
      assert.equal(relay.stats.refused['quota-peer'], 1);
      assert.equal(relay.stats.refused['quota-source'], 1);
      assert.equal(relay.sessions, 3);
    } finally {
      for (const c of clients) c.close();
      await server.close();
    }
  });

  it('abuse: bytes per second per session are enforced', async () => {
    const rate = 200 * 1024;
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, tcp: false, relay: { limits: { rateBytesPerSecond: rate } } });
    const alice = await TestTurnClient.open(server.address, creds('alice', 'bob'));
    const bob = await TestTurnClient.open(server.address, creds('bob', 'alice'));
    try {
      await alice.allocate();
      await bob.allocate();
      assert.ok(alice.relayed && bob.relayed);
      await alice.bind(0x4000, bob.relayed);
      await bob.bind(0x4000, alice.relayed);
      let received = 0;
      bob.onData = (_p, d) => { received += d.length; };
      // 2 s at ~2 MB/s: ten times the rate.
      const payload = Buffer.alloc(1000);
      const start = Date.now();
      while (Date.now() - start < 2000) {
        for (let i = 0; i < 40; i++) alice.sendChannel(0x4000, payload);
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 300));
      const elapsed = (Date.now() - start) / 1000;
      // Each session's bucket counts both directions and starts full with a quarter second's burst (at least 256 KiB).
      const allowed = rate * elapsed + 256 * 1024 + 2000;
      assert.ok(received <= allowed, `received ${received} > ${allowed}`);
      assert.ok(received >= rate, `received only ${received}`);
      assert.ok((server.relay?.stats.droppedRate ?? 0) > 0);
    } finally {
      alice.close();
      bob.close();
      await server.close();
    }
  });

  it('--no-relay (policy none): Allocate gets 403 and introductions say "none"', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, tcp: false, relay: { policy: { kind: 'none' } } });
    const c = await TestTurnClient.open(server.address, creds('a', 'b'));
    try {
      const m = await c.allocate();
      assert.equal(m.error?.code, 403);
      assert.equal(server.relay?.stats.refused.disabled, 1);
    } finally {
      c.close();
      await server.close();
    }
  });

  it('exports relay metrics: sessions, bytes, refusals by reason', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, tcp: false, metrics: { listen: '127.0.0.1:0' } });
    const alice = await TestTurnClient.open(server.address, creds('alice', 'bob'));
    const bob = await TestTurnClient.open(server.address, creds('bob', 'alice'));
    const eve = await TestTurnClient.open(server.address, { username: creds('eve', 'bob').username, password: 'nope' });
    try {
      await alice.allocate();
      await bob.allocate();
      await eve.allocate();
      assert.ok(alice.relayed && bob.relayed);
      await alice.bind(0x4000, bob.relayed);
      await bob.bind(0x4000, alice.relayed);
      let got = 0;
      bob.onData = () => { got++; };
      for (let i = 0; i < 10; i++) alice.sendChannel(0x4000, Buffer.alloc(100));
      await until(() => got === 10);
      const text = await (await fetch(`http://127.0.0.1:${server.metricsAddress?.port ?? 0}/metrics`)).text();
      assert.match(text, /burrow_relay_sessions\{kind="udp"\} 2/);
      assert.match(text, /burrow_relay_sessions_total\{kind="udp"\} 2/);
      assert.match(text, /burrow_relay_bytes_total\{kind="udp"\} 1000/);
      assert.match(text, /burrow_relay_refused_total\{reason="bad-credentials"\} 1/);
      assert.match(text, /burrow_relay_refused_total\{reason="unauthenticated"\} 3/);
    } finally {
      alice.close();
      bob.close();
      eve.close();
      await server.close();
    }
  });
});
