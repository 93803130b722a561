/**
 * WireGuard over the relay on loopback (real sockets, the built-in relay of a real server): two `WgRelaySessions`, one
 * per "interface", meet under the names derived from the two keys and agree on a relayed path; a UDP socket standing
 * in for each side's WireGuard (bound to its listen port, as WireGuard is) sends to its proxy and reaches the other
 * side's socket, which sees it come from its own proxy — the endpoint `burrow wg` gives WireGuard.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { describe, it } from 'node:test';
import { endpointKey, type Endpoint } from '../../src/codec/address.js';
import { startServer } from '../../src/node/server.js';
import { WgRelaySessions } from '../../src/node/wg-relay.js';
import type { RelayInfo } from '../../src/node/punch.js';

const SECRET = 'wg relay loopback secret, long enough';
const KEY_A = Buffer.alloc(32, 0xa1).toString('base64');
const KEY_B = Buffer.alloc(32, 0xb2).toString('base64');

async function socket(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

describe('WireGuard over the relay (loopback)', () => {
  it('two sessions meet by key-derived names, relay datagrams between the two WireGuard ports both ways, and end cleanly', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, tcp: false });
    const wgA = await socket();
    const wgB = await socket();
    const a = new WgRelaySessions({ server: endpointKey(server.address), secret: SECRET, ownKey: KEY_A, timeoutMs: 8000 });
    const b = new WgRelaySessions({ server: endpointKey(server.address), secret: SECRET, ownKey: KEY_B, timeoutMs: 8000 });
    try {
      const ready = (sessions: WgRelaySessions, peer: string, port: number): Promise<{ proxy: Endpoint; relay: RelayInfo | undefined }> =>
        new Promise((resolve, reject) => {
          sessions.start(peer, port, {
            ready: (proxy, relay) => {
              resolve({ proxy, relay });
            },
            ended: (detail) => {
              reject(new Error(detail));
            },
          });
        });
      const [ra, rb] = await Promise.all([ready(a, KEY_B, wgA.address().port), ready(b, KEY_A, wgB.address().port)]);
      assert.equal(ra.proxy.address, '127.0.0.1');
      assert.equal(ra.relay?.kind, 'builtin');
      assert.equal(rb.relay?.kind, 'builtin');

      const got = { a: [] as string[], b: [] as string[] };
      const from = { a: new Set<string>(), b: new Set<string>() };
      wgA.on('message', (d, r) => {
        got.a.push(d.toString());
        from.a.add(`${r.address}:${r.port}`);
      });
      wgB.on('message', (d, r) => {
        got.b.push(d.toString());
        from.b.add(`${r.address}:${r.port}`);
      });
      const big = 'w'.repeat(1400); // about a WireGuard data packet at MTU 1420
      for (let i = 0; i < 20; i++) {
        wgA.send(`a${i}`, ra.proxy.port, ra.proxy.address);
        wgB.send(`b${i}`, rb.proxy.port, rb.proxy.address);
        if (i % 5 === 0) wgA.send(big, ra.proxy.port, ra.proxy.address);
        await new Promise((r) => setTimeout(r, 10));
      }
      const end = Date.now() + 3000;
      while ((got.a.length < 20 || got.b.length < 24) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      assert.equal(got.b.filter((x) => x.startsWith('a')).length, 20, 'every datagram from A reached B');
      assert.equal(got.b.filter((x) => x === big).length, 4, 'full-size datagrams pass');
      assert.equal(got.a.length, 20, `every datagram from B reached A: ${got.a.join(',')}`);
      // Each side's WireGuard sees the partner at its own proxy: the endpoint burrow sets.
      assert.deepEqual([...from.a], [endpointKey(ra.proxy)]);
      assert.deepEqual([...from.b], [endpointKey(rb.proxy)]);
      assert.equal(a.size, 1);
    } finally {
      await a.stopAll();
      await b.stopAll();
      assert.equal(a.size + b.size, 0);
      wgA.close();
      wgB.close();
      await server.close();
    }
  });
});
