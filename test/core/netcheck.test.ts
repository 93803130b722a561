/**
 * The netcheck machine (src/core/nat/netcheck.ts) on the in-memory network (test/support/simnet.ts) with a fake clock,
 * against the real server core answering on its four RFC 5780 sockets: every NAT kind is classified as RFC 4787 names
 * it, the lifetime estimate brackets an emulated mapping timeout, and a blocked network fails with a reason.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpointKey, type Endpoint } from '../../src/codec/address.js';
import { NETCHECK_SENDS, NetcheckMachine, type NetcheckAction, type NetcheckReport } from '../../src/core/nat/netcheck.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { BurrowError } from '../../src/errors.js';
import type { Rfc5780Sockets } from '../../src/server/config.js';
import { LocalServer } from '../../src/server/local.js';
import type { ServerSocketId } from '../../src/server/types.js';
import { counterBytes, SimNet, type SimNatKind } from '../support/simnet.js';

const SOCKETS: Rfc5780Sockets = {
  main: { address: '203.0.113.1', port: 3478 },
  alternate: { address: '203.0.113.1', port: 3479 },
  'other-ip': { address: '203.0.113.2', port: 3478 },
  'other-ip-port': { address: '203.0.113.2', port: 3479 },
};
const ROUTER = '198.51.100.10';

interface Run {
  readonly report: NetcheckReport | undefined;
  readonly error: unknown;
  readonly endedAt: number;
  readonly net: SimNet;
}

function run(kind: SimNatKind, opts: { rfc5780?: boolean; hairpin?: boolean; lifetimeTrialsMs?: number[]; lifetimeMs?: number; blocked?: boolean } = {}): Run {
  const net = new SimNet(5, 3);
  const host = kind === 'none' ? '198.51.100.20' : '192.0.2.10';
  if (kind !== 'none') net.addRouter(ROUTER, kind, '192.0.2.', { hairpin: opts.hairpin ?? false });
  const server = new LocalServer({
    networks: [deriveNetworkKeys(Buffer.from('s'))],
    alternate: SOCKETS.alternate,
    ...(opts.rfc5780 === false ? {} : { rfc5780: SOCKETS }),
    seed: 5,
    randomBytes: counterBytes('server'),
  });
  const ids: ServerSocketId[] = opts.rfc5780 === false ? ['main', 'alternate'] : ['main', 'alternate', 'other-ip', 'other-ip-port'];
  for (const id of ids) {
    net.listen(SOCKETS[id], (from, data) => {
      for (const a of server.handle({ type: 'datagram', socket: id, from, data, now: net.now })) {
        if (a.type === 'send') net.send(SOCKETS[a.socket], a.to, a.data);
      }
    });
  }
  const trials = opts.lifetimeTrialsMs;
  const names = ['a', 'b', 'c', ...(trials ? ['y', ...trials.map((_, i) => `x${i}`)] : [])];
  const locals: Record<string, Endpoint> = {};
  names.forEach((n, i) => (locals[n] = { address: host, port: 5000 + i }));
  let report: NetcheckReport | undefined;
  let error: unknown;
  let endedAt = -1;
  const machine = new NetcheckMachine({ server: SOCKETS.main, locals, lifetimeTrialsMs: trials, randomBytes: counterBytes('netcheck') });
  const sockets = new Map(names.map((n) => [n, net.socket(locals[n]!, (from, data) => { execute(machine.handle({ type: 'datagram', transport: n, from, data, now: net.now })); })]));
  function execute(actions: NetcheckAction[]): void {
    for (const a of actions) {
      if (a.type === 'send') sockets.get(a.transport)?.send(a.to, a.data);
      else if (a.type === 'done') [report, endedAt] = [a.result, net.now];
      else if (a.type === 'fail') [error, endedAt] = [a.error, net.now];
    }
  }
  if (opts.blocked) net.drop = () => true;
  if (opts.lifetimeMs !== undefined) {
    // A mapping that has not sent for lifetimeMs is gone: what arrives for it is dropped.
    const lastSend = new Map<string, number>();
    const ours = new Set(Object.values(locals).map(endpointKey));
    net.tap = (from) => { lastSend.set(endpointKey(from), net.now); };
    const lifetime = opts.lifetimeMs;
    net.drop = (_from, to) => ours.has(endpointKey(to)) && net.now - (lastSend.get(endpointKey(to)) ?? net.now) > lifetime;
  }
  execute(machine.handle({ type: 'start', now: 0 }));
  for (let guard = 0; !machine.isFinished && guard < 100_000; guard++) {
    const times = [machine.nextTimeoutAt(), net.nextDeliveryAt()].filter((t): t is number => t !== undefined);
    assert.ok(times.length > 0, 'the machine waits for nothing but is not finished');
    const at = Math.min(...times);
    net.runUntil(at);
    const due = machine.nextTimeoutAt();
    if (due !== undefined && due <= net.now) execute(machine.handle({ type: 'timer', now: net.now }));
  }
  assert.ok(machine.isFinished);
  return { report, error, endedAt, net };
}

describe('netcheck machine against a 2-IP server on the simulated network', () => {
  const expected: Record<SimNatKind, Partial<NetcheckReport>> = {
    none: { mapping: 'no-nat', filtering: 'endpoint-independent', allocation: 'preserving', hairpinning: true, nat: 'open internet (no NAT, no filter)' },
    'full-cone': { mapping: 'endpoint-independent', filtering: 'endpoint-independent', allocation: 'sequential', hairpinning: false, nat: 'full-cone NAT' },
    'address-restricted': { mapping: 'endpoint-independent', filtering: 'address-dependent', allocation: 'sequential', nat: 'address-restricted cone NAT' },
    'port-restricted': { mapping: 'endpoint-independent', filtering: 'address-and-port-dependent', allocation: 'sequential', nat: 'port-restricted cone NAT' },
    symmetric: { mapping: 'address-and-port-dependent', filtering: 'address-and-port-dependent', allocation: 'random', nat: 'symmetric NAT' },
  };
  for (const [kind, want] of Object.entries(expected) as [SimNatKind, Partial<NetcheckReport>][]) {
    it(`classifies ${kind}`, () => {
      const { report, error } = run(kind);
      assert.equal(error, undefined);
      assert.ok(report);
      for (const [k, v] of Object.entries(want)) assert.deepEqual(report[k as keyof NetcheckReport], v, `${k} (${JSON.stringify(report.tests)})`);
      assert.deepEqual(report.otherAddress, SOCKETS['other-ip-port']);
      assert.equal(report.ipv4?.address, kind === 'none' ? '198.51.100.20' : ROUTER);
      assert.equal(report.rttMs, 10, 'two 5 ms hops');
    });
  }

  it('the verdict follows the NAT kind', () => {
    assert.equal(run('port-restricted').report?.verdict.line, 'direct to full-cone, address-restricted, port-restricted, firewall peers; symmetric peers need birthday probing (else the relay)');
    assert.equal(run('symmetric').report?.verdict.line, 'direct to full-cone, address-restricted peers; port-restricted, firewall peers need birthday probing (else the relay); symmetric peers need the relay');
    assert.equal(run('full-cone').report?.verdict.line, 'direct to every kind of peer');
  });

  it('sees hairpinning when the router does it', () => {
    assert.equal(run('full-cone', { hairpin: true }).report?.hairpinning, true);
  });

  it('every request is as long as the answer it asks for (no amplification toward netcheck)', () => {
    const { net } = run('port-restricted');
    const toServer = net.captured.filter((c) => Object.values(SOCKETS).some((s) => endpointKey(s) === endpointKey(c.to)));
    assert.ok(toServer.length >= 8);
    for (const c of toServer) assert.equal(c.data.length, 56);
  });
});

describe('netcheck machine against a 1-IP server (mapping tests only)', () => {
  it('tells symmetric from cone by the alternate port; filtering stays unknown', () => {
    const sym = run('symmetric', { rfc5780: false }).report;
    assert.equal(sym?.mapping, 'address-and-port-dependent');
    assert.equal(sym.filtering, 'unknown');
    assert.equal(sym.otherAddress, undefined);
    const cone = run('port-restricted', { rfc5780: false }).report;
    assert.equal(cone?.mapping, 'endpoint-independent');
    assert.equal(cone.filtering, 'unknown');
    assert.match(cone.verdict.line, /filtering unknown/);
  });
});

describe('netcheck machine: lifetime and failure', () => {
  it('brackets the binding lifetime between the last trial alive and the first one gone', () => {
    const { report, endedAt } = run('none', { lifetimeTrialsMs: [5_000, 15_000, 30_000, 60_000, 120_000], lifetimeMs: 50_000 });
    assert.deepEqual(report?.lifetime, { kind: 'estimate', aliveMs: 30_000, goneMs: 60_000 });
    assert.ok(endedAt < 70_000, `stops at the first trial gone, not after the last (${endedAt})`);
  });

  it('reports a lifetime longer than every trial', () => {
    const { report } = run('port-restricted', { lifetimeTrialsMs: [1_000, 2_000] });
    assert.deepEqual(report?.lifetime, { kind: 'estimate', aliveMs: 2_000, goneMs: undefined });
  });

  it('fails with SERVER_UNREACHABLE when nothing gets through, after four sends', () => {
    const { error, endedAt } = run('port-restricted', { blocked: true });
    assert.ok(error instanceof BurrowError);
    assert.equal(error.code, 'SERVER_UNREACHABLE');
    assert.match(error.message, /UDP may be blocked/);
    assert.equal(endedAt, 2750);
    assert.equal(NETCHECK_SENDS, 4);
  });
});
