/**
 * The T-STUN server through real TCP sockets on loopback, with a client that behaves like punchhole's
 * (`punchhole.tcp`: bind, connect, send SHA-256(key), half-close, read the answer, split on
 * whitespace), and end to end: two such clients, each in its own thread like two processes, learn
 * each other's address and connect by TCP simultaneous open from the ports they used towards us.
 *
 * This file is also the worker script for the end-to-end test (see the bottom).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { availableParallelism } from 'node:os';
import { after, describe, it } from 'node:test';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { Endpoint } from '../../src/codec/address.js';
import { BurrowError } from '../../src/errors.js';
import { startTstunServer, type TstunServer, type TstunServerEvent } from '../../src/node/tstun.js';

const LOOPBACK = new Set(['127.0.0.1', '::1']);

interface Exchange {
  /** Everything the server sent, as text. */
  readonly raw: string;
  /** The first two whitespace-separated fields, as punchhole reads them; undefined if missing. */
  readonly peer: Endpoint | undefined;
  /** The port we used towards the server: where our peer will send its SYN. */
  readonly localPort: number;
  readonly error: string | undefined;
}

interface ExchangeOptions {
  readonly host?: string;
  /** Bytes to send instead of SHA-256(key). */
  readonly payload?: Uint8Array;
  /** punchhole half-closes after the key; default true. */
  readonly halfClose?: boolean;
  readonly timeoutMs?: number;
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** One T-STUN exchange as punchhole's client does it; resolves when the server has closed. */
function tstunExchange(port: number, key: string, opts: ExchangeOptions = {}): Promise<Exchange> {
  const host = opts.host ?? '127.0.0.1';
  assert.ok(LOOPBACK.has(host), 'tests only connect to loopback');
  return new Promise((resolve, reject) => {
    // A local address makes Node bind() first, which sets SO_REUSEADDR as punchhole does, so the
    // port can be bound again for the simultaneous open while this connection sits in TIME_WAIT.
    const socket = net.connect({ host, port, localAddress: host });
    const chunks: Buffer[] = [];
    let localPort = 0;
    let error: string | undefined;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from the T-STUN server within ${opts.timeoutMs ?? 5000} ms`));
    }, opts.timeoutMs ?? 5000);
    socket.once('connect', () => {
      localPort = socket.localPort ?? 0;
      socket.write(opts.payload ?? sha256(key));
      if (opts.halfClose ?? true) socket.end();
    });
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      error = err.code ?? err.message;
    });
    socket.once('close', () => {
      clearTimeout(timer);
      const raw = Buffer.concat(chunks).toString('ascii');
      const [address, portText] = raw.split(/\s+/).filter((f) => f !== '');
      const peer = address !== undefined && portText !== undefined ? { address, port: Number(portText) } : undefined;
      resolve({ raw, peer, localPort, error });
    });
  });
}

/** The server's events, and a way to wait for them. */
function recorder() {
  const events: TstunServerEvent[] = [];
  const waiters = new Set<() => void>();
  return {
    events,
    onEvent(e: TstunServerEvent): void {
      events.push(e);
      for (const w of waiters) w();
    },
    count(type: TstunServerEvent['type']): number {
      return events.filter((e) => e.type === type).length;
    },
    /** Resolves once `type` has been seen `n` times; fails after `ms`. */
    until(type: TstunServerEvent['type'], n = 1, ms = 5000): Promise<void> {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (this.count(type) < n) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`waited ${ms} ms for ${n} "${type}" event(s); saw ${events.map((e) => e.type).join(', ')}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
  };
}

async function withServer(listen: string, fn: (server: TstunServer, rec: ReturnType<typeof recorder>) => Promise<void>, limits = {}): Promise<void> {
  const rec = recorder();
  const server = await startTstunServer({ listen, limits, onEvent: (e) => { rec.onEvent(e); } });
  try {
    await fn(server, rec);
  } finally {
    await server.close();
  }
}

// ---------------------------------------------------------------------------------------------
// End to end: one peer per worker thread. On loopback a SYN to a port nobody has a socket on is
// answered with RST at once, inside the connect() call, so the two SYNs only cross (simultaneous
// open, RFC 793 figure 8) when both peers really run at the same time: threads, not one event loop.

interface SoJob {
  readonly serverPort: number;
  readonly key: string;
  readonly name: string;
}

type SoResult =
  | { readonly ok: true; readonly tstunLocalPort: number; readonly peer: Endpoint; readonly local: Endpoint; readonly remote: Endpoint; readonly attempts: number; readonly received: string }
  | { readonly ok: false; readonly error: string };

const SO_MAX_ATTEMPTS = 20_000;
const SO_DEADLINE_MS = 10_000;

/** connect() from `localPort` to `peer` until the SYNs cross; only ECONNREFUSED is retried. */
async function simultaneousOpen(localPort: number, peer: Endpoint): Promise<{ socket: net.Socket; attempts: number }> {
  assert.ok(LOOPBACK.has(peer.address), 'tests only connect to loopback');
  const started = Date.now();
  for (let attempts = 1; ; attempts++) {
    const outcome = await new Promise<net.Socket | NodeJS.ErrnoException>((resolve) => {
      const s = net.connect({ host: peer.address, port: peer.port, localAddress: '127.0.0.1', localPort });
      s.once('connect', () => {
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err) => {
        s.destroy();
        resolve(err);
      });
    });
    if (outcome instanceof net.Socket) return { socket: outcome, attempts };
    if (outcome.code !== 'ECONNREFUSED' || attempts >= SO_MAX_ATTEMPTS || Date.now() - started > SO_DEADLINE_MS) {
      throw new Error(`simultaneous open failed after ${attempts} attempts: ${outcome.code ?? outcome.message}`);
    }
  }
}

async function soPeer(job: SoJob): Promise<SoResult> {
  const t = await tstunExchange(job.serverPort, job.key);
  if (!t.peer) return { ok: false, error: `no answer from T-STUN: "${t.raw}" ${t.error ?? ''}` };
  const { socket, attempts } = await simultaneousOpen(t.localPort, t.peer);
  const local = { address: socket.localAddress ?? '', port: socket.localPort ?? 0 };
  const remote = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
  const received = await new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('error', reject);
    socket.once('close', () => {
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    socket.end(`hello from ${job.name}`);
  });
  return { ok: true, tstunLocalPort: t.localPort, peer: t.peer, local, remote, attempts, received };
}

function runSoPeer(job: SoJob): Promise<SoResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: job });
    let result: SoResult | undefined;
    const guard = setTimeout(() => {
      void worker.terminate();
    }, SO_DEADLINE_MS + 10_000);
    worker.once('message', (m: SoResult) => {
      result = m;
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      clearTimeout(guard);
      if (result) resolve(result);
      else reject(new Error(`worker ${job.name} exited with ${code} and no result`));
    });
  });
}

if (!isMainThread) {
  soPeer(workerData as SoJob).then(
    (r) => {
      parentPort?.postMessage(r);
    },
    (err: unknown) => {
      parentPort?.postMessage({ ok: false, error: err instanceof Error ? err.message : String(err) } satisfies SoResult);
    },
  );
} else {
  describe('T-STUN server over loopback (real sockets)', () => {
    const held = () => process.getActiveResourcesInfo().filter((r) => /TCP|Timeout|Worker|MessagePort/.test(r));
    const before = held().length;
    after(async () => {
      // uv handles finish closing on the next turns of the loop.
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      assert.equal(held().length, before, `leaked: ${held().join(', ')}`);
    });

    it('tells two punchhole-style clients each other’s address, exactly "<ip> <port>"', async () => {
      await withServer('127.0.0.1:0', async (server, rec) => {
        const a = tstunExchange(server.address.port, 'pairing key');
        await rec.until('waiting');
        const [ra, rb] = await Promise.all([a, tstunExchange(server.address.port, 'pairing key')]);
        assert.equal(ra.raw, `127.0.0.1 ${rb.localPort}`);
        assert.equal(rb.raw, `127.0.0.1 ${ra.localPort}`);
        assert.equal(ra.error, undefined);
        assert.equal(server.stats.pairs, 1);
        await rec.until('paired');
      });
    });

    it('pairs three clients with one key as 1+2, then the third with a fourth', async () => {
      await withServer('127.0.0.1:0', async (server, rec) => {
        const port = server.address.port;
        const one = tstunExchange(port, 'shared');
        await rec.until('waiting', 1);
        const two = tstunExchange(port, 'shared');
        const [r1, r2] = await Promise.all([one, two]);
        assert.equal(r1.peer?.port, r2.localPort);
        assert.equal(r2.peer?.port, r1.localPort);

        let threeDone = false;
        const three = tstunExchange(port, 'shared').then((r) => {
          threeDone = true;
          return r;
        });
        await rec.until('waiting', 2);
        assert.equal(server.stats.waiting, 1);
        assert.equal(threeDone, false, 'the third client must wait, not get an empty answer');
        const [r3, r4] = await Promise.all([three, tstunExchange(port, 'shared')]);
        assert.equal(r3.peer?.port, r4.localPort);
        assert.equal(r4.peer?.port, r3.localPort);
        assert.equal(server.stats.pairs, 2);
      });
    });

    it('on a dual-stack listener shows IPv4 clients as dotted quads and IPv6 clients as IPv6', async () => {
      await withServer('[::]:0', async (server, rec) => {
        const v4 = tstunExchange(server.address.port, 'mixed', { host: '127.0.0.1' });
        await rec.until('waiting');
        const [r4, r6] = await Promise.all([v4, tstunExchange(server.address.port, 'mixed', { host: '::1' })]);
        assert.equal(r4.raw, `::1 ${r6.localPort}`);
        assert.equal(r6.raw, `127.0.0.1 ${r4.localPort}`);
      });
    });

    it('answers a client that never half-closes', async () => {
      await withServer('127.0.0.1:0', async (server, rec) => {
        const a = tstunExchange(server.address.port, 'no eof', { halfClose: false });
        await rec.until('waiting');
        const [ra, rb] = await Promise.all([a, tstunExchange(server.address.port, 'no eof', { halfClose: false })]);
        assert.equal(ra.peer?.port, rb.localPort);
        assert.equal(rb.peer?.port, ra.localPort);
      });
    });

    it('drops a key that is too long or too short without an answer', async () => {
      await withServer('127.0.0.1:0', async (server, rec) => {
        const long = await tstunExchange(server.address.port, '', { payload: Buffer.concat([sha256('x'), Buffer.from('\n')]) });
        const short = await tstunExchange(server.address.port, '', { payload: sha256('x').subarray(0, 31) });
        assert.equal(long.raw, '');
        assert.equal(short.raw, '');
        assert.equal(server.stats.rejected['key-too-long'], 1);
        assert.equal(server.stats.rejected['key-too-short'], 1);
        await rec.until('rejected', 2);
      });
    });

    it('never pairs with a client that reset its connection while waiting', async () => {
      await withServer('127.0.0.1:0', async (server, rec) => {
        const port = server.address.port;
        const quitter = net.connect({ host: '127.0.0.1', port });
        quitter.on('error', () => undefined);
        quitter.once('connect', () => {
          quitter.write(sha256('abandoned'));
        });
        await rec.until('waiting');
        quitter.resetAndDestroy();
        await rec.until('left');
        const b = tstunExchange(port, 'abandoned');
        await rec.until('waiting', 2);
        assert.equal(server.stats.pairs, 0);
        const [rb, rc] = await Promise.all([b, tstunExchange(port, 'abandoned')]);
        assert.equal(rb.peer?.port, rc.localPort);
        assert.equal(rc.peer?.port, rb.localPort);
      });
    });

    it('closes on a lone client after the partner timeout, from its own timer', async () => {
      await withServer('127.0.0.1:0', async (server, rec) => {
        const started = Date.now();
        const lone = await tstunExchange(server.address.port, 'nobody else');
        assert.equal(lone.raw, '');
        assert.ok(Date.now() - started >= 150, 'closed before the timeout');
        assert.equal(server.stats.timedOut.partner, 1);
        await rec.until('timed-out');
      }, { partnerTimeoutMs: 200 });
    });

    it('drops waiting clients and stops listening on close()', async () => {
      const rec = recorder();
      const server = await startTstunServer({ listen: '127.0.0.1:0', onEvent: (e) => { rec.onEvent(e); } });
      const waiting = tstunExchange(server.address.port, 'never answered');
      await rec.until('waiting');
      await server.close();
      await server.close(); // idempotent
      assert.equal((await waiting).raw, '');
      const refused = await tstunExchange(server.address.port, 'late');
      assert.equal(refused.error, 'ECONNREFUSED');
    });

    it('stops on abort and releases its port', async () => {
      const controller = new AbortController();
      const server = await startTstunServer({ listen: '127.0.0.1:0', signal: controller.signal });
      const port = server.address.port;
      controller.abort();
      await server.close(); // the same promise as the abort's
      const again = await startTstunServer({ listen: `127.0.0.1:${port}` });
      await again.close();
      await assert.rejects(startTstunServer({ listen: '127.0.0.1:0', signal: controller.signal }));
    });

    it('explains a port in use and a bad --tstun value as USAGE errors', async () => {
      const first = await startTstunServer({ listen: '127.0.0.1:0' });
      try {
        await assert.rejects(
          startTstunServer({ listen: `127.0.0.1:${first.address.port}` }),
          (e: unknown) => e instanceof BurrowError && e.code === 'BIND_FAILED' && e.details.role === 'tstun' && /EADDRINUSE/.test(e.message) && /another socket already uses it/.test(e.message),
        );
      } finally {
        await first.close();
      }
      for (const listen of ['127.0.0.1:99999', 'example.org:3477', '[::1']) {
        await assert.rejects(startTstunServer({ listen }), (e: unknown) => e instanceof BurrowError && e.code === 'INVALID_OPTION' && e.details.option === 'tstun');
      }
    });

    const cpus = availableParallelism();
    it(
      'end to end: two clients learn each other’s address and connect by TCP simultaneous open from the same ports',
      { skip: cpus < 2 ? `needs two CPUs for the SYNs to cross on loopback (have ${cpus})` : false },
      async (t) => {
        await withServer('127.0.0.1:0', async (server) => {
          const job = (name: string): SoJob => ({ serverPort: server.address.port, key: 'e2e pairing key', name });
          const [a, b] = await Promise.all([runSoPeer(job('a')), runSoPeer(job('b'))]);
          assert.ok(a.ok, a.ok ? '' : a.error);
          assert.ok(b.ok, b.ok ? '' : b.error);
          t.diagnostic(`connect() attempts until the SYNs crossed: a ${a.attempts}, b ${b.attempts}`);
          // Each connected from the port it used towards the server, to the port the server named.
          assert.equal(a.local.port, a.tstunLocalPort);
          assert.equal(b.local.port, b.tstunLocalPort);
          assert.deepEqual(a.remote, a.peer);
          assert.deepEqual(b.remote, b.peer);
          assert.equal(a.peer.port, b.tstunLocalPort);
          assert.equal(b.peer.port, a.tstunLocalPort);
          assert.equal(a.received, 'hello from b');
          assert.equal(b.received, 'hello from a');
          assert.equal(server.stats.pairs, 1);
        });
      },
    );
  });
}
