/**
 * Regression (review finding): behind one NAT the controlling side holds non-LAN nominations for a
 * grace period; once it has passed, the machine must not keep asking for a timer at that past instant
 * (which made the driver wake up every millisecond until the deadline).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { PunchAgent, udpTransport, type PunchAction } from '../../src/core/punch/index.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { LocalServer } from '../../src/server/local.js';
import { counterBytes } from '../support/simnet.js';

it('does not spin its timer after the LAN grace period when the LAN path never answers', () => {
  const keys = deriveNetworkKeys(Buffer.from('timer secret'));
  const S: Endpoint = { address: '203.0.113.1', port: 3478 };
  // Both behind one public address (a carrier-grade NAT, say), LAN addresses that cannot reach each other.
  const A: Endpoint = { address: '198.51.100.2', port: 1000 };
  const B: Endpoint = { address: '198.51.100.2', port: 2000 };
  const server = new LocalServer({ networks: [keys], seed: 1, randomBytes: counterBytes('srv') });
  const mk = (name: string, peer: string, lan: string) =>
    new PunchAgent({ name, peer, keys, server: S, transports: [udpTransport({ address: '0.0.0.0', port: 5000 }, [{ address: lan, port: 5000 }])], timeoutMs: 3000, sessionNonce: counterBytes(`n-${name}`)(16), randomBytes: counterBytes(`t-${name}`) });
  const alice = mk('alice', 'bob', '192.0.2.10'); // controlling
  const bob = mk('bob', 'alice', '192.0.2.20');
  let now = 1_000_000;
  const toServer = (from: Endpoint, actions: PunchAction[]): { to: Endpoint; data: Uint8Array }[] => {
    const back: { to: Endpoint; data: Uint8Array }[] = [];
    for (const a of actions) {
      if (a.type !== 'send' || a.to.address !== S.address || a.to.port !== S.port) continue; // peers never hear each other
      for (const r of server.handle({ type: 'datagram', socket: 'main', from, data: a.data, now })) if (r.type === 'send') back.push({ to: r.to, data: r.data });
    }
    return back;
  };
  const deliver = (replies: { to: Endpoint; data: Uint8Array }[]): void => {
    for (const r of replies) {
      const m = r.to.port === A.port ? alice : bob;
      const from = r.to.port === A.port ? A : B;
      deliver(toServer(from, m.handle({ type: 'datagram', transport: 'udp', from: S, data: r.data, now })));
    }
  };
  deliver(toServer(A, alice.handle({ type: 'start', now })));
  deliver(toServer(B, bob.handle({ type: 'start', now })));
  let wakeups = 0;
  const end = now + 1000;
  while (now < end) {
    const t = alice.nextTimeoutAt();
    assert.ok(t !== undefined);
    now = Math.max(now + 1, Math.min(t, end)); // a driver that never sleeps less than 1 ms
    wakeups++;
    deliver(toServer(A, alice.handle({ type: 'timer', now })));
  }
  // Probes back off to 50 ms per candidate (2 candidates) plus a refresh or two: tens of wake-ups, not ~1000.
  assert.ok(wakeups < 120, `${wakeups} timer wake-ups in one second`);
});
