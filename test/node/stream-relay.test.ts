/**
 * The stream relay on loopback: two real TCP clients authenticate for one introduced pair (NAME→PEER and
 * PEER→NAME) with credentials derived from the secret, and the server splices them: bytes intact both ways, a big
 * transfer at full speed, the per-session byte rate enforced, wrong credentials and a third party refused, a partner
 * that never comes timed out, and the relay off with --no-relay. Also the pairing core with a fake clock.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type net from 'node:net';
import { describe, it } from 'node:test';
import { builtinCredentials, decodeTurn, encodeTurn, longTermKey } from '../../src/codec/turn.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { startServer, type RendezvousServer } from '../../src/node/server.js';
import { connectStreamRelay, StreamRelayError } from '../../src/node/stream-relay-client.js';
import { STREAM_RELAY_METHOD, StreamRelayCore, type StreamAction } from '../../src/server/relay/stream.js';
import { SecureStream } from '../../src/node/secure-stream.js';

const SECRET = 'stream relay secret, long enough';
const keys = deriveNetworkKeys(Buffer.from(SECRET));

async function serve(extra: Parameters<typeof startServer>[0]['relay'] = {}): Promise<RendezvousServer> {
  return startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, relay: extra });
}

function pair(server: RendezvousServer, a = 'alice', b = 'bob'): Promise<[net.Socket, net.Socket]> {
  const at = server.tcpAddress;
  assert.ok(at);
  return Promise.all([connectStreamRelay({ server: at, keys, name: a, peer: b }), connectStreamRelay({ server: at, keys, name: b, peer: a })]);
}

function readAll(socket: net.Socket, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      n += c.length;
      if (n >= bytes) resolve(Buffer.concat(chunks));
    });
    socket.once('error', reject);
  });
}

describe('stream relay on loopback', () => {
  it('splices two authenticated connections of one pair: bytes intact both ways', async () => {
    const server = await serve();
    try {
      const [a, b] = await pair(server);
      const one = randomBytes(100_000);
      const two = randomBytes(70_000);
      const atB = readAll(b, one.length);
      const atA = readAll(a, two.length);
      a.write(one);
      b.write(two);
      assert.deepEqual(await atB, one);
      assert.deepEqual(await atA, two);
      const relay = server.streamRelay;
      assert.ok(relay);
      assert.equal(relay.sessions, 1);
      assert.equal(relay.stats.sessionsTotal, 1);
      a.destroy();
      await new Promise((r) => b.once('close', r));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(relay.sessions, 0);
    } finally {
      await server.close();
    }
  });

  it('carries 32 MiB at the default bounds (at least 10 MiB/s is allowed per session)', async () => {
    const server = await serve();
    try {
      const [a, b] = await pair(server);
      const total = 32 * 1024 * 1024;
      const chunk = randomBytes(1 << 20);
      const hash = createHash('sha256');
      for (let i = 0; i < 32; i++) hash.update(chunk);
      const expected = hash.digest('hex');
      const got = createHash('sha256');
      let n = 0;
      const done = new Promise<void>((resolve) => {
        b.on('data', (c: Buffer) => {
          got.update(c);
          n += c.length;
          if (n === total) resolve();
        });
      });
      const start = Date.now();
      for (let i = 0; i < 32; i++) if (!a.write(chunk)) await new Promise((r) => a.once('drain', r));
      await done;
      const seconds = (Date.now() - start) / 1000;
      assert.equal(got.digest('hex'), expected);
      // Not a speed assertion: the figure is for the log (bench:relay measures).
      process.stderr.write(`stream relay: 32 MiB in ${seconds.toFixed(2)} s (${(32 / seconds).toFixed(0)} MiB/s)\n`);
      a.destroy();
      b.destroy();
    } finally {
      await server.close();
    }
  });

  it('abuse: enforces bytes per second per session', async () => {
    const rate = 512 * 1024;
    const server = await serve({ limits: { rateBytesPerSecond: rate } });
    try {
      const [a, b] = await pair(server);
      let n = 0;
      b.on('data', (c: Buffer) => { n += c.length; });
      const start = Date.now();
      const chunk = Buffer.alloc(64 * 1024);
      // Offer 8 MiB as fast as the relay takes it, for 2 s.
      const writer = (async () => {
        for (let i = 0; i < 128 && Date.now() - start < 2000 && !a.destroyed; i++) {
          if (!a.write(chunk)) await new Promise((r) => { a.once('drain', r); a.once('close', r); });
        }
      })();
      await new Promise((r) => setTimeout(r, 2000));
      const elapsed = (Date.now() - start) / 1000;
      const allowed = rate * elapsed + Math.max(rate / 4, 256 * 1024) + 2 * 64 * 1024;
      assert.ok(n <= allowed, `relayed ${n} > ${allowed}`);
      assert.ok(n >= rate, `relayed only ${n}`);
      a.destroy();
      b.destroy();
      await writer.catch(() => undefined);
    } finally {
      await server.close();
    }
  });

  it('abuse: refuses wrong credentials, and a third connection for the pair never joins it', async () => {
    const server = await serve();
    const at = server.tcpAddress;
    assert.ok(at);
    try {
      const other = deriveNetworkKeys(Buffer.from('not this network'));
      await assert.rejects(connectStreamRelay({ server: at, keys: other, name: 'alice', peer: 'bob' }), (e: unknown) => e instanceof StreamRelayError && e.code === 401);
      assert.equal(server.streamRelay?.stats.refused['bad-credentials'], 1);
      // carol→bob waits for bob→carol; bob→alice and alice→bob pair; carol never gets alice's or bob's bytes.
      const carol = connectStreamRelay({ server: at, keys, name: 'carol', peer: 'bob', timeoutMs: 1500 });
      const [a, b] = await pair(server);
      const atB = readAll(b, 5);
      a.write('hello');
      assert.equal((await atB).toString(), 'hello');
      await assert.rejects(carol, StreamRelayError);
      a.destroy();
      b.destroy();
    } finally {
      await server.close();
    }
  });

  it('a partner that never comes ends the wait with 408 (the pairing core, fake clock)', () => {
    {
      const core = new StreamRelayCore({ enabled: true, nonceKey: new Uint8Array(32), pairTimeoutMs: 1000 });
      core.setNetworks([keys]);
      const now = 1_800_000_000_000;
      core.opened(1, { address: '198.51.100.1', port: 1 });
      const first = core.message(1, encodeTurn(STREAM_RELAY_METHOD, 'request', randomBytes(12), {}), now);
      const challenge = decodeTurn(sendOf(first));
      assert.ok(challenge.ok && challenge.msg.error?.code === 401 && challenge.msg.nonce);
      const { username, password } = builtinCredentials(keys.relay, { expiry: now / 1000 + 60, networkIdHex: keys.networkIdHex, name: 'alice', peer: 'bob' });
      const key = longTermKey(username, 'burrow', password);
      const signed = core.message(1, encodeTurn(STREAM_RELAY_METHOD, 'request', randomBytes(12), { username, realm: 'burrow', nonce: challenge.msg.nonce }, { key }), now);
      assert.deepEqual(signed, []);
      assert.ok(core.isAuthenticated(1));
      assert.equal(core.nextTimeoutAt(), now + 1000);
      const late = core.timer(now + 1000);
      const err = decodeTurn(sendOf(late));
      assert.ok(err.ok && err.msg.error?.code === 408);
      assert.ok(late.some((x) => x.type === 'close'));
      assert.equal(core.stats.refused['partner-timeout'], 1);
    }
  });

  it('--no-relay: the stream relay answers 403', async () => {
    const server = await serve({ policy: { kind: 'none' } });
    const at = server.tcpAddress;
    assert.ok(at);
    try {
      await assert.rejects(connectStreamRelay({ server: at, keys, name: 'alice', peer: 'bob' }), (e: unknown) => e instanceof StreamRelayError && e.code === 403);
    } finally {
      await server.close();
    }
  });

  it('quota: a peer name holds at most sessions-per-peer connections', async () => {
    const server = await serve({ limits: { sessionsPerPeer: 1 } });
    const at = server.tcpAddress;
    assert.ok(at);
    try {
      const waiting = connectStreamRelay({ server: at, keys, name: 'alice', peer: 'bob', timeoutMs: 3000 });
      await new Promise((r) => setTimeout(r, 200));
      await assert.rejects(connectStreamRelay({ server: at, keys, name: 'alice', peer: 'carol' }), (e: unknown) => e instanceof StreamRelayError && e.code === 486);
      const b = await connectStreamRelay({ server: at, keys, name: 'bob', peer: 'alice' });
      const a = await waiting;
      a.destroy();
      b.destroy();
    } finally {
      await server.close();
    }
  });
});

describe('a SecureStream over the stream relay', () => {
  it('keepalive records keep a quiet stream alive past the relay\'s idle timeout; without them the relay ends it', async () => {
    const server = await serve({ limits: { idleSeconds: 1 } });
    try {
      const open = async (keepalive: boolean, a: string, b: string): Promise<[SecureStream, SecureStream]> => {
        const [sa, sb] = await pair(server, a, b);
        const context = Buffer.from(`keepalive test ${a}`);
        const streams = await Promise.all([
          SecureStream.open(sa, { name: a, peer: b, authKey: keys.streamAuth, context }),
          SecureStream.open(sb, { name: b, peer: a, authKey: keys.streamAuth, context }),
        ]);
        for (const s of streams) {
          s.on('error', () => undefined);
          if (keepalive) s.keepAlive(200);
        }
        return streams;
      };
      const [ka, kb] = await open(true, 'alice', 'bob');
      const [qa, qb] = await open(false, 'carol', 'dave');
      const quietClosed = new Promise<void>((resolve) => qb.once('close', resolve));
      // Quiet for 2.5 s: more than the 1 s idle timeout plus the relay's 1 s check.
      await new Promise((r) => setTimeout(r, 2500));
      const got = new Promise<string>((resolve) => kb.once('data', (c: Buffer) => { resolve(c.toString()); }));
      ka.write('still here');
      assert.equal(await got, 'still here');
      assert.equal(kb.bytesReceived, 'still here'.length, 'keepalive records count as no data');
      await quietClosed;
      assert.ok(qa.destroyed || qb.destroyed);
      for (const s of [ka, kb, qa, qb]) s.destroy();
    } finally {
      await server.close();
    }
  });
});

describe('stream relay pairing core: bounds (fake clock)', () => {
  const now = 1_800_000_000_000;
  /** Opens `conn` from `from` and authenticates it as NAME→PEER; returns the actions of the signed request. */
  const join = (core: StreamRelayCore, conn: number, from: string, name: string, peer: string): StreamAction[] => {
    core.opened(conn, { address: from, port: 40000 + conn });
    const challenge = decodeTurn(sendOf(core.message(conn, encodeTurn(STREAM_RELAY_METHOD, 'request', randomBytes(12), {}), now)));
    assert.ok(challenge.ok && challenge.msg.nonce);
    const { username, password } = builtinCredentials(keys.relay, { expiry: now / 1000 + 60, networkIdHex: keys.networkIdHex, name, peer });
    const key = longTermKey(username, 'burrow', password);
    return core.message(conn, encodeTurn(STREAM_RELAY_METHOD, 'request', randomBytes(12), { username, realm: 'burrow', nonce: challenge.msg.nonce }, { key }), now);
  };
  const errorCode = (actions: readonly StreamAction[]): number | undefined => {
    const d = decodeTurn(sendOf(actions));
    return d.ok ? d.msg.error?.code : undefined;
  };

  it('abuse: one source address holds at most sessions-per-source connections (486), the rest of the world is unaffected', () => {
    const core = new StreamRelayCore({ enabled: true, nonceKey: new Uint8Array(32), limits: { sessionsPerSource: 2 } });
    core.setNetworks([keys]);
    assert.deepEqual(join(core, 1, '198.51.100.7', 'a1', 'b1'), []);
    assert.deepEqual(join(core, 2, '198.51.100.7', 'a2', 'b2'), []);
    const refused = join(core, 3, '198.51.100.7', 'a3', 'b3');
    assert.equal(errorCode(refused), 486);
    assert.ok(refused.some((x) => x.type === 'close' && x.conn === 3));
    assert.equal(core.stats.refused['quota-source'], 1);
    // Another address pairs with a waiting one: spliced.
    assert.ok(join(core, 4, '198.51.100.8', 'b1', 'a1').some((x) => x.type === 'splice'));
    // A closed connection frees its slot.
    core.closed(2);
    assert.deepEqual(join(core, 5, '198.51.100.7', 'a5', 'b5'), []);
  });

  it('abuse: the relay holds at most --relay-sessions pairs in total (508), waiting connections counted', () => {
    const core = new StreamRelayCore({ enabled: true, nonceKey: new Uint8Array(32), limits: { sessions: 1 } });
    core.setNetworks([keys]);
    assert.deepEqual(join(core, 1, '198.51.100.1', 'alice', 'bob'), []);
    assert.ok(join(core, 2, '198.51.100.2', 'bob', 'alice').some((x) => x.type === 'splice'));
    assert.equal(core.sessions, 1);
    assert.equal(errorCode(join(core, 3, '198.51.100.3', 'carol', 'dave')), 508);
    assert.equal(core.stats.refused.capacity, 1);
    core.closed(1);
    core.closed(2);
    assert.equal(core.sessions, 0);
    assert.deepEqual(join(core, 4, '198.51.100.3', 'carol', 'dave'), []);
  });

  it('abuse: a connection that never authenticates gets 400 after 3 requests; a non-request is refused at once', () => {
    const core = new StreamRelayCore({ enabled: true, nonceKey: new Uint8Array(32) });
    core.setNetworks([keys]);
    core.opened(1, { address: '198.51.100.1', port: 1 });
    for (let i = 0; i < 3; i++) assert.equal(errorCode(core.message(1, encodeTurn(STREAM_RELAY_METHOD, 'request', randomBytes(12), {}), now)), 401);
    const fourth = core.message(1, encodeTurn(STREAM_RELAY_METHOD, 'request', randomBytes(12), {}), now);
    assert.equal(errorCode(fourth), 400);
    assert.ok(fourth.some((x) => x.type === 'close'));
    core.opened(2, { address: '198.51.100.1', port: 2 });
    const indication = core.message(2, encodeTurn(STREAM_RELAY_METHOD, 'success', randomBytes(12), {}), now);
    assert.ok(indication.some((x) => x.type === 'close' && x.conn === 2));
    assert.ok(!core.isAuthenticated(1) && !core.isAuthenticated(2));
  });
});

function sendOf(actions: readonly StreamAction[]): Uint8Array {
  for (const a of actions) if (a.type === 'send') return a.data;
  assert.fail('no send');
}
