/** SecureStream over real TCP sockets on loopback, including a man in the middle that flips a byte. */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { BurrowError } from '../../src/errors.js';
import { SecureStream } from '../../src/node/secure-stream.js';

const KEYS = deriveNetworkKeys(Buffer.from('secure stream test'));

/** A TCP proxy on loopback that forwards both ways, flipping the byte at `flipAt` (counted A→B). */
async function proxy(target: number, flipAt: number): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (inbound) => {
    const outbound = net.connect({ port: target, host: '127.0.0.1', allowHalfOpen: true });
    sockets.add(inbound).add(outbound);
    let seen = 0;
    inbound.on('data', (d: Buffer) => {
      if (seen <= flipAt && flipAt < seen + d.length) d[flipAt - seen] = (d[flipAt - seen] ?? 0) ^ 0x20;
      seen += d.length;
      outbound.write(d);
    });
    inbound.on('end', () => outbound.end());
    outbound.pipe(inbound);
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

async function pair(flipAt?: number) {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const mitm = flipAt === undefined ? undefined : await proxy(port, flipAt);
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect({ port: mitm?.port ?? port, host: '127.0.0.1', allowHalfOpen: true });
  const inbound = await accepted;
  const opts = { authKey: KEYS.streamAuth, context: Buffer.from('ctx') };
  const [a, b] = await Promise.all([
    SecureStream.open(client, { ...opts, name: 'alice', peer: 'bob' }),
    SecureStream.open(inbound, { ...opts, name: 'bob', peer: 'alice' }),
  ]);
  return {
    a, b,
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
});
