/** WireGuard over the relay: the per-peer decisions of `burrow wg --continuous` on a fake clock (src/core/wg-relay.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import type { NatMapping } from '../../src/codec/messages.js';
import type { WgDumpPeer } from '../../src/codec/wg-dump.js';
import type { WgPeerInfo } from '../../src/codec/wg-messages.js';
import { WgRelayPlanner, wgRelayName, type WgRelayAction, type WgRelayMode } from '../../src/core/wg-relay.js';

const k = (n: number): string => Buffer.alloc(32, n).toString('base64');
const T = 1_800_000_000_000;
const TIMING = { relayAfterMs: 6000, trialMs: 6000, retryMs: 5000, maxRetryMs: 12_000 };
const DIRECT: Endpoint = { address: '198.51.100.6', port: 51820 };
const PROXY: Endpoint = { address: '127.0.0.1', port: 40001 };
const PROXY2: Endpoint = { address: '127.0.0.1', port: 40002 };

function peer(over: Partial<WgDumpPeer> = {}): WgDumpPeer {
  return { publicKey: k(2), presharedKey: undefined, endpoint: undefined, allowedIps: ['192.0.2.200/32'], latestHandshake: 0, rxBytes: 0, txBytes: 0, persistentKeepalive: 25, ...over };
}
function info(over: Partial<WgPeerInfo> = {}): WgPeerInfo {
  return { key: Buffer.alloc(32, 2), announced: true, endpoint: DIRECT, ageSeconds: 1, listenPort: 51820, hosts: [], mapping: 'endpoint-independent', ...over };
}
const SELF = info({ key: Buffer.alloc(32, 1), endpoint: { address: '198.51.100.2', port: 51820 } });
const shook = (now: number): number => Math.floor(now / 1000);

/** A planner with one peer; `at(ms, peer, info?, mapping?)` steps it at T + ms. */
function planner(mode: WgRelayMode = 'auto') {
  const p = new WgRelayPlanner(mode, TIMING);
  const at = (ms: number, dumpPeer: WgDumpPeer, i: WgPeerInfo | undefined = info(), mapping: NatMapping = 'endpoint-independent'): WgRelayAction[] =>
    p.step({ peers: [dumpPeer], infoOf: () => i, self: SELF, mapping, now: T + ms });
  return { p, at };
}
const types = (actions: WgRelayAction[]): string[] => actions.map((a) => (a.type === 'path' ? `path:${a.path}:${a.reason}` : a.type === 'set-endpoint' ? `set:${a.endpoint.port}${a.rehandshake ? ':re' : ''}` : a.type));

describe('WireGuard over the relay: decisions', () => {
  it('names: both sides of a pair compute the same two names, one per direction and pair', () => {
    assert.equal(wgRelayName(k(1), k(2)), wgRelayName(k(1), k(2)));
    assert.notEqual(wgRelayName(k(1), k(2)), wgRelayName(k(2), k(1)));
    assert.notEqual(wgRelayName(k(1), k(2)), wgRelayName(k(1), k(3)));
    assert.match(wgRelayName(k(1), k(2)), /^wg-[A-Za-z0-9_-]{22}$/);
  });

  it('a peer with a fresh direct handshake is left alone; without one it gets a session after relayAfterMs', () => {
    const { p, at } = planner();
    assert.deepEqual(at(0, peer({ endpoint: DIRECT, latestHandshake: shook(T) })), []);
    const unconnected = peer({ endpoint: DIRECT });
    assert.deepEqual(at(1000, unconnected), []);
    assert.deepEqual(at(6999, unconnected), []);
    assert.deepEqual(types(at(7000, unconnected)), ['start-session']);
    assert.equal(p.stateOf(k(2)), 'relaying');
    // While the session is set up nothing changes; once it is ready the endpoint becomes the proxy.
    assert.deepEqual(at(8000, unconnected), []);
    p.sessionReady(k(2), PROXY);
    assert.deepEqual(types(at(8500, unconnected)), ['set:40001', 'path:relay:no-direct-path']);
    assert.equal(p.stateOf(k(2)), 'relayed');
    assert.deepEqual([...p.held()], [k(2)]);
    // WireGuard now uses the proxy and handshakes through it: nothing more to do.
    assert.deepEqual(at(9500, peer({ endpoint: PROXY, latestHandshake: shook(T + 9000) })), []);
  });

  it('waits for nothing when both NATs map per destination; a peer that does not run burrow gets no session', () => {
    const { at } = planner();
    assert.deepEqual(types(at(0, peer({ endpoint: DIRECT }), info({ mapping: 'endpoint-dependent' }), 'endpoint-dependent')), ['start-session']);
    const other = planner();
    assert.deepEqual(other.at(0, peer(), info({ announced: false, endpoint: undefined })), []);
    assert.deepEqual(other.at(60_000, peer(), info({ announced: false, endpoint: undefined })), []);
    assert.deepEqual(other.at(61_000, peer(), undefined), []);
  });

  it('a direct handshake while the session is being set up keeps the direct path and ends the session', () => {
    const { p, at } = planner();
    at(0, peer({ endpoint: DIRECT }));
    assert.deepEqual(types(at(6000, peer({ endpoint: DIRECT }))), ['start-session']);
    assert.deepEqual(types(at(7000, peer({ endpoint: DIRECT, latestHandshake: shook(T + 6500) }))), ['stop-session']);
    assert.equal(p.stateOf(k(2)), 'direct');
    p.sessionReady(k(2), PROXY); // too late: ignored
    assert.deepEqual(at(8000, peer({ endpoint: DIRECT, latestHandshake: shook(T + 6500) })), []);
  });

  it('a failed or ended session is started again after retryMs, and the new proxy replaces the old one', () => {
    const { p, at } = planner();
    at(0, peer({ endpoint: DIRECT }), info({ mapping: 'endpoint-dependent' }), 'endpoint-dependent');
    p.sessionEnded(k(2), T + 1000); // e.g. the partner never came
    const sym = (ms: number, dp: WgDumpPeer): WgRelayAction[] => at(ms, dp, info({ mapping: 'endpoint-dependent' }), 'endpoint-dependent');
    assert.deepEqual(sym(5999, peer({ endpoint: DIRECT })), []);
    assert.deepEqual(types(sym(6000, peer({ endpoint: DIRECT }))), ['start-session']);
    p.sessionReady(k(2), PROXY);
    assert.deepEqual(types(sym(6500, peer({ endpoint: DIRECT }))), ['set:40001', 'path:relay:no-direct-path']);
    const onProxy = peer({ endpoint: PROXY, latestHandshake: shook(T + 7000) });
    p.sessionEnded(k(2), T + 20_000); // the partner's burrow restarted
    assert.equal(p.stateOf(k(2)), 'relaying');
    // WireGuard still points at the old proxy with a handshake through it: that is no direct path.
    assert.deepEqual(sym(21_000, onProxy), []);
    assert.deepEqual(types(sym(25_000, onProxy)), ['start-session']);
    p.sessionReady(k(2), PROXY2);
    assert.deepEqual(types(sym(25_500, onProxy)), ['set:40002', 'path:relay:relay-restored']);
  });

  it('sessions that keep failing are retried less and less often (5, 10, 12, 12 s), and a path resets the pause', () => {
    const { p, at } = planner();
    const sym = (ms: number): WgRelayAction[] => at(ms, peer({ endpoint: DIRECT }), info({ mapping: 'endpoint-dependent' }), 'endpoint-dependent');
    let t = 0;
    assert.deepEqual(types(sym(t)), ['start-session']);
    for (const pause of [5000, 10_000, 12_000, 12_000]) {
      p.sessionEnded(k(2), T + t);
      assert.deepEqual(sym(t + pause - 1), []);
      assert.deepEqual(types(sym(t + pause)), ['start-session'], `after ${pause} ms`);
      t += pause;
    }
    p.sessionReady(k(2), PROXY);
    sym(t + 100);
    p.sessionEnded(k(2), T + t + 1000);
    assert.deepEqual(types(sym(t + 6000)), ['start-session']);
  });

  it('WireGuard roaming to the peer\'s own address with a fresh handshake moves the peer to direct (auto)', () => {
    const { p, at } = planner();
    at(0, peer({ endpoint: DIRECT }));
    at(6000, peer({ endpoint: DIRECT }));
    p.sessionReady(k(2), PROXY);
    at(6500, peer({ endpoint: DIRECT }));
    const roamed: Endpoint = { address: '198.51.100.6', port: 61000 };
    assert.deepEqual(types(at(30_000, peer({ endpoint: roamed, latestHandshake: shook(T + 29_000) }))), ['stop-session', 'path:direct:roamed']);
    assert.equal(p.stateOf(k(2)), 'direct');
    assert.deepEqual([...p.held()], []);
  });

  it('an endpoint lost while relayed (no fresh handshake elsewhere) is set back to the proxy', () => {
    const { p, at } = planner();
    at(0, peer({ endpoint: DIRECT }), info({ mapping: 'endpoint-dependent' }), 'endpoint-dependent');
    p.sessionReady(k(2), PROXY);
    at(500, peer({ endpoint: DIRECT }), info({ mapping: 'endpoint-dependent' }), 'endpoint-dependent');
    assert.deepEqual(types(at(1000, peer({ endpoint: undefined }), info({ mapping: 'endpoint-dependent' }), 'endpoint-dependent')), ['set:40001']);
  });

  it('a change in the server\'s facts tries the direct endpoint: a handshake keeps it, none within trialMs brings the proxy back', () => {
    const { p, at } = planner();
    at(0, peer({ endpoint: DIRECT }));
    at(6000, peer({ endpoint: DIRECT }));
    p.sessionReady(k(2), PROXY);
    at(6500, peer({ endpoint: DIRECT }));
    const onProxy = peer({ endpoint: PROXY, latestHandshake: shook(T + 7000) });
    assert.deepEqual(at(10_000, onProxy), []);
    // The peer moved to another network: the server sees it elsewhere.
    const moved = info({ endpoint: { address: '198.51.100.9', port: 51820 } });
    assert.deepEqual(types(at(20_000, onProxy, moved)), ['set:51820:re']);
    assert.equal(p.stateOf(k(2)), 'trial');
    assert.ok(p.held().has(k(2)), 'discovery leaves a peer under trial alone');
    // The re-created peer reads latest-handshake 0 until a new handshake.
    const trying = peer({ endpoint: { address: '198.51.100.9', port: 51820 } });
    assert.deepEqual(at(25_999, trying, moved), []);
    assert.deepEqual(types(at(26_000, trying, moved)), ['set:40001:re', 'path:relay:trial-failed']);
    assert.equal(p.stateOf(k(2)), 'relayed');
    // Same facts: no new trial. New facts again: a trial that succeeds.
    assert.deepEqual(at(30_000, onProxy, moved), []);
    const again = info({ endpoint: { address: '198.51.100.10', port: 51820 } });
    assert.deepEqual(types(at(40_000, onProxy, again)), ['set:51820:re']);
    const direct = peer({ endpoint: { address: '198.51.100.10', port: 51820 }, latestHandshake: shook(T + 41_000) });
    assert.deepEqual(types(at(41_500, direct, again)), ['stop-session', 'path:direct:upgrade']);
    assert.equal(p.stateOf(k(2)), 'direct');
  });

  it('no trial between two per-destination NATs; a partner\'s handshake through the relay ends a trial early', () => {
    const { p, at } = planner();
    const sym = (over: Partial<WgPeerInfo> = {}): WgPeerInfo => info({ mapping: 'endpoint-dependent', ...over });
    at(0, peer({ endpoint: DIRECT }), sym(), 'endpoint-dependent');
    p.sessionReady(k(2), PROXY);
    at(500, peer({ endpoint: DIRECT }), sym(), 'endpoint-dependent');
    const onProxy = peer({ endpoint: PROXY, latestHandshake: shook(T + 1000) });
    assert.deepEqual(at(10_000, onProxy, sym({ endpoint: { address: '198.51.100.9', port: 51820 } }), 'endpoint-dependent'), []);
    // Our side now has an endpoint-independent mapping: worth a trial.
    assert.deepEqual(types(at(20_000, onProxy, sym({ endpoint: { address: '198.51.100.9', port: 51820 } }))), ['set:51820:re']);
    assert.deepEqual(at(21_000, peer({ endpoint: PROXY, latestHandshake: shook(T + 21_000) }), sym({ endpoint: { address: '198.51.100.9', port: 51820 } })), []);
    assert.equal(p.stateOf(k(2)), 'relayed');
  });

  it('mode only: every peer at once, no trial, roaming is undone; mode never: nothing', () => {
    const { p, at } = planner('only');
    assert.deepEqual(types(at(0, peer(), undefined)), ['start-session']);
    p.sessionReady(k(2), PROXY);
    assert.deepEqual(types(at(100, peer(), undefined)), ['set:40001', 'path:relay:no-direct-path']);
    assert.deepEqual(at(20_000, peer({ endpoint: PROXY, latestHandshake: shook(T + 1000) }), info({ endpoint: { address: '198.51.100.9', port: 1 } })), []);
    assert.deepEqual(types(at(30_000, peer({ endpoint: DIRECT, latestHandshake: shook(T + 29_000) }))), ['set:40001']);
    const never = planner('never');
    assert.deepEqual(never.at(60_000, peer({ endpoint: DIRECT }), info({ mapping: 'endpoint-dependent' }), 'endpoint-dependent'), []);
  });

  it('a peer removed from the interface ends its session', () => {
    const p = new WgRelayPlanner('auto', TIMING);
    p.step({ peers: [peer({ endpoint: DIRECT })], infoOf: () => info({ mapping: 'endpoint-dependent' }), self: SELF, mapping: 'endpoint-dependent', now: T });
    assert.deepEqual(types(p.step({ peers: [], infoOf: () => undefined, self: SELF, mapping: 'endpoint-dependent', now: T + 1000 })), ['stop-session']);
  });
});
