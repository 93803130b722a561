/** The library through real UDP sockets on loopback: punch, handoff, abort, STUN, and no leaks. */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, describe, it } from 'node:test';
import { punch, startServer, stunQuery, BurrowError } from '../../src/index.js';

const SECRET = 'loopback secret';

/** The handoff contract: fresh sockets on the printed local ports exchange datagrams with the printed remotes. */
async function exchange(aPort: number, aRemote: { address: string; port: number }, bPort: number, bRemote: { address: string; port: number }): Promise<void> {
  const open = (port: number) =>
    new Promise<dgram.Socket>((resolve, reject) => {
      const s = dgram.createSocket('udp4');
      s.once('error', reject);
      s.bind(port, '127.0.0.1', () => {
        resolve(s);
      });
    });
  const [a, b] = await Promise.all([open(aPort), open(bPort)]);
  try {
    const got = (s: dgram.Socket, from: { address: string; port: number }) =>
      new Promise<string>((resolve) => {
        s.on('message', (m, r) => {
          if (r.address === from.address && r.port === from.port) resolve(m.toString());
        });
      });
    const pa = got(a, aRemote);
    const pb = got(b, bRemote);
    a.send('from a', aRemote.port, aRemote.address);
    b.send('from b', bRemote.port, bRemote.address);
    assert.deepEqual(await Promise.all([pa, pb]), ['from b', 'from a']);
  } finally {
    await Promise.all([a, b].map((s) => new Promise<void>((r) => s.close(() => { r(); }))));
  }
}

describe('punch over loopback (real sockets)', () => {
  const leaked = () => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap' || r === 'Timeout');
  const before = leaked().length;
  after(async () => {
    // Every socket and timer the library opened is gone once its promises settle (uv handles finish
    // closing on the next turn of the loop).
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(leaked().length, before, `leaked: ${leaked().join(', ')}`);
  });

  it('two peers connect through a real server, and the handoff contract holds', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET] });
    try {
      const addr = `127.0.0.1:${server.address.port}`;
      const events: string[] = [];
      const [a, b] = await Promise.all([
        punch({ server: addr, secret: SECRET, name: 'alice', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 5000, onEvent: (e) => events.push(e.type) }),
        punch({ server: addr, secret: SECRET, name: 'bob', peer: 'alice', local: '127.0.0.1:0', timeoutMs: 5000 }),
      ]);
      assert.equal(a.remotePort, b.localPort);
      assert.equal(b.remotePort, a.localPort);
      assert.deepEqual(events.filter((e) => e === 'registered' || e === 'introduced' || e === 'connected'), ['registered', 'introduced', 'connected']);
      assert.equal(server.stats.introductions >= 1, true);
      await exchange(a.localPort, { address: a.remoteAddress, port: a.remotePort }, b.localPort, { address: b.remoteAddress, port: b.remotePort });
    } finally {
      await server.close();
    }
  });

  it('stops at once on abort, releasing its port', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET] });
    try {
      const controller = new AbortController();
      const p = punch({ server: `127.0.0.1:${server.address.port}`, secret: SECRET, name: 'alice', peer: 'nobody', local: '127.0.0.1:0', signal: controller.signal });
      setTimeout(() => {
        controller.abort();
      }, 100);
      await assert.rejects(p, (e: unknown) => e instanceof BurrowError && e.code === 'ABORTED');
    } finally {
      await server.close();
    }
  });

  it('on abort, the withdrawal leaves before the socket closes: the server holds no registration afterwards', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET] });
    try {
      const controller = new AbortController();
      const p = punch({
        server: `127.0.0.1:${server.address.port}`, secret: SECRET, name: 'alice', peer: 'nobody', local: '127.0.0.1:0', signal: controller.signal,
        onEvent: (e) => {
          if (e.type === 'registered') controller.abort();
        },
      });
      await assert.rejects(p, (e: unknown) => e instanceof BurrowError && e.code === 'ABORTED');
      for (let i = 0; i < 50 && server.registrations > 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(server.registrations, 0, 'the aborted punch is still registered');
      assert.equal(server.stats.withdrawals, 1);
    } finally {
      await server.close();
    }
  });

  it('reports a wrong secret as AUTH_FAILED (exit code 3)', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET] });
    try {
      await assert.rejects(
        punch({ server: `127.0.0.1:${server.address.port}`, secret: 'not the secret', name: 'alice', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 5000 }),
        (e: unknown) => e instanceof BurrowError && e.code === 'AUTH_FAILED',
      );
    } finally {
      await server.close();
    }
  });

  it('stunQuery reads our mapped address from the server', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET] });
    try {
      const mapped = await stunQuery({ server: `127.0.0.1:${server.address.port}`, local: '127.0.0.1:0' });
      assert.equal(mapped.address, '127.0.0.1');
      assert.ok(mapped.port > 0);
      assert.equal(server.stats.stunBindings, 1);
    } finally {
      await server.close();
    }
  });

  it('rejects bad options with USAGE (exit code 2) before touching the network', async () => {
    await assert.rejects(punch({ server: '127.0.0.1:1', secret: SECRET, name: 'same', peer: 'same' }), (e: unknown) => e instanceof BurrowError && (e.code === 'USAGE' || e.code === 'INVALID_OPTION'));
    await assert.rejects(punch({ server: 'nonsense:port', secret: SECRET, name: 'a', peer: 'b' }), (e: unknown) => e instanceof BurrowError && (e.code === 'USAGE' || e.code === 'INVALID_OPTION'));
    await assert.rejects(punch({ server: '127.0.0.1:1', secret: '', name: 'a', peer: 'b' }), (e: unknown) => e instanceof BurrowError && (e.code === 'USAGE' || e.code === 'INVALID_OPTION'));
  });
});
