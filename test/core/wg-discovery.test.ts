/** The WireGuard discovery decisions (sans-IO): which peers, which address, when to set, how to name a failure. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { WgDump, WgDumpPeer } from '../../src/codec/wg-dump.js';
import type { WgPeerInfo } from '../../src/codec/wg-messages.js';
import { chooseEndpoint, WgDiscovery } from '../../src/core/wg-discovery.js';

const k = (n: number): string => Buffer.alloc(32, n).toString('base64');
const SERVER_KEY = k(100);
const T = 1_800_000_000_000;

function peer(n: number, over: Partial<WgDumpPeer> = {}): WgDumpPeer {
  return { publicKey: k(n), presharedKey: undefined, endpoint: undefined, allowedIps: ['192.0.2.200/32'], latestHandshake: 0, rxBytes: 0, txBytes: 0, persistentKeepalive: 0, ...over };
}
function dump(peers: WgDumpPeer[]): WgDump {
  return { privateKey: new Uint8Array(32), publicKey: k(1), listenPort: 51820, peers };
}
function info(n: number, over: Partial<WgPeerInfo> = {}): WgPeerInfo {
  return { key: Buffer.alloc(32, n), announced: true, endpoint: { address: '198.51.100.6', port: 51820 }, ageSeconds: 1, listenPort: 51820, hosts: [{ address: '192.0.2.66', port: 51820 }], mapping: 'endpoint-independent', ...over };
}
const SELF = info(1, { endpoint: { address: '198.51.100.2', port: 51820 } });

describe('WireGuard discovery decisions', () => {
  it('leaves out the server peer and peers on the server\'s host', () => {
    const d = new WgDiscovery({ serverKey: SERVER_KEY, serverAddress: '203.0.113.1' });
    const t = d.targets(dump([peer(100), peer(2), peer(3, { endpoint: { address: '203.0.113.1', port: 51820 } })]));
    assert.deepEqual(t.peers.map((p) => p.publicKey), [k(2)]);
    assert.deepEqual(t.serverHost.map((p) => p.publicKey), [k(3)]);
  });

  it('uses the LAN address behind the same public address, the public one otherwise', () => {
    assert.deepEqual(chooseEndpoint(SELF, info(2)), { endpoint: { address: '198.51.100.6', port: 51820 }, lan: false });
    assert.deepEqual(chooseEndpoint(SELF, info(2, { endpoint: { address: '198.51.100.2', port: 40000 } })), { endpoint: { address: '192.0.2.66', port: 51820 }, lan: true });
    assert.equal(chooseEndpoint(SELF, info(2, { endpoint: undefined })), undefined);
  });

  it('prefers a LAN address on one of our subnets, and gives up a LAN address that brings no handshake', () => {
    const two = info(2, { endpoint: { address: '198.51.100.2', port: 40000 }, hosts: [{ address: '172.17.0.1', port: 51820 }, { address: '192.0.2.66', port: 51820 }] });
    assert.deepEqual(chooseEndpoint(SELF, two, [{ address: '192.0.2.3', port: 51820 }])?.endpoint, { address: '192.0.2.66', port: 51820 });
    const d = new WgDiscovery({ serverKey: SERVER_KEY, serverAddress: '203.0.113.1' });
    const infos = new Map([[k(2), two]]);
    const ours = [{ address: '192.0.2.3', port: 51820 }];
    let sets = d.update(dump([peer(2)]), SELF, infos, T, ours);
    assert.deepEqual(sets.map((x) => [x.endpoint.address, x.lan]), [['192.0.2.66', true]]);
    const onLan = dump([peer(2, { endpoint: { address: '192.0.2.66', port: 51820 } })]);
    assert.deepEqual(d.update(onLan, SELF, infos, T + 5000, ours), []);
    sets = d.update(onLan, SELF, infos, T + 10_000, ours);
    assert.deepEqual(sets.map((x) => [x.endpoint.address, x.lan]), [['198.51.100.2', false]]);
  });

  it('sets once, follows a move with a re-handshake, and re-sets a lost endpoint only without a fresh handshake', () => {
    const d = new WgDiscovery({ serverKey: SERVER_KEY, serverAddress: '203.0.113.1' });
    const infos = (i: WgPeerInfo): Map<string, WgPeerInfo> => new Map([[k(2), i]]);
    let sets = d.update(dump([peer(2)]), SELF, infos(info(2)), T);
    assert.deepEqual(sets.map((s) => [s.reason, s.rehandshake]), [['discovered', false]]);
    const set = dump([peer(2, { endpoint: { address: '198.51.100.6', port: 51820 } })]);
    assert.deepEqual(d.update(set, SELF, infos(info(2)), T + 1000), []);
    const moved = info(2, { endpoint: { address: '198.51.100.6', port: 51999 } });
    sets = d.update(set, SELF, infos(moved), T + 2000);
    assert.deepEqual(sets.map((s) => [s.reason, s.endpoint.port, s.rehandshake]), [['moved', 51999, true]]);
    // WireGuard lost it (restart: no endpoint, no handshake): set again at once.
    sets = d.update(dump([peer(2)]), SELF, infos(moved), T + 3000);
    assert.deepEqual(sets.map((s) => s.reason), ['stale']);
    // Roamed elsewhere but handshaking: leave it.
    const roamed = dump([peer(2, { endpoint: { address: '198.51.100.6', port: 1111 }, latestHandshake: Math.floor((T + 3500) / 1000) })]);
    assert.deepEqual(d.update(roamed, SELF, infos(moved), T + 4000), []);
  });

  it('a symmetric peer whose roamed endpoint carries handshakes is not overridden by the server\'s view', () => {
    const d = new WgDiscovery({ serverKey: SERVER_KEY, serverAddress: '203.0.113.1' });
    const sym = (port: number): Map<string, WgPeerInfo> => new Map([[k(2), info(2, { mapping: 'endpoint-dependent', endpoint: { address: '198.51.100.6', port } })]]);
    assert.equal(d.update(dump([peer(2)]), SELF, sym(40000), T).length, 1);
    const live = dump([peer(2, { endpoint: { address: '198.51.100.6', port: 45555 }, latestHandshake: Math.floor(T / 1000) })]);
    assert.deepEqual(d.update(live, SELF, sym(40001), T + 1000), []);
  });

  it('names each failure at the deadline', () => {
    const d = new WgDiscovery({ serverKey: SERVER_KEY, serverAddress: '203.0.113.1' });
    const peers = [peer(2), peer(3), peer(4), peer(5), peer(6), peer(7, { latestHandshake: Math.floor(T / 1000) })];
    const infos = new Map<string, WgPeerInfo>([
      [k(2), info(2, { announced: false, endpoint: undefined })],
      [k(3), info(3, { endpoint: undefined })],
      [k(4), info(4, { mapping: 'endpoint-dependent' })],
      [k(5), info(5)],
    ]);
    d.update(dump(peers), SELF, infos, T);
    const status = d.status(dump(peers), T + 1000, true);
    assert.deepEqual([...status.values()], ['not-registered', 'peer-not-reaching-server', 'symmetric-peer', 'no-handshake', 'not-registered', 'connected']);
    assert.deepEqual([...d.status(dump(peers), T + 1000, false).values()].slice(0, 2), ['waiting', 'waiting']);
    const d2 = new WgDiscovery({ serverKey: SERVER_KEY, serverAddress: '203.0.113.1' });
    d2.update(dump([peer(5)]), { ...SELF, mapping: 'endpoint-dependent' }, new Map([[k(5), info(5)]]), T);
    assert.deepEqual([...d2.status(dump([peer(5)]), T, true).values()], ['symmetric-self']);
  });
});
