/**
 * Outcome reports (REPORT with OUTCOME, docs/protocol.md "Outcome reports"): what the punch machine sends
 * and when, and how the server core checks and counts them. Fake clock, simulated NATs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage, type BurrowMessage, type Outcome } from '../../src/codec/messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { TestServer } from './harness.js';
import { createSim, SECRET, topology } from '../support/sim-punch.js';
import { counterBytes, SimNet, type SimNatKind } from '../support/simnet.js';

const KEYS = deriveNetworkKeys(Buffer.from(SECRET));
const T0 = 1_700_000_000_000;
const A: Endpoint = { address: '198.51.100.2', port: 40000 };

function pair(kindA: SimNatKind, kindB: SimNatKind, alone = false) {
  const net = new SimNet(1, 1);
  const t = topology(kindA, kindB, net);
  const sim = createSim(net, [
    { name: 'alice', peer: 'bob', at: t.a, timeoutMs: 3000 },
    ...(alone ? [] : [{ name: 'bob', peer: 'alice', at: t.b, timeoutMs: 3000 }]),
  ]);
  return sim;
}

let tx = 0;
function msg(m: (txid: Buffer) => BurrowMessage): Buffer {
  const txid = Buffer.alloc(12);
  txid.writeUInt32BE(++tx, 8);
  return encodeMessage(m(txid), { key: KEYS.clientToServer });
}
const register = (name: string, target: string, nonce: number, ts = T0) => msg((txid) => ({
  kind: 'register', txid, networkId: KEYS.networkId, name, target, sessionNonce: Buffer.alloc(16, nonce), timestamp: ts, candidates: [], mapping: 'unknown',
}));
const report = (name: string, outcome: Outcome, nonce: number, ts = T0) => msg((txid) => ({
  kind: 'report', txid, networkId: KEYS.networkId, name, sessionNonce: Buffer.alloc(16, nonce), timestamp: ts, outcome,
}));

describe('outcome reports', () => {
  it('round-trips through the codec, as its own method (REPORT 0x0B5), apart from a peer-to-peer CLOSE', () => {
    const data = report('alice', 'failed', 3);
    // Message type: method 0x0B5, class indication (RFC 8489 section 5 interleaving) = 0x0275.
    assert.equal(data.readUInt16BE(0), 0x0275);
    const d = decodeMessage(data);
    assert.ok(d.ok);
    assert.ok(d.msg.kind === 'report');
    assert.equal(d.msg.outcome, 'failed');
    assert.equal(d.msg.name, 'alice');
    const close = decodeMessage(encodeMessage({ kind: 'close', txid: Buffer.alloc(12), timestamp: T0 }));
    assert.ok(close.ok && close.msg.kind === 'close');
    // The old form, a CLOSE that carries NETWORK-ID, is a CLOSE now, which the server drops as not its business.
    const old = Buffer.from(data);
    old.writeUInt16BE(0x0274, 0); // CLOSE (0x0B4) indication
    const reread = decodeMessage(old);
    assert.ok(reread.ok && reread.msg.kind === 'close');
    // OUTCOME 0 or 4 is refused, with a reason (3 is `withdrawn`).
    const bad = Buffer.from(data);
    const at = bad.indexOf(Buffer.from([0x4b, 0x10, 0x00, 0x04]));
    bad[at + 4] = 4;
    const r = decodeMessage(bad);
    assert.ok(!r.ok && r.reason === 'bad-attribute');
  });

  it('two peers that connect report "connected" once each, which ends their registrations', () => {
    const sim = pair('port-restricted', 'port-restricted');
    const [a, b] = sim.run(10_000);
    assert.ok(a?.result && b?.result);
    sim.net.runUntil(sim.net.now + 1000); // deliver the last datagrams
    assert.equal(sim.server.core.stats.outcomesConnected, 2);
    assert.equal(sim.server.core.stats.outcomesFailed, 0);
    assert.equal(sim.server.core.stats.outcomesUnmatched, 0);
    assert.equal(sim.server.memory.store.size, 0);
  });

  it('two symmetric NATs report "failed" once each; a peer never introduced reports nothing', () => {
    const sim = pair('symmetric', 'symmetric');
    const [a, b] = sim.run(10_000);
    assert.equal(a?.error?.code, 'NO_PATH');
    assert.equal(b?.error?.code, 'NO_PATH');
    sim.net.runUntil(sim.net.now + 1000);
    assert.equal(sim.server.core.stats.outcomesFailed, 2);
    assert.equal(sim.server.core.stats.outcomesConnected, 0);

    const lone = pair('port-restricted', 'port-restricted', true);
    const [only] = lone.run(10_000);
    assert.equal(only?.error?.code, 'PEER_NOT_FOUND');
    lone.net.runUntil(lone.net.now + 1000);
    const s = lone.server.core.stats;
    assert.deepEqual([s.outcomesConnected, s.outcomesFailed, s.outcomesUnmatched, s.malformed], [0, 0, 0, 0]);
  });

  it('the server takes a report only authenticated, fresh, once, on the main UDP port and for the live session', () => {
    const s = new TestServer({ networks: [KEYS], limits: {}, seed: 1, randomBytes: counterBytes('srv') });
    s.datagram('main', A, register('alice', 'bob', 1), T0);
    assert.equal(s.store.size, 1);
    const wrongKey = encodeMessage(
      { kind: 'report', txid: Buffer.alloc(12, 1), networkId: KEYS.networkId, name: 'alice', sessionNonce: Buffer.alloc(16, 1), timestamp: T0, outcome: 'connected' },
      { key: deriveNetworkKeys(Buffer.from('other')).clientToServer },
    );
    const replies = [
      s.datagram('main', A, wrongKey, T0),
      s.datagram('main', A, report('alice', 'connected', 1, T0 - 60_000), T0),
      s.datagram('alternate', A, report('alice', 'connected', 1), T0),
      s.datagram('main', A, report('alice', 'connected', 2), T0),
    ];
    assert.deepEqual([s.stats.authFailures, s.stats.staleTimestamps, s.stats.malformed, s.stats.outcomesUnmatched], [1, 1, 1, 1]);
    assert.equal(s.stats.outcomesConnected, 0);
    assert.equal(s.store.size, 1, 'none of those touched the registration');
    const good = report('alice', 'connected', 1);
    replies.push(s.datagram('main', A, good, T0), s.datagram('main', A, good, T0));
    assert.equal(s.stats.outcomesConnected, 1);
    assert.equal(s.stats.replaysRejected, 1);
    assert.equal(s.store.size, 0);
    s.datagram('main', A, report('alice', 'connected', 1), T0);
    assert.equal(s.stats.outcomesUnmatched, 2, 'a second report of the session matches nothing');
    for (const out of replies) assert.equal(out.filter((x) => x.type === 'send').length, 0, 'reports are never answered');
    // Over TCP a report is taken the same way (a TCP peer withdraws before closing its connection), never answered.
    s.streamMessage(1, A, msg((txid) => ({
      kind: 'register', txid, networkId: KEYS.networkId, name: 'carol', target: 'dave', sessionNonce: Buffer.alloc(16, 5), timestamp: T0, candidates: [], mapping: 'unknown', transport: 'tcp',
    })), T0);
    const tcp = s.streamMessage(1, A, report('carol', 'failed', 5), T0);
    assert.deepEqual(tcp.filter((x) => x.type === 'send-stream' || x.type === 'close-stream'), []);
    assert.equal(s.stats.outcomesFailed, 1);
    assert.equal(s.store.size, 0);
  });
});
