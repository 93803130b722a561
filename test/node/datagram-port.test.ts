/**
 * The server's main UDP socket (src/node/datagram-port.ts): the native batched addon (native/udp_batch.c) and the
 * dgram fallback, through real loopback sockets. Every datagram arrives once, with its bytes and its true source,
 * whatever its size (empty, 1,200 bytes, longer than a slot); sends reach IPv4 and IPv6 peers from a dual-stack
 * socket; two sockets share a port with SO_REUSEPORT; nothing is left open.
 *
 * The addon is built by `npm ci`; in CI it must be there (a missing addon fails the run, it is not skipped).
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Endpoint } from '../../src/codec/address.js';
import { chooseBackend, nativeUdp, openDatagramPort, type DatagramPort } from '../../src/node/datagram-port.js';
import { startServer, stunQuery } from '../../src/index.js';

const native = nativeUdp();
const haveNative = 'addon' in native;
const skipNative = haveNative ? false : process.env.CI === 'true' ? false : `the native UDP addon is not built here (${'error' in native ? native.error : ''})`;

async function client(type: 'udp4' | 'udp6', address: string): Promise<{ socket: dgram.Socket; port: number; got: { data: Buffer; from: Endpoint }[] }> {
  const socket = dgram.createSocket({ type, ipv6Only: type === 'udp6' });
  const got: { data: Buffer; from: Endpoint }[] = [];
  socket.on('message', (data, rinfo) => got.push({ data, from: { address: rinfo.address, port: rinfo.port } }));
  await new Promise<void>((r) => socket.bind(0, address, r));
  return { socket, port: socket.address().port, got };
}

async function waitFor(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

describe('the main UDP socket', () => {
  const leaked = () => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap' || r === 'Timeout');
  const before = leaked().length;
  after(async () => {
    await sleep(10);
    assert.equal(leaked().length, before, `leaked: ${leaked().join(', ')}`);
  });

  it('the addon is built (it must be, in CI)', { skip: process.env.CI === 'true' ? false : haveNative ? false : 'not built here' }, () => {
    assert.ok(haveNative, 'error' in native ? native.error : '');
    assert.equal(chooseBackend('auto'), 'native');
    assert.equal(chooseBackend('dgram'), 'dgram');
  });

  for (const backend of ['native', 'dgram'] as const) {
    it(`${backend}: every datagram from many senders arrives once, with its bytes and source; answers reach them`, { skip: backend === 'native' ? skipNative : false }, async () => {
      const port: DatagramPort = await openDatagramPort(backend, { address: '127.0.0.1', port: 0, dualStack: false, recvBufferSize: 4 << 20 });
      const senders = await Promise.all(Array.from({ length: 20 }, (_, i) => client('udp4', `127.0.0.${10 + i}`)));
      const received: { from: Endpoint; data: Uint8Array }[] = [];
      port.start((from, data) => {
        received.push({ from, data });
        // Echo, so that the send path is exercised in batches too.
        port.send(from, data);
      });
      try {
        const sizes = [0, 1, 20, 28, 148, 1200, 2000];
        let sent = 0;
        for (let round = 0; round < 25; round++) {
          for (const [i, c] of senders.entries()) {
            const size = sizes[(round + i) % sizes.length] ?? 0;
            const payload = Buffer.alloc(size, (round * 31 + i) & 0xff);
            if (size >= 4) payload.writeUInt32BE(sent, 0);
            c.socket.send(payload, port.local.port, '127.0.0.1');
            sent++;
          }
        }
        await waitFor(() => received.length === sent, `${sent} datagrams (have ${received.length})`);
        await waitFor(() => senders.reduce((n, c) => n + c.got.length, 0) === sent, 'the echoes');
        for (const r of received) {
          const sender = senders.find((c) => c.port === r.from.port);
          assert.ok(sender, `unknown source ${r.from.address}:${r.from.port}`);
          assert.ok(r.from.address.startsWith('127.0.0.'));
        }
        for (const c of senders) {
          for (const g of c.got) assert.equal(g.from.port, port.local.port);
        }
        // The bytes are the caller's: later batches do not overwrite earlier datagrams.
        const long = received.filter((r) => r.data.length === 1200);
        assert.ok(long.length > 0 && long.every((r) => r.data.subarray(4).every((b) => b === r.data[4])));
        assert.ok(received.some((r) => r.data.length === 2000), 'a datagram longer than 1,200 bytes arrived whole');
      } finally {
        await Promise.all(senders.map((c) => new Promise<void>((r) => c.socket.close(() => { r(); }))));
        await port.close();
      }
    });

    it(`${backend}: a dual-stack socket hears IPv4 and IPv6 peers and answers both`, { skip: backend === 'native' ? skipNative : false }, async () => {
      let port: DatagramPort;
      try {
        port = await openDatagramPort(backend, { address: '::', port: 0, dualStack: true, recvBufferSize: 1 << 20 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAFNOSUPPORT' || (err as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL') return; // no IPv6 here
        throw err;
      }
      const v4 = await client('udp4', '127.0.0.1');
      let v6: Awaited<ReturnType<typeof client>> | undefined;
      try {
        v6 = await client('udp6', '::1');
      } catch {
        v6 = undefined; // IPv6 loopback is off here
      }
      const from: Endpoint[] = [];
      port.start((f, data) => {
        from.push(f);
        port.send(f, data);
      });
      try {
        v4.socket.send(Buffer.from('four'), port.local.port, '127.0.0.1');
        v6?.socket.send(Buffer.from('six'), port.local.port, '::1');
        await waitFor(() => v4.got.length === 1 && (v6 ? v6.got.length === 1 : true), 'both answers');
        assert.ok(from.some((f) => f.address === '127.0.0.1' && f.port === v4.port), 'the IPv4 peer is reported as IPv4, not ::ffff:');
        if (v6) assert.ok(from.some((f) => f.address === '::1' && f.port === v6.port));
      } finally {
        await new Promise<void>((r) => v4.socket.close(() => { r(); }));
        if (v6) await new Promise<void>((r) => v6.socket.close(() => { r(); }));
        await port.close();
      }
    });
  }

  it('native: two sockets share a port with SO_REUSEPORT, and the kernel spreads senders over them', { skip: skipNative }, async () => {
    const first = await openDatagramPort('native', { address: '127.0.0.1', port: 0, dualStack: false, recvBufferSize: 1 << 20, reusePort: true });
    const second = await openDatagramPort('native', { address: '127.0.0.1', port: first.local.port, dualStack: false, recvBufferSize: 1 << 20, reusePort: true });
    const counts = [0, 0];
    first.start(() => { counts[0]!++; });
    second.start(() => { counts[1]!++; });
    const senders = await Promise.all(Array.from({ length: 32 }, () => client('udp4', '127.0.0.1')));
    try {
      for (const c of senders) c.socket.send(Buffer.from('hello'), first.local.port, '127.0.0.1');
      await waitFor(() => counts[0]! + counts[1]! === 32, 'every datagram');
      assert.ok(counts[0]! > 0 && counts[1]! > 0, `spread ${counts.join('/')}`);
      // Without SO_REUSEPORT the port is taken: a second server cannot silently share it.
      await assert.rejects(openDatagramPort('native', { address: '127.0.0.1', port: first.local.port, dualStack: false, recvBufferSize: 1 << 20 }), (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE');
    } finally {
      await Promise.all(senders.map((c) => new Promise<void>((r) => c.socket.close(() => { r(); }))));
      await Promise.all([first.close(), second.close()]);
    }
  });

  it('native: closing is idempotent and sends after close are dropped quietly', { skip: skipNative }, async () => {
    const port = await openDatagramPort('native', { address: '127.0.0.1', port: 0, dualStack: false, recvBufferSize: 1 << 20 });
    port.start(() => undefined);
    await port.close();
    await port.close();
    port.send({ address: '127.0.0.1', port: 9 }, Buffer.from('late'));
  });

  it('the server runs on either socket and answers STUN on both', { skip: skipNative }, async () => {
    for (const udpBackend of ['native', 'dgram'] as const) {
      const server = await startServer({ listen: '127.0.0.1:0', secrets: ['port test'], udpBackend });
      try {
        assert.equal(server.udpBackend, udpBackend);
        const mapped = await stunQuery({ server: `127.0.0.1:${server.address.port}`, local: '127.0.0.1:0', timeoutMs: 3000 });
        assert.equal(mapped.address, '127.0.0.1');
      } finally {
        await server.close();
      }
    }
  });
});
