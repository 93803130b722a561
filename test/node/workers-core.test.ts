/**
 * The pieces of the multi-process server that need no processes: a stateless worker's core forwards
 * REGISTER untouched and answers Binding itself; the owner's core handles forwarded datagrams with every
 * check (authentication, replay); split limits add up to the configured ones.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage } from '../../src/codec/messages.js';
import { bindingRequest } from '../../src/core/stun-client.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { splitLimits, sumStats } from '../../src/node/cluster.js';
import { DEFAULT_LIMITS, ServerCore } from '../../src/server/core.js';
import { counterBytes } from '../support/simnet.js';

const KEYS = deriveNetworkKeys(Buffer.from('workers core secret'));
const A: Endpoint = { address: '198.51.100.2', port: 40000 };
const B: Endpoint = { address: '198.51.100.6', port: 40001 };
const T0 = 1_700_000_000_000;

function register(name: string, target: string, txByte: number, key = KEYS.clientToServer): Buffer {
  return encodeMessage({
    kind: 'register', txid: Buffer.alloc(12, txByte), networkId: KEYS.networkId, name, target, sessionNonce: Buffer.alloc(16, txByte),
    timestamp: T0, candidates: [], mapping: 'unknown',
  }, { key });
}

describe('multi-process server pieces', () => {
  const worker = () => new ServerCore({ networks: [], seed: 1, randomBytes: counterBytes('w'), forwardRegistrations: true });
  const owner = () => new ServerCore({ networks: [KEYS], seed: 2, randomBytes: counterBytes('o') });

  it('a worker answers Binding itself and forwards REGISTER, unexamined, byte for byte', () => {
    const w = worker();
    const binding = w.handleDatagram('main', A, encodeMessage(bindingRequest(Buffer.alloc(12, 7))), T0);
    assert.equal(binding.length, 1);
    assert.equal(binding[0]?.type, 'send');
    const reg = register('alice', 'bob', 1);
    const out = w.handleDatagram('main', A, reg, T0);
    assert.deepEqual(out, [{ type: 'forward', socket: 'main', from: A, data: reg }]);
    // Junk and peer messages stay in the worker.
    assert.deepEqual(w.handleDatagram('main', A, Buffer.from('not stun at all, not at all'), T0), []);
    assert.equal(w.stats.malformed, 1);
  });

  it('a worker applies its rate limit before forwarding', () => {
    const w = new ServerCore({ networks: [], seed: 1, randomBytes: counterBytes('w'), forwardRegistrations: true, limits: { perSourceRate: 1, perSourceBurst: 2 } });
    const forwarded = [1, 2, 3, 4].flatMap((i) => w.handleDatagram('main', A, register('alice', 'bob', i), T0)).filter((a) => a.type === 'forward');
    assert.equal(forwarded.length, 2);
    assert.equal(w.stats.rateLimited, 2);
  });

  it('the owner pairs forwarded registrations, and still refuses bad MACs and replays', () => {
    const o = owner();
    const first = register('alice', 'bob', 1);
    o.handleForwarded('main', A, first, T0);
    const second = o.handleForwarded('main', B, register('bob', 'alice', 2), T0);
    const sent = second.filter((a) => a.type === 'send').map((a) => decodeMessage(a.data));
    assert.deepEqual(sent.map((d) => (d.ok ? d.msg.kind : d.reason)), ['introduce', 'register-ok']);
    assert.equal(o.stats.introductions, 1);
    o.handleForwarded('main', A, first, T0 + 10);
    assert.equal(o.stats.replaysRejected, 1);
    o.handleForwarded('main', A, register('eve', 'bob', 3, Buffer.alloc(32, 9)), T0);
    assert.equal(o.stats.authFailures, 1);
    assert.equal(o.store.size, 2);
  });

  it('split limits add up to the configured ones, and counters add up across processes', () => {
    const parts = splitLimits(DEFAULT_LIMITS, 3);
    assert.ok(parts.perSourceRate * 3 <= DEFAULT_LIMITS.perSourceRate + 1e-9);
    assert.ok(parts.perSourceBurst * 3 <= DEFAULT_LIMITS.perSourceBurst);
    assert.ok(parts.stunExcessBytesPerSecond * 3 <= DEFAULT_LIMITS.stunExcessBytesPerSecond + 1e-9);
    assert.ok(parts.stunExcessBurst * 3 <= DEFAULT_LIMITS.stunExcessBurst);
    const a = owner();
    const b = worker();
    a.handleForwarded('main', A, register('alice', 'bob', 1), T0);
    b.handleDatagram('main', A, encodeMessage(bindingRequest(Buffer.alloc(12, 7))), T0);
    const total = sumStats([a.stats, b.stats]);
    assert.equal(total.registrationsTotal, 1);
    assert.equal(total.stunBindings, 1);
    assert.equal(total.datagramsIn, 1); // handleForwarded does not count again what a worker already counted
  });
});
