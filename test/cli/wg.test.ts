/**
 * `burrow wg` as a process, for the failures that need no NAT lab: usage (2), `wg` missing (11), no such interface (10),
 * and a real server on loopback that answers WireGuard's handshake and WG-SYNC over real sockets.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { decodeWgSync, encodeWgSync } from '../../src/codec/wg-messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { consumeResponse, createInitiation, publicKeyOf, sealTransport, tai64n } from '../../src/crypto/wireguard.js';
import { startServer } from '../../src/node/server.js';
import { runCli } from '../support/cli.js';

const SECRET = 'wg cli test secret';

function hasWg(): boolean {
  try {
    execFileSync('wg', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('burrow wg (CLI)', () => {
  it('usage errors exit 2 and say which flag', async () => {
    const r = await runCli(['wg', '--server', '127.0.0.1:3478'], { BURROW_SECRET: SECRET });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--interface IFACE is required/);
    const i = await runCli(['wg', '--interface', 'wg0', '--server', '127.0.0.1:3478', '--interval', '0.5'], { BURROW_SECRET: SECRET });
    assert.equal(i.code, 2);
    assert.match(i.stderr, /below the 1 s minimum/);
    // Relayed paths only need burrow to stay on as the proxy.
    const only = await runCli(['wg', '--interface', 'wg0', '--server', '127.0.0.1:3478', '--relay', 'only'], { BURROW_SECRET: SECRET });
    assert.equal(only.code, 2, only.stderr);
    assert.match(only.stderr, /relayed paths only need continuous mode/);
    const bad = await runCli(['wg', '--interface', 'wg0', '--server', '127.0.0.1:3478', '--relay', 'sometimes'], { BURROW_SECRET: SECRET });
    assert.equal(bad.code, 2, bad.stderr);
  });

  it('`wg` missing: exit 11 with what to install', async () => {
    const r = await runCli(['wg', '--interface', 'bwnope0', '--server', '127.0.0.1:3478'], { BURROW_SECRET: SECRET, BURROW_WG: '/nonexistent/wg' });
    assert.equal(r.code, 11, r.stderr);
    assert.match(r.stderr, /was not found.*install wireguard-tools/s);
  });

  it('no such interface: exit 10 with how to check', { skip: hasWg() || process.env.CI === 'true' ? false : 'wg is not installed' }, async () => {
    const r = await runCli(['wg', '--interface', `bwx${randomBytes(3).toString('hex')}`, '--server', '127.0.0.1:3478'], { BURROW_SECRET: SECRET });
    assert.equal(r.code, 10, r.stderr);
    assert.match(r.stderr, /cannot be read.*wg show interfaces/s);
  });
});

describe('burrow serve answers WireGuard on its UDP port (loopback, real sockets)', () => {
  it('a WireGuard handshake from one socket, then WG-SYNC from another, reports the first socket as the endpoint', async () => {
    const keys = deriveNetworkKeys(Buffer.from(SECRET));
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, tcp: false, metrics: { listen: '127.0.0.1:0' } });
    const wgSock = dgram.createSocket('udp4');
    const syncSock = dgram.createSocket('udp4');
    try {
      await new Promise<void>((r) => wgSock.bind(0, '127.0.0.1', r));
      await new Promise<void>((r) => syncSock.bind(0, '127.0.0.1', r));
      const port = server.address.port;
      const next = (s: dgram.Socket): Promise<Buffer> => new Promise((r) => { s.once('message', (m) => { r(m); }); });
      const priv = randomBytes(32);
      const init = createInitiation(priv, keys.wireguard.publicKey, randomBytes(32), 42, tai64n(Date.now()));
      const gotResponse = next(wgSock);
      wgSock.send(init.packet, port, '127.0.0.1');
      const response = await gotResponse;
      assert.equal(response.length, 92);
      const session = consumeResponse(init, response, keys.wireguard.presharedKey);
      assert.ok(session);
      wgSock.send(sealTransport(session.receiverIndex, 0n, session.sendKey, new Uint8Array(0)), port, '127.0.0.1');
      // Ask about that interface from another socket (another "peer").
      const other = randomBytes(32);
      const facts = { txid: randomBytes(12), networkId: keys.networkId, timestamp: Date.now(), key: publicKeyOf(other), listenPort: 1, hosts: [], mapping: 'unknown' as const };
      let endpoint: { address: string; port: number } | undefined;
      for (let i = 0; i < 20 && !endpoint; i++) {
        const got = next(syncSock);
        const round = { ...facts, txid: randomBytes(12), timestamp: Date.now() };
        // No proof: lookups need only the network secret (an announcement would need the server's proof key).
        syncSock.send(encodeWgSync({ kind: 'wg-sync', ...round, query: [publicKeyOf(priv)], proof: undefined }, keys.clientToServer), port, '127.0.0.1');
        const d = decodeWgSync(await got);
        assert.ok(d.ok && d.msg.kind === 'wg-sync-ok');
        endpoint = d.msg.peers[0]?.endpoint;
        if (!endpoint) await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(endpoint, { address: '127.0.0.1', port: wgSock.address().port });
      // The metrics endpoint saw it all.
      const m = server.metricsAddress;
      assert.ok(m);
      const text = await (await fetch(`http://127.0.0.1:${m.port}/metrics`)).text();
      const value = (name: string): number => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
      assert.equal(value('burrow_wg_handshakes_total'), 1);
      assert.equal(value('burrow_wg_confirmations_total'), 1);
      assert.ok(value('burrow_wg_syncs_total') >= 1);
      assert.equal(value('burrow_wg_interfaces'), 1);
    } finally {
      wgSock.close();
      syncSock.close();
      await server.close();
    }
  });
});
