/**
 * `connectStream()` with the stream relay, as a library, on loopback through a real server: the result of a relayed
 * stream, and the relay wait ended by the caller's AbortSignal (the connection waiting at the server is closed at
 * once, not left for the server's 30 s wait or the caller's deadline).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isBurrowError } from '../../src/errors.js';
import { startServer } from '../../src/node/server.js';
import { connectStream } from '../../src/node/tcp-punch.js';

const SECRET = 'connect stream relay secret';

describe('connectStream through the stream relay (library, loopback)', () => {
  it("relay 'only': resolves with path relay, the server named, and a stream that carries bytes both ways", async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false });
    try {
      const at = `127.0.0.1:${server.tcpAddress?.port ?? 0}`;
      const relays: string[] = [];
      const [a, b] = await Promise.all([
        connectStream({ server: at, secret: SECRET, name: 'alice', peer: 'bob', relay: 'only', timeoutMs: 10_000, onRelay: (s) => relays.push(s) }),
        connectStream({ server: at, secret: SECRET, name: 'bob', peer: 'alice', relay: 'only', timeoutMs: 10_000 }),
      ]);
      assert.deepEqual(relays, [at]);
      for (const c of [a, b]) {
        assert.equal(c.result.path, 'relay');
        assert.deepEqual(c.result.relay, { kind: 'builtin', server: at });
        assert.equal(`${c.result.remoteAddress}:${c.result.remotePort}`, at);
      }
      const got = new Promise<string>((resolve) => b.stream.once('data', (d: Buffer) => { resolve(d.toString()); }));
      a.stream.write('over the relay');
      assert.equal(await got, 'over the relay');
      assert.equal(server.streamRelay?.sessions, 1);
      a.stream.destroy();
      b.stream.destroy();
    } finally {
      await server.close();
    }
  });

  it('an abort while waiting at the relay for the partner rejects with ABORTED at once', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false });
    try {
      const at = `127.0.0.1:${server.tcpAddress?.port ?? 0}`;
      const aliceAbort = new AbortController();
      const bobAbort = new AbortController();
      // bob never comes to the relay (--relay never): alice waits there until she aborts.
      const bob = connectStream({ server: at, secret: SECRET, name: 'bob', peer: 'alice', relay: 'never', timeoutMs: 20_000, signal: bobAbort.signal }).catch((e: unknown) => e);
      let abortedAt = 0;
      const alice = connectStream({
        server: at, secret: SECRET, name: 'alice', peer: 'bob', relay: 'only', timeoutMs: 20_000, signal: aliceAbort.signal,
        onRelay: () => {
          setTimeout(() => {
            abortedAt = Date.now();
            aliceAbort.abort();
          }, 300);
        },
      });
      await assert.rejects(alice, (e: unknown) => isBurrowError(e) && e.code === 'ABORTED');
      // Well inside the 20 s deadline and the server's 30 s wait: the abort, not a timer, ended it.
      assert.ok(Date.now() - abortedAt < 5000);
      bobAbort.abort();
      const bobError = await bob;
      assert.ok(isBurrowError(bobError), String(bobError));
    } finally {
      await server.close();
    }
  });
});
