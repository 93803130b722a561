/**
 * The multi-process server (src/node/cluster.ts) through real sockets: the workers take registrations themselves
 * against the primary's shared state, so pairs whose REGISTERs reach different workers still meet and a replay is
 * caught by whichever worker reads it; two real punch() peers connect through it, with the native socket and with
 * the dgram fallback; STUN works; counters add up; no worker outlives the server, whether it is closed through the
 * library or `burrow serve --workers` gets SIGTERM; a worker that dies stops the server.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeMessage, type BurrowMessage } from '../../src/codec/messages.js';
import { splitStunStream } from '../../src/codec/stun.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { punch, startServer, stunQuery, type ServerEvent } from '../../src/index.js';
import { startServe } from '../support/cli.js';
import { registerRequest } from '../support/shapes.js';
import { openAttacker, type Attacker } from '../support/udp-attacker.js';

const SECRET = 'workers secret';
const KEYS = deriveNetworkKeys(Buffer.from(SECRET));

function messages(a: Attacker): BurrowMessage[] {
  return a.replies.flatMap((r) => {
    const d = decodeMessage(r);
    return d.ok ? [d.msg] : [];
  });
}

async function waitFor(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits (at most 5 s) until none of `pids` is alive; returns those still alive. */
async function waitGone(pids: readonly number[]): Promise<number[]> {
  for (let i = 0; i < 100 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 50));
  return pids.filter(alive);
}

describe('server with worker processes (real sockets)', () => {
  const leaked = () => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap' || r === 'Timeout' || r === 'ProcessWrap');
  const before = leaked().length;
  after(async () => {
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(leaked().length, before, `leaked: ${leaked().join(', ')}`);
  });

  it('two punch() peers connect through a 2-worker server; STUN is answered; no worker outlives close()', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 2 });
    const pids = [...server.workerPids];
    try {
      assert.equal(pids.length, 2);
      assert.ok(pids.every(alive));
      const addr = `127.0.0.1:${server.address.port}`;
      // Several queries, so that (whichever worker the kernel picks) both are likely exercised.
      for (let i = 0; i < 6; i++) {
        const mapped = await stunQuery({ server: addr, local: '127.0.0.1:0', timeoutMs: 3000 });
        assert.equal(mapped.address, '127.0.0.1');
      }
      const [a, b] = await Promise.all([
        punch({ server: addr, secret: SECRET, name: 'alice', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 10_000 }),
        punch({ server: addr, secret: SECRET, name: 'bob', peer: 'alice', local: '127.0.0.1:0', timeoutMs: 10_000 }),
      ]);
      assert.equal(a.remotePort, b.localPort);
      assert.equal(b.remotePort, a.localPort);
      assert.equal(a.peer, 'bob');
      // The workers took the registrations; the store they share lives in the primary.
      assert.ok(server.registrations >= 2);
    } finally {
      await server.close();
    }
    assert.deepEqual(await waitGone(pids), [], 'workers still running after close()');
    // The workers report their counters when they stop: every Binding we sent was counted somewhere, and the
    // introduction was made by a worker.
    assert.ok(server.stats.stunBindings >= 6, `stunBindings ${server.stats.stunBindings}`);
    assert.ok(server.stats.introductions >= 1);
    assert.ok(server.stats.registrationsTotal >= 2);
  });

  it('a wrong secret is still refused (authentication happens in the process that owns registrations)', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 2 });
    try {
      await assert.rejects(
        punch({ server: `127.0.0.1:${server.address.port}`, secret: 'another secret', name: 'mallory', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 3000 }),
        (e: unknown) => e instanceof Error && 'code' in e && e.code === 'AUTH_FAILED',
      );
      assert.equal(server.registrations, 0);
    } finally {
      await server.close();
    }
  });

  it('lifecycle across workers: a second alice displaces the first (DISPLACED), a withdrawn partner is announced (PEER_LEFT)', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 2 });
    const addr = `127.0.0.1:${server.address.port}`;
    try {
      // Each punch() has its own socket, so the kernel spreads them over the workers (SO_REUSEPORT).
      let onRegistered: () => void = () => undefined;
      const isRegistered = new Promise<void>((resolve) => { onRegistered = resolve; });
      const first = punch({ server: addr, secret: SECRET, name: 'alice', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 10_000, onEvent: (e) => { if (e.type === 'registered') onRegistered(); } });
      const firstFailed = assert.rejects(first, (e: unknown) => e instanceof Error && 'code' in e && e.code === 'DISPLACED');
      await isRegistered;
      const second = punch({ server: addr, secret: SECRET, name: 'alice', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 1000 });
      await firstFailed;
      await assert.rejects(second, (e: unknown) => e instanceof Error && 'code' in e && e.code === 'PEER_NOT_FOUND');
      // carol leaves (aborts) after the introduction; dave, waiting, is told.
      const controller = new AbortController();
      const dave = punch({ server: addr, secret: SECRET, name: 'dave', peer: 'carol', local: '127.0.0.1:0', timeoutMs: 10_000, timing: { probeBackoffMs: [60_000] } });
      const daveFailed = assert.rejects(dave, (e: unknown) => e instanceof Error && 'code' in e && e.code === 'PEER_LEFT');
      await sleep(300);
      const carol = punch({
        server: addr, secret: SECRET, name: 'carol', peer: 'dave', local: '127.0.0.1:0', timeoutMs: 10_000, signal: controller.signal, timing: { probeBackoffMs: [60_000] },
        onEvent: (e) => { if (e.type === 'introduced') controller.abort(); },
      });
      await assert.rejects(carol, (e: unknown) => e instanceof Error && 'code' in e && e.code === 'ABORTED');
      await daveFailed;
    } finally {
      await server.close();
    }
  });

  it('burrow serve --workers 2: SIGTERM stops the server and every worker, exit 0', async () => {
    const serve = await startServe(SECRET, ['--workers', '2', '--no-alt-port']);
    const pid = serve.cli.child.pid ?? -1;
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number).filter((n) => n > 0);
    assert.equal(children.length, 2, `children of ${pid}: ${children.join(' ')}`);
    const mapped = await stunQuery({ server: serve.address, local: '127.0.0.1:0', timeoutMs: 3000 });
    assert.equal(mapped.address, '127.0.0.1');
    const run = await serve.stop();
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(await waitGone(children), [], 'workers still running after SIGTERM');
  });

  it('pairs whose REGISTERs reach different workers meet: every worker takes registrations itself', async () => {
    const registered: Extract<ServerEvent, { type: 'registered' }>[] = [];
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 2, onEvent: (e) => { if (e.type === 'registered') registered.push(e); } });
    const PAIRS = 16;
    // Each side of each pair has its own socket: the kernel spreads senders over the workers by address and port.
    const sockets = await Promise.all(Array.from({ length: 2 * PAIRS }, () => openAttacker('127.0.0.1')));
    try {
      const now = Date.now();
      for (let p = 0; p < PAIRS; p++) {
        const [a, b] = [sockets[2 * p]!, sockets[2 * p + 1]!];
        await a.send(registerRequest(KEYS, { name: `a${p}`, target: `b${p}`, timestamp: now }), server.address.port);
        await waitFor(() => a.replies.length === 1, `a${p}'s answer`);
        await b.send(registerRequest(KEYS, { name: `b${p}`, target: `a${p}`, timestamp: now }), server.address.port);
        await waitFor(() => b.replies.length === 1 && a.replies.length === 2, `b${p}'s answer and the push to a${p}`);
        const answer = messages(b)[0];
        assert.ok(answer?.kind === 'register-ok' && answer.intro?.peerName === `a${p}`, `b${p} was not introduced`);
        const push = messages(a)[1];
        assert.ok(push?.kind === 'introduce' && push.intro.peerName === `b${p}`, `a${p} got no push`);
      }
      await waitFor(() => registered.length === 2 * PAIRS, 'the workers\' events');
    } finally {
      await Promise.all(sockets.map((x) => x.close()));
      await server.close();
    }
    const workerOf = new Map(registered.map((e) => [e.name, e.worker]));
    const across = Array.from({ length: PAIRS }, (_, p) => p).filter((p) => workerOf.get(`a${p}`) !== workerOf.get(`b${p}`));
    const perWorker = server.workerStats.map((w) => w.stats.registrationsTotal);
    assert.ok(registered.every((e) => e.worker !== undefined && server.workerPids.includes(e.worker)), 'a registration was not taken by a worker');
    assert.ok(perWorker.every((n) => n > 0), `registrations per worker: ${perWorker.join(', ')}`);
    assert.ok(across.length > 0, 'no pair had its peers on different workers (the kernel put every socket on one worker)');
    assert.equal(server.stats.introductions, PAIRS);
  });

  it('a REGISTER replayed from many addresses is refused by every worker, including those that never saw it', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 2 });
    const original = await openAttacker('127.0.0.1');
    const replayers = await Promise.all(Array.from({ length: 24 }, (_, i) => openAttacker(`127.0.0.${20 + i}`)));
    try {
      const req = registerRequest(KEYS, { name: 'alice', target: 'bob', timestamp: Date.now() });
      await original.send(req, server.address.port);
      await waitFor(() => original.replies.length === 1, 'the answer');
      for (const r of replayers) await r.send(req, server.address.port);
      await sleep(300);
      assert.equal(replayers.reduce((n, r) => n + r.counts.received, 0), 0, 'a replay drew an answer');
    } finally {
      await Promise.all([original, ...replayers].map((x) => x.close()));
      await server.close();
    }
    const refused = server.workerStats.map((w) => w.stats.replaysRejected);
    assert.equal(server.stats.replaysRejected, 24);
    assert.ok(refused.every((n) => n > 0), `replays refused per worker: ${refused.join(', ')}: one worker took the original, so the other caught replays of a message it never saw`);
  });

  it('with the dgram fallback (one socket handed to the workers) two punch() peers connect too', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 2, udpBackend: 'dgram' });
    try {
      assert.equal(server.udpBackend, 'dgram');
      const addr = `127.0.0.1:${server.address.port}`;
      const [a, b] = await Promise.all([
        punch({ server: addr, secret: SECRET, name: 'alice', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 10_000 }),
        punch({ server: addr, secret: SECRET, name: 'bob', peer: 'alice', local: '127.0.0.1:0', timeoutMs: 10_000 }),
      ]);
      assert.equal(a.remotePort, b.localPort);
    } finally {
      await server.close();
    }
  });

  it('TCP rendezvous stays with the primary: two TCP peers are introduced down their connections', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 2 });
    const connect = async (): Promise<{ socket: net.Socket; messages: BurrowMessage[] }> => {
      const socket = net.connect({ host: '127.0.0.1', port: server.address.port });
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      const messages: BurrowMessage[] = [];
      let pending = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        const split = splitStunStream(pending);
        if ('error' in split) return;
        for (const m of split.messages) {
          const d = decodeMessage(m);
          if (d.ok) messages.push(d.msg);
        }
        pending = Buffer.from(split.rest);
      });
      return { socket, messages };
    };
    const carol = await connect();
    const dave = await connect();
    try {
      carol.socket.write(registerRequest(KEYS, { name: 'carol', target: 'dave', timestamp: Date.now(), transport: 'tcp' }));
      await waitFor(() => carol.messages.length === 1, 'carol\'s answer');
      dave.socket.write(registerRequest(KEYS, { name: 'dave', target: 'carol', timestamp: Date.now(), transport: 'tcp' }));
      await waitFor(() => dave.messages.length === 1 && carol.messages.length === 2, 'dave\'s answer and the push to carol');
      const answer = dave.messages[0];
      assert.ok(answer?.kind === 'register-ok' && answer.intro?.peerName === 'carol');
      assert.ok(carol.messages[1]?.kind === 'introduce');
    } finally {
      carol.socket.destroy();
      dave.socket.destroy();
      await server.close();
    }
  });

  it('a worker that dies stops the server (fail-stop, for a supervisor to restart it)', async () => {
    const exited: Extract<ServerEvent, { type: 'worker-exited' }>[] = [];
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 2, onEvent: (e) => { if (e.type === 'worker-exited') exited.push(e); } });
    const pids = [...server.workerPids];
    process.kill(pids[0]!, 'SIGKILL');
    await waitFor(() => exited.length === 1, 'the worker-exited event');
    assert.equal(exited[0]?.pid, pids[0]);
    assert.equal(exited[0]?.signal, 'SIGKILL');
    assert.deepEqual(await waitGone(pids), [], 'the other worker still runs');
    await server.close(); // already closing: resolves once closed
  });

  it('burrow serve --workers 2: a killed worker makes it exit 1', async () => {
    const serve = await startServe(SECRET, ['--workers', '2', '--no-alt-port']);
    const pid = serve.cli.child.pid ?? -1;
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number).filter((n) => n > 0);
    process.kill(children[0]!, 'SIGKILL');
    const timer = setTimeout(() => serve.cli.child.kill('SIGKILL'), 10_000); // bounded, should it hang
    const run = await serve.cli.done;
    clearTimeout(timer);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /worker process exited/);
    assert.deepEqual(await waitGone(children), []);
  });

  it('rejects a nonsensical worker count', async () => {
    await assert.rejects(startServer({ listen: '127.0.0.1:0', secrets: [SECRET], workers: 0 }), /workers/);
  });
});
