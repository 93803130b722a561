/** SecureStream over real TCP sockets on loopback, including a man in the middle that flips a byte. */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, it } from 'node:test';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { BurrowError } from '../../src/errors.js';
import { Cipher, RECORD_HEADER_BYTES, TAG_BYTES, type CipherId } from '../../src/codec/secure.js';
import { cipherPreference, connectReusingReads, SecureStream, StreamVersionError } from '../../src/node/secure-stream.js';

const KEYS = deriveNetworkKeys(Buffer.from('secure stream test'));

/** A TCP proxy on loopback that forwards both ways, flipping the byte at `flipAt` (counted A→B, or B→A with `toClient`). */
async function proxy(target: number, flipAt: number, toClient = false): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (inbound) => {
    const outbound = net.connect({ port: target, host: '127.0.0.1', allowHalfOpen: true });
    sockets.add(inbound).add(outbound);
    let seen = 0;
    const [from, to] = toClient ? [outbound, inbound] : [inbound, outbound];
    from.on('data', (d: Buffer) => {
      if (seen <= flipAt && flipAt < seen + d.length) d[flipAt - seen] = (d[flipAt - seen] ?? 0) ^ 0x20;
      seen += d.length;
      to.write(d);
    });
    from.on('end', () => to.end());
    to.pipe(from);
    for (const s of [inbound, outbound]) s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => { r(); }));
    },
  };
}

async function pair(flipAt?: number, ciphers: [CipherId[]?, CipherId[]?] = [], reuseReads = false, flipToClient = false) {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const mitm = flipAt === undefined ? undefined : await proxy(port, flipAt, flipToClient);
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = (reuseReads ? connectReusingReads : net.connect)({ port: mitm?.port ?? port, host: '127.0.0.1', allowHalfOpen: true });
  const inbound = await accepted;
  const opts = { authKey: KEYS.streamAuth, context: Buffer.from('ctx') };
  const [a, b] = await Promise.all([
    SecureStream.open(client, { ...opts, name: 'alice', peer: 'bob', ...(ciphers[0] ? { ciphers: ciphers[0] } : {}) }),
    SecureStream.open(inbound, { ...opts, name: 'bob', peer: 'alice', ...(ciphers[1] ? { ciphers: ciphers[1] } : {}) }),
  ]);
  return {
    a, b, client,
    close: async () => {
      a.destroy();
      b.destroy();
      await mitm?.close();
      await new Promise((r) => server.close(r));
    },
  };
}

describe('SecureStream over TCP', () => {
  it('delivers data both ways and finishes only after the peer confirmed delivery', async () => {
    const { a, b, close } = await pair();
    try {
      const got: Buffer[] = [];
      b.on('data', (d: Buffer) => got.push(d));
      b.on('end', () => {
        b.acknowledgeEnd();
      });
      a.on('data', () => undefined);
      a.on('end', () => {
        a.acknowledgeEnd();
      });
      const finished = new Promise((r) => a.once('finish', r));
      const payload = Buffer.alloc(5 * 1024 * 1024, 3);
      a.end(payload);
      b.end();
      await finished;
      assert.deepEqual(Buffer.concat(got), payload);
      assert.equal(a.bytesSent, payload.length);
    } finally {
      await close();
    }
  });

  it('aborts with STREAM_TAMPERED when a man in the middle flips one byte, releasing nothing altered', async () => {
    // Byte 2000 is well past the HELLO and FINISHED records: inside the first data record.
    const { a, b, close } = await pair(2000);
    try {
      const got: Buffer[] = [];
      b.on('data', (d: Buffer) => got.push(d));
      const failed = new Promise<unknown>((r) => b.once('error', r));
      a.on('error', () => undefined);
      a.write(Buffer.alloc(10_000, 0x61));
      const err = await failed;
      assert.ok(err instanceof BurrowError);
      assert.equal(err.code, 'STREAM_TAMPERED');
      assert.ok(Buffer.concat(got).every((x) => x === 0x61), 'altered data was released');
    } finally {
      await close();
    }
  });

  it('carries 40 MiB written in chunks of every size, with either cipher, intact and in order', async () => {
    for (const prefs of [[[Cipher.AES_256_GCM], [Cipher.AES_256_GCM]], [[Cipher.CHACHA20_POLY1305, Cipher.AES_256_GCM], [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305]]] as [CipherId[], CipherId[]][]) {
      const { a, b, close } = await pair(undefined, prefs);
      try {
        assert.equal(a.cipher, prefs[0][0] === Cipher.AES_256_GCM ? 'aes-256-gcm' : 'chacha20-poly1305');
        assert.equal(b.cipher, a.cipher);
        const payload = randomBytes(40 * 1024 * 1024);
        const got: Buffer[] = [];
        b.on('data', (d: Buffer) => got.push(d));
        b.on('end', () => {
          b.acknowledgeEnd();
        });
        a.on('data', () => undefined);
        a.on('end', () => {
          a.acknowledgeEnd();
        });
        const finished = new Promise((r) => a.once('finish', r));
        let at = 0;
        for (let i = 0; at < payload.length; i++) {
          const n = [1, 17, 4096, 65_536, 300_000, 1_048_576, 3_000_000][i % 7] ?? 1;
          if (!a.write(payload.subarray(at, at + n))) await new Promise((r) => a.once('drain', r));
          at += n;
        }
        a.end();
        b.end();
        await finished;
        assert.ok(Buffer.concat(got).equals(payload));
      } finally {
        await close();
      }
    }
  });

  it('gathers small writes into full 256 KiB records, yet a lone small write arrives without waiting for more', async () => {
    const { a, b, client, close } = await pair();
    try {
      const got: Buffer[] = [];
      let arrived = 0;
      let onArrival: (() => void) | undefined;
      b.on('data', (d: Buffer) => {
        got.push(d);
        arrived += d.length;
        onArrival?.();
      });
      b.on('end', () => {
        b.acknowledgeEnd();
      });
      a.on('end', () => {
        a.acknowledgeEnd();
      });
      a.resume();
      // A keystroke: nothing more follows, and it must not sit in the staging buffer.
      a.write(Buffer.from('k'));
      await new Promise<void>((r) => {
        onArrival = () => {
          if (arrived >= 1) r();
        };
      });
      assert.equal(Buffer.concat(got).toString(), 'k');
      // 8 MiB in 64 KiB writes within one turn (as a pipe delivers them): 32 records, not 128.
      const before = client.bytesWritten;
      const chunks = Array.from({ length: 128 }, (_, i) => Buffer.alloc(64 * 1024, i));
      for (const c of chunks) a.write(c);
      const finished = new Promise((r) => a.once('finish', r));
      a.end();
      b.end();
      await finished;
      const overhead = client.bytesWritten - before - 8 * 1024 * 1024;
      const perRecord = RECORD_HEADER_BYTES + 1 + TAG_BYTES;
      // 32 data records, then EOF and EOF_ACK (8 bytes of payload each).
      assert.equal(overhead, 32 * perRecord + 2 * (perRecord + 8), `overhead ${overhead}`);
      assert.ok(Buffer.concat(got).equals(Buffer.concat([Buffer.from('k'), ...chunks])));
    } finally {
      await close();
    }
  });

  it('a writer may refill its buffer as soon as the write callback ran (staged bytes are copies)', async () => {
    const { a, b, close } = await pair();
    try {
      const got: Buffer[] = [];
      b.on('data', (d: Buffer) => got.push(d));
      b.on('end', () => {
        b.acknowledgeEnd();
      });
      a.on('end', () => {
        a.acknowledgeEnd();
      });
      a.resume();
      const finished = new Promise((r) => a.once('finish', r));
      const buffer = Buffer.alloc(3000);
      const expected: Buffer[] = [];
      for (let i = 0; i < 300; i++) {
        buffer.fill(i % 251);
        expected.push(Buffer.from(buffer));
        await new Promise<void>((r, j) => {
          a.write(buffer, (err) => {
            if (err) j(err);
            else r();
          });
        });
      }
      // And one large write, sealed in place, after small ones still staged.
      a.write(Buffer.from('tail-'));
      const big = randomBytes(600_000);
      a.write(big);
      a.end();
      b.end();
      await finished;
      assert.ok(Buffer.concat(got).equals(Buffer.concat([...expected, Buffer.from('tail-'), big])));
    } finally {
      await close();
    }
  });

  it('over a socket that reads into one reused buffer: 40 MiB arrive intact both ways, with backpressure', async () => {
    const { a, b, close } = await pair(undefined, [], true);
    try {
      const toA = randomBytes(40 * 1024 * 1024);
      const toB = randomBytes(3 * 1024 * 1024);
      const gotA: Buffer[] = [];
      const gotB: Buffer[] = [];
      // A slow reader on the reused-buffer side: paused now and then, so the socket is paused too.
      a.on('data', (d: Buffer) => {
        gotA.push(d);
        if (gotA.length % 50 === 0) {
          a.pause();
          setTimeout(() => a.resume(), 2);
        }
      });
      a.on('end', () => {
        a.acknowledgeEnd();
      });
      b.on('data', (d: Buffer) => gotB.push(d));
      b.on('end', () => {
        b.acknowledgeEnd();
      });
      const finished = Promise.all([new Promise((r) => a.once('finish', r)), new Promise((r) => b.once('finish', r))]);
      let at = 0;
      for (let i = 0; at < toA.length; i++) {
        const n = [7, 65_536, 300_000, 1_048_576][i % 4] ?? 1;
        if (!b.write(toA.subarray(at, at + n))) await new Promise((r) => b.once('drain', r));
        at += n;
      }
      b.end();
      a.end(toB);
      await finished;
      assert.ok(Buffer.concat(gotA).equals(toA), 'B → A (reused reads) intact');
      assert.ok(Buffer.concat(gotB).equals(toB), 'A → B intact');
    } finally {
      await close();
    }
  });

  it('over a socket that reads into one reused buffer: a flipped byte aborts with STREAM_TAMPERED, releasing nothing altered', async () => {
    // Flipped on the way to the client (a), whose socket reads into the reused buffer.
    const { a, b, close } = await pair(2000, [], true, true);
    try {
      const got: Buffer[] = [];
      a.on('data', (d: Buffer) => got.push(d));
      const failed = new Promise<unknown>((r) => a.once('error', r));
      b.on('error', () => undefined);
      b.write(Buffer.alloc(10_000, 0x61));
      const err = await failed;
      assert.ok(err instanceof BurrowError);
      assert.equal(err.code, 'STREAM_TAMPERED');
      assert.ok(Buffer.concat(got).every((x) => x === 0x61), 'altered data was released');
    } finally {
      await close();
    }
  });

  it('a partner on stream protocol 1 fails the handshake at once with StreamVersionError (no retrying), saying to update', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const context = Buffer.from('ctx');
    // The old peer: sends a valid version-1 HELLO (it holds the secret) and waits.
    const inbound: net.Socket[] = [];
    server.on('connection', (s) => {
      inbound.push(s);
      s.on('error', () => undefined);
      const body = Buffer.concat([Buffer.from('BRW1'), Buffer.from([0x01, 3]), Buffer.from('bob'), Buffer.from([5]), Buffer.from('alice'), randomBytes(32), randomBytes(32)]);
      s.write(Buffer.concat([body, createHmac('sha256', KEYS.streamAuth).update('burrow/v1 hello').update(context).update(body).digest()]));
    });
    const client = net.connect({ port, host: '127.0.0.1' });
    try {
      const started = Date.now();
      const err = await SecureStream.open(client, { authKey: KEYS.streamAuth, context, name: 'alice', peer: 'bob', timeoutMs: 5000 }).then(
        () => assert.fail('opened'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof StreamVersionError);
      assert.equal(err.code, 'STREAM_BROKEN');
      assert.match(err.message, /"bob" runs an older Burrow \(stream protocol 1.*Run the same Burrow release on both sides/);
      assert.ok(Date.now() - started < 4000, 'it waited for the handshake timeout');
    } finally {
      client.destroy();
      for (const s of inbound) s.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it('cipherPreference lists both ciphers, fastest first, and stays the same within a process', () => {
    const p = cipherPreference();
    assert.deepEqual([...p].sort(), [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305].sort());
    assert.equal(cipherPreference(), p);
  });
});
