/**
 * Several `burrow serve --redis` processes sharing one real redis-server (issue 12), through the real binary on
 * loopback: peers registered with different servers punch and send files; Redis stopped -> punches exit 14 with the
 * store message while the servers keep answering STUN; Redis back -> punches work within 5 s; REGISTERs captured
 * before a server restart (both modes) or a Redis restart (nothing on disk) are refused after it; a client given
 * `--server S1,S3` moves to S3 when S1 is SIGKILLed while it waits.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from 'redis';
import { decodeMessage } from '../../src/codec/messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { startCli, type Cli, type CliRun } from '../support/cli.js';
import { freePort, startRedis, type RedisProcess } from '../support/redis.js';
import { registerRequest } from '../support/shapes.js';

const SECRET = 'redis test secret, long enough to be one';
const ENV = { BURROW_SECRET: SECRET };
const keys = deriveNetworkKeys(Buffer.from(SECRET));

interface Serve {
  readonly id: string;
  readonly port: number;
  readonly address: string;
  cli: Cli;
  stop(): Promise<CliRun>;
  kill(): Promise<void>;
  start(): Promise<void>;
}

/** `burrow serve` on 127.0.0.1:PORT (a fixed port, so that a restart comes back on it), with `extra` flags. */
async function serve(id: string, extra: string[]): Promise<Serve> {
  const port = await freePort();
  const s: Serve = {
    id,
    port,
    address: `127.0.0.1:${port}`,
    cli: undefined as unknown as Cli,
    async start() {
      this.cli = startCli(['serve', '--listen', `127.0.0.1:${port}`, '--no-alt-port', '--log-format', 'json', '--log-level', 'debug', ...extra], ENV);
      await this.cli.waitFor('"listening"', 10_000);
    },
    async stop() {
      this.cli.child.kill('SIGTERM');
      return this.cli.done;
    },
    async kill() {
      this.cli.child.kill('SIGKILL');
      await this.cli.done;
    },
  };
  await s.start();
  return s;
}

function punch(server: string, as: string, to: string, timeout: number): Cli {
  return startCli(['punch', '--server', server, '--as', as, '--to', to, '--timeout', String(timeout)], ENV);
}

function errorLine(r: CliRun): string {
  return r.stderr.split('\n').find((l) => l.startsWith('burrow: error:')) ?? `(no error line; stderr: ${r.stderr})`;
}

/** A pair on two servers; resolves with both runs. */
async function pair(serverA: string, serverB: string, a: string, b: string, timeout: number): Promise<[CliRun, CliRun]> {
  const pa = punch(serverA, a, b, timeout);
  const pb = punch(serverB, b, a, timeout);
  return Promise.all([pa.done, pb.done]);
}

/** Sends `data` (a captured datagram) to `address` from a fresh socket; the answer's kind and code, or 'none'. */
async function exchange(address: string, data: Uint8Array, waitMs = 1500): Promise<string> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  try {
    const answer = new Promise<string>((resolve) => {
      const timer = setTimeout(() => { resolve('none'); }, waitMs);
      socket.once('message', (msg) => {
        clearTimeout(timer);
        const d = decodeMessage(msg);
        resolve(!d.ok ? `malformed ${d.reason}` : d.msg.kind === 'error' ? `error ${d.msg.code}` : d.msg.kind);
      });
    });
    socket.send(data, port, '127.0.0.1');
    return await answer;
  } finally {
    socket.close();
  }
}

/** Asks `burrow stun` of the server: exit 0 when it answers Binding requests. */
async function stunAnswers(address: string): Promise<boolean> {
  const r = await startCli(['stun', address, '--timeout', '3']).done;
  return r.code === 0;
}

describe('burrow serve --redis: several servers over one Redis', () => {
  let redis: RedisProcess;
  let s1: Serve;
  let s2: Serve;
  let s3: Serve;
  let dir = '';

  before(async () => {
    redis = await startRedis();
    const flags = (id: string): string[] => ['--redis', redis.url, '--server-id', id, '--redis-prefix', 'test'];
    [s1, s2, s3] = await Promise.all([serve('s1', flags('s1')), serve('s2', flags('s2')), serve('s3', flags('s3'))]);
    dir = await mkdtemp(join(tmpdir(), 'burrow-redis-'));
  });
  after(async () => {
    for (const s of [s1, s2, s3]) if (s.cli.child.exitCode === null && s.cli.child.signalCode === null) await s.stop();
    await redis.kill();
    await rm(dir, { recursive: true, force: true });
  });

  it('a peer on server 1 and a peer on server 2 punch (exit 0); the store holds the registration, owner and expiry, no secret', async (t) => {
    const pa = punch(s1.address, 'alice', 'bob', 15);
    await pa.waitFor('registered with the server', 10_000);
    // alice's registration, as Redis holds it.
    const client = createClient({ url: redis.url });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const names = await client.keys('test:reg:*');
      const key = names.find((k) => k.endsWith(':alice'));
      assert.ok(key, `no registration key for alice among ${names.join(', ')}`);
      const value = await client.get(key);
      const reg = JSON.parse(value ?? '{}') as { owner?: { server?: string }; name?: string };
      assert.equal(reg.owner?.server, 's1');
      const ttl = await client.pTTL(key);
      assert.ok(ttl > 0, `the registration expires (PTTL ${ttl})`);
      const everything = await client.keys('test:*');
      for (const k of everything) {
        const type = await client.type(k);
        const v = type === 'string' ? (await client.get(k)) ?? '' : JSON.stringify(type === 'hash' ? await client.hGetAll(k) : '');
        assert.ok(!v.includes(SECRET) && !k.includes(SECRET), `no secret in ${k}`);
      }
      t.diagnostic(`keys: ${everything.map((k) => k.replace(/[0-9a-f]{16,}/g, '…')).join(', ')}; alice PTTL ${ttl} ms`);
    } finally {
      client.destroy();
    }
    const b = await punch(s2.address, 'bob', 'alice', 15).done;
    const a = await pa.done;
    assert.equal(a.code, 0, `alice: ${errorLine(a)}`);
    assert.equal(b.code, 0, `bob: ${errorLine(b)}`);
    assert.match(a.stdout, /connected to bob/);
  });

  it('send on server 1 and receive on server 2: the file arrives whole', async () => {
    const file = join(dir, 'payload.bin');
    const data = randomBytes(256 * 1024);
    await writeFile(file, data);
    const out = join(dir, 'out');
    await mkdir(out);
    const [send, receive] = await Promise.all([
      startCli(['send', file, '--server', s1.address, '--as', 'sender', '--to', 'receiver', '--timeout', '15'], ENV).done,
      startCli(['receive', '--server', s2.address, '--as', 'receiver', '--to', 'sender', '--out', out, '--timeout', '15', '--yes'], ENV).done,
    ]);
    assert.equal(receive.code, 0, `receive: ${errorLine(receive)}`);
    assert.equal(send.code, 0, `send: ${errorLine(send)}`);
    const got = await readFile(join(out, 'payload.bin'));
    assert.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(data).digest('hex'));
  });

  it('--workers 2 over Redis: each worker is a server of its own; pairs split with another server, or both on it, punch', async (t) => {
    const w = await serve('sw', ['--redis', redis.url, '--server-id', 'sw', '--redis-prefix', 'test', '--workers', '2']);
    try {
      const runs = await Promise.all([
        ...[0, 1, 2, 3].map((i) => pair(w.address, s2.address, `wa${i}`, `wb${i}`, 15)),
        ...[0, 1].map((i) => pair(w.address, w.address, `wc${i}`, `wd${i}`, 15)),
      ]);
      for (const [i, [a, b]] of runs.entries()) {
        assert.equal(a.code, 0, `pair ${i} A: ${errorLine(a)}`);
        assert.equal(b.code, 0, `pair ${i} B: ${errorLine(b)}`);
      }
      // Registrations were taken by the workers, under their own ids.
      const client = createClient({ url: redis.url });
      client.on('error', () => undefined);
      await client.connect();
      try {
        const channels = await client.pubSubChannels('test:push:sw*');
        t.diagnostic(`push channels: ${channels.join(', ')}`);
        assert.equal(channels.filter((c) => /^test:push:sw\.w\d+$/.test(c)).length, 2, 'one channel per worker');
      } finally {
        client.destroy();
      }
    } finally {
      await w.stop();
    }
  });

  it('a REGISTER captured before a server restart is refused after it (Redis mode)', async () => {
    const captured = registerRequest(keys, { name: 'replayed-r', target: 'nobody', timestamp: Date.now() });
    assert.equal(await exchange(s3.address, captured), 'register-ok');
    assert.equal(await exchange(s3.address, captured), 'none', 'a replay is not answered');
    await s3.stop();
    await s3.start();
    const answer = await exchange(s3.address, captured);
    assert.notEqual(answer, 'register-ok');
    assert.equal(answer, 'error 438', 'refused as stale: older than the server\'s start');
  });

  it('Redis stopped: a punch exits 14 naming the store within 8 s, the servers answer STUN; Redis back: punches work within 5 s, and a REGISTER captured before the restart is refused', async (t) => {
    const captured = registerRequest(keys, { name: 'replayed-x', target: 'nobody', timestamp: Date.now() });
    assert.equal(await exchange(s1.address, captured), 'register-ok');
    await redis.kill();
    const started = Date.now();
    const down = await punch(s2.address, 'carol', 'dave', 20).done;
    const took = Date.now() - started;
    t.diagnostic(`punch with Redis down: exit ${String(down.code)} in ${took} ms: ${errorLine(down)}`);
    assert.equal(down.code, 14, errorLine(down));
    assert.match(errorLine(down), /cannot reach its registration store/);
    assert.doesNotMatch(down.stderr, /absent|not registered|never registered/);
    assert.ok(took < 8000, `exit 14 after ${took} ms`);
    assert.ok(await stunAnswers(s1.address), 'server 1 answers STUN with Redis down');
    assert.ok(await stunAnswers(s2.address), 'server 2 answers STUN with Redis down');
    assert.equal(s1.cli.child.exitCode, null, 'server 1 still runs');
    assert.equal(s2.cli.child.exitCode, null, 'server 2 still runs');
    await s1.cli.waitFor('store-down', 5000);

    await redis.restart();
    const back = Date.now();
    // Both servers find it again by themselves (reconnection backoff capped at 1 s): within 5 s, or this times out.
    await Promise.all([s1.cli.waitFor('store-up', 5000), s2.cli.waitFor('store-up', 5000)]);
    t.diagnostic(`servers reconnected ${Date.now() - back} ms after Redis came back`);
    const [c, d] = await pair(s1.address, s2.address, 'carol', 'dave', 5);
    t.diagnostic(`first pair after Redis came back: exits ${String(c.code)}/${String(d.code)} ${Date.now() - back} ms after`);
    assert.equal(c.code, 0, `carol: ${errorLine(c)}`);
    assert.equal(d.code, 0, `dave: ${errorLine(d)}`);
    // The store restarted empty: the captured REGISTER is older than the moment the servers found it emptied.
    assert.equal(await exchange(s1.address, captured), 'error 438');
    assert.equal(await exchange(s2.address, captured), 'error 438');
  });

  it('failover: A with --server S1,S3 waits; S1 is SIGKILLed; A re-registers with S3 and punches B on S2', async (t) => {
    const a = punch(`${s1.address},${s3.address}`, 'fa', 'fb', 25);
    await a.waitFor('registered with the server', 10_000);
    await s1.kill();
    const b = punch(s2.address, 'fb', 'fa', 20);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    t.diagnostic(`A: exit ${String(ra.code)} in ${ra.ms} ms; B: exit ${String(rb.code)} in ${rb.ms} ms`);
    assert.match(ra.stderr, new RegExp(`the server at ${s1.address} stopped answering; registering with ${s3.address}`));
    assert.equal(ra.code, 0, `A: ${errorLine(ra)}`);
    assert.equal(rb.code, 0, `B: ${errorLine(rb)}`);
    await s1.start();
  });

  it('pipe with --server DEAD,S3,S1: a refused first server is skipped at once; S3 SIGKILLed while it waits: the connection moves to S1 from the same port; bytes reach B on S2', async (t) => {
    const dead = `127.0.0.1:${await freePort()}`;
    const a = startCli(['pipe', '--server', `${dead},${s3.address},${s1.address}`, '--as', 'pa', '--to', 'pb', '--timeout', '20', '--send-only'], ENV, Buffer.from('across a failover\n'));
    const onS3 = /"peer":"pa","from":"127\.0\.0\.1:(\d+)"/.exec(await s3.cli.waitFor(/"peer":"pa","from":"[^"]+"/, 10_000))?.[1];
    const onS1 = s1.cli.waitFor(/"peer":"pa","from":"[^"]+"/, 15_000).catch((e: unknown) => String(e));
    await s3.kill();
    const b = startCli(['pipe', '--server', s2.address, '--as', 'pb', '--to', 'pa', '--timeout', '15', '--recv-only'], ENV);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    t.diagnostic(`A: exit ${String(ra.code)} in ${ra.ms} ms; B: exit ${String(rb.code)} in ${rb.ms} ms`);
    assert.match(ra.stderr, new RegExp(`the server at ${dead} stopped answering; registering with ${s3.address}`));
    assert.match(ra.stderr, new RegExp(`the server at ${s3.address} stopped answering; registering with ${s1.address}`));
    assert.equal(ra.code, 0, `A: ${errorLine(ra)}`);
    assert.equal(rb.code, 0, `B: ${errorLine(rb)}`);
    assert.equal(rb.stdout, 'across a failover\n');
    const fromS1 = /"peer":"pa","from":"127\.0\.0\.1:(\d+)"/.exec(await onS1)?.[1];
    assert.ok(onS3 !== undefined && onS3 === fromS1, `the connection to S1 left from port ${String(fromS1)}, the one to S3 from ${String(onS3)}`);
    await s3.start();
  });
});

describe('burrow serve without --redis: replays across a restart', () => {
  it('a REGISTER captured before the restart is refused after it (in-memory mode)', async () => {
    const s = await serve('mem', []);
    try {
      const captured = registerRequest(keys, { name: 'replayed-m', target: 'nobody', timestamp: Date.now() });
      assert.equal(await exchange(s.address, captured), 'register-ok');
      await s.stop();
      await s.start();
      assert.equal(await exchange(s.address, captured), 'error 438');
      // A client corrects its clock from the 438 and registers: a fresh punch pair still works.
      const [a, b] = await pair(s.address, s.address, 'm1', 'm2', 10);
      assert.equal(a.code, 0, errorLine(a));
      assert.equal(b.code, 0, errorLine(b));
    } finally {
      await s.stop();
    }
  });

  it('serve --redis with an unreachable URL exits at once, naming the URL', async () => {
    const port = await freePort();
    const r = await startCli(['serve', '--listen', '127.0.0.1:0', '--redis', `redis://127.0.0.1:${port}`], ENV).done;
    assert.notEqual(r.code, 0);
    assert.ok(r.ms < 10_000, `took ${r.ms} ms`);
    assert.match(errorLine(r), new RegExp(`redis://127\\.0\\.0\\.1:${port}`));
    await sleep(0);
  });
});
