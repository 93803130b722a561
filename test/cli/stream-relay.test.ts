/**
 * Relayed streams end to end on loopback: real `burrow pipe`, `send` and `receive` processes and a real `burrow serve`.
 * - `--relay only`: the bytes go through the server's stream relay, intact both ways; JSON says path relay and names
 *   the relay.
 * - Direct impossible: each peer reaches the server through a NAT-like TCP proxy (a public address of its own per
 *   peer, nothing admitted from outside), so simultaneous open only meets resets. `--relay auto` falls back to the
 *   relay; `--relay never` exits 5 saying relaying was off.
 * - The relay path rewriting a byte aborts the receiver with exit 7 (tamper guarantee over the relay).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCli, startServe } from '../support/cli.js';

const SECRET = 'stream relay cli secret';
const env = { BURROW_SECRET: SECRET };
const pipe = (server: string, as: string, to: string, ...more: string[]) => ['pipe', '--server', server, '--as', as, '--to', to, '--timeout', '10', ...more];
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

interface Proxy {
  readonly address: string;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of the server that behaves like one NAT per peer: a connection from 127.0.0.N leaves from
 * 127.0.0.(N+10), so the server sees each peer at an address of its own, and nothing connects in (a SYN to a
 * "mapped" port meets a socket connected elsewhere: reset). With `tamperAt`, the byte at that offset of the
 * server-to-client direction of each connection is flipped (only relayed streams carry that much).
 */
async function natProxy(server: string, tamperAt?: number): Promise<Proxy> {
  const [host = '', port = ''] = server.split(':');
  const sockets = new Set<net.Socket>();
  const listener = net.createServer((inside) => {
    const outsideAddress = (inside.remoteAddress ?? '').replace(/^127\.0\.0\.(\d+)$/, (_, n: string) => `127.0.0.${Number(n) + 10}`);
    const outside = net.connect({ host, port: Number(port), localAddress: outsideAddress });
    sockets.add(inside);
    sockets.add(outside);
    let seen = 0;
    outside.on('data', (chunk: Buffer) => {
      if (tamperAt !== undefined && seen <= tamperAt && tamperAt < seen + chunk.length) chunk[tamperAt - seen] = (chunk[tamperAt - seen] ?? 0) ^ 0x01;
      seen += chunk.length;
      if (!inside.write(chunk)) {
        outside.pause();
        inside.once('drain', () => outside.resume());
      }
    });
    inside.pipe(outside);
    const end = (): void => {
      inside.destroy();
      outside.destroy();
    };
    for (const s of [inside, outside]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(listener.address() as net.AddressInfo).port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => listener.close(() => { resolve(); }));
    },
  };
}

/** The JSON summary pipe writes on stderr with --format json. */
function summary(stderr: string): Record<string, unknown> {
  const line = stderr.split('\n').find((l) => l.startsWith('{'));
  assert.ok(line, stderr);
  return JSON.parse(line) as Record<string, unknown>;
}

describe('relayed streams (burrow pipe, send, receive through burrow serve)', () => {
  it('--relay only: pipe goes through the server\'s stream relay, intact both ways; JSON says path relay and names the relay', async () => {
    const server = await startServe(SECRET);
    try {
      const one = randomBytes(2 * 1024 * 1024 + 5);
      const two = randomBytes(300_001);
      const [a, b] = await Promise.all([
        runCli(pipe(server.address, 'alice', 'bob', '--relay', 'only', '--format', 'json'), env, one),
        runCli(pipe(server.address, 'bob', 'alice', '--relay', 'only'), env, two),
      ]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(sha(b.stdoutBytes), sha(one));
      assert.equal(sha(a.stdoutBytes), sha(two));
      const s = summary(a.stderr);
      assert.equal(s.path, 'relay');
      assert.deepEqual(s.relay, { kind: 'builtin', server: server.address });
      assert.match(b.stderr, new RegExp(`connected to alice through the stream relay at ${server.address.replace(/\./g, '\\.')} in \\d+ ms`));
    } finally {
      await server.stop();
    }
  });

  it('--relay only: send and receive a file through the relay, verified; both JSON results say path relay', async () => {
    const server = await startServe(SECRET);
    const dir = await mkdtemp(join(tmpdir(), 'burrow-srelay-'));
    try {
      const data = randomBytes(4 * 1024 * 1024 + 3);
      await writeFile(join(dir, 'blob.bin'), data);
      const out = join(dir, 'out');
      await mkdir(out);
      const common = ['--server', server.address, '--timeout', '10', '--relay', 'only', '--format', 'json'];
      const [r, s] = await Promise.all([
        runCli(['receive', ...common, '--as', 'bob', '--to', 'alice', '--out', out, '--yes'], env),
        runCli(['send', join(dir, 'blob.bin'), ...common, '--as', 'alice', '--to', 'bob'], env),
      ]);
      assert.equal(s.code, 0, s.stderr);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha(await readFile(join(out, 'blob.bin'))), sha(data));
      for (const run of [s, r]) {
        const j = JSON.parse(run.stdout) as Record<string, unknown>;
        assert.equal(j.path, 'relay');
        assert.deepEqual(j.relay, { kind: 'builtin', server: server.address });
      }
    } finally {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('direct impossible: --relay auto falls back to the relay after its 3 s wait; --relay never exits 5 saying relaying was off', async () => {
    const server = await startServe(SECRET);
    const proxy = await natProxy(server.address);
    try {
      const one = randomBytes(500_000);
      const [a, b] = await Promise.all([
        runCli(pipe(proxy.address, 'alice', 'bob', '--local', '127.0.0.2:0', '--format', 'json', '--send-only'), env, one),
        runCli(pipe(proxy.address, 'bob', 'alice', '--local', '127.0.0.3:0', '--recv-only'), env),
      ]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(sha(b.stdoutBytes), sha(one));
      const s = summary(a.stderr);
      assert.equal(s.path, 'relay');
      assert.deepEqual(s.relay, { kind: 'builtin', server: proxy.address });
      assert.ok(typeof s.connectMs === 'number' && s.connectMs >= 3000, `relayed after ${String(s.connectMs)} ms, before the 3 s wait`);
      assert.match(b.stderr, /no direct TCP path yet; trying the stream relay at 127\.0\.0\.1:\d+ too\n.*connected to alice through the stream relay/s);

      // 5 s: longer than the 3 s overlap after which a partner's give-up is a diagnosis (NO_PATH), not PEER_LEFT.
      const [c, d] = await Promise.all([
        runCli(['pipe', '--server', proxy.address, '--as', 'carol', '--to', 'dave', '--timeout', '5', '--local', '127.0.0.4:0', '--relay', 'never'], env, Buffer.alloc(0)),
        runCli(['pipe', '--server', proxy.address, '--as', 'dave', '--to', 'carol', '--timeout', '5', '--local', '127.0.0.5:0', '--relay', 'never'], env, Buffer.alloc(0)),
      ]);
      for (const run of [c, d]) {
        assert.equal(run.code, 5, run.stderr);
        assert.match(run.stderr, /TCP connection attempts failed .* No relay either: relaying was turned off for this attempt/);
        assert.match(run.stderr, /without --relay never to relay the stream through the server/);
      }
    } finally {
      await proxy.close();
      await server.stop();
    }
  });

  it('tamper: a byte rewritten on the relay path aborts the receiver with exit 7, nothing unauthenticated written', async () => {
    const server = await startServe(SECRET);
    const proxy = await natProxy(server.address, 200_000);
    try {
      const data = randomBytes(1024 * 1024);
      const [a, b] = await Promise.all([
        runCli(pipe(proxy.address, 'alice', 'bob', '--local', '127.0.0.2:0', '--relay', 'only', '--send-only'), env, data),
        runCli(pipe(proxy.address, 'bob', 'alice', '--local', '127.0.0.3:0', '--relay', 'only', '--recv-only'), env),
      ]);
      assert.equal(b.code, 7, b.stderr);
      assert.match(b.stderr, /failed authentication/);
      assert.notEqual(a.code, 0, a.stderr);
      // What was written out is a prefix of what was sent: authenticated records only.
      assert.ok(b.stdoutBytes.length < data.length);
      assert.ok(data.subarray(0, b.stdoutBytes.length).equals(b.stdoutBytes));
    } finally {
      await proxy.close();
      await server.stop();
    }
  });
});
