/**
 * The TCP punch's stream relay fall-back with a fake clock, against the real server core (whose introductions carry
 * the RELAY offer): when the relay is opened (3 s after the introduction with `auto`, at once with `only`, never with
 * `never`), that it is the introducing server's, that both sides settle on the same connection (a relayed stream is
 * held while a direct connection is being secured), and what a failure says about the relay.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { punchFailureOf } from '../../src/core/punch/index.js';
import { DEFAULT_TCP_TIMING, streamRelayRefusal, TcpPunchMachine, type StreamRelayMode, type TcpPunchAction, type TcpPunchInput } from '../../src/core/tcp-punch.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { LocalServer } from '../../src/server/local.js';
import type { RelayPolicy } from '../../src/server/relay/config.js';
import { counterBytes } from '../support/simnet.js';

const KEYS = deriveNetworkKeys(Buffer.from('tcp relay secret'));
const SERVER: Endpoint = { address: '203.0.113.1', port: 3478 };
const START = 1_000_000;

interface Side {
  readonly machine: TcpPunchMachine;
  readonly conn: number;
  readonly mapped: Endpoint;
  readonly actions: { at: number; action: TcpPunchAction }[];
}

function pair(opts: { relay?: StreamRelayMode; bobRelay?: StreamRelayMode; policy?: RelayPolicy | null; timeoutMs?: number } = {}) {
  const policy = opts.policy === null ? undefined : (opts.policy ?? { kind: 'builtin' as const });
  const server = new LocalServer({ networks: [KEYS], seed: 1, randomBytes: counterBytes('srv'), ...(policy ? { relay: policy } : {}) });
  let now = START;
  const mk = (name: string, peer: string, conn: number, mapped: Endpoint, relay: StreamRelayMode | undefined): Side => ({
    machine: new TcpPunchMachine({
      name, peer, keys: KEYS, server: SERVER, serverTransport: 'server', localAddress: '0.0.0.0', localPort: 50000 + conn,
      lanHosts: [], timeoutMs: opts.timeoutMs ?? 10_000, sessionNonce: counterBytes(`n-${name}`)(16), randomBytes: counterBytes(`t-${name}`),
      ...(relay !== undefined ? { relay } : {}),
    }),
    conn,
    mapped,
    actions: [],
  });
  const alice = mk('alice', 'bob', 1, { address: '198.51.100.2', port: 40001 }, opts.relay);
  const bob = mk('bob', 'alice', 2, { address: '198.51.100.6', port: 40002 }, opts.bobRelay ?? opts.relay);
  const sides = [alice, bob];
  const feed = (side: Side, input: TcpPunchInput): void => {
    for (const action of side.machine.handle(input)) {
      side.actions.push({ at: now, action });
      if (action.type !== 'send') continue;
      for (const r of server.handle({ type: 'stream-message', conn: side.conn, from: side.mapped, data: action.data, now })) {
        if (r.type !== 'send-stream') continue;
        const to = sides.find((s) => s.conn === r.conn);
        if (to) feed(to, { type: 'datagram', transport: 'server', from: SERVER, data: r.data, now });
      }
    }
  };
  const step = (until: number): void => {
    while (now < until) {
      now += 1;
      for (const s of sides) {
        const t = s.machine.nextTimeoutAt();
        if (t !== undefined && t <= now) feed(s, { type: 'timer', now });
      }
    }
  };
  const start = (): void => {
    feed(alice, { type: 'start', now });
    feed(bob, { type: 'start', now });
  };
  const of = <T extends TcpPunchAction['type']>(s: Side, type: T) =>
    s.actions.flatMap((x) => (x.action.type === type ? [{ at: x.at, action: x.action as Extract<TcpPunchAction, { type: T }> }] : []));
  return { alice, bob, feed, step, start, of, now: () => now };
}

describe('TCP punch: the stream relay fall-back (sans-IO)', () => {
  it(`relay auto: the introducing server's stream relay is opened ${DEFAULT_TCP_TIMING.relayAfterMs} ms after the introduction, direct attempts go on, and the relayed stream wins`, () => {
    const p = pair();
    p.start();
    assert.equal(DEFAULT_TCP_TIMING.relayAfterMs, 3000); // the documented figure (README, docs/protocol.md)
    p.step(START + 2999);
    assert.equal(p.of(p.alice, 'relay-connect').length, 0, 'the relay was opened before the wait was over');
    p.step(START + 3000);
    const [open] = p.of(p.alice, 'relay-connect');
    assert.ok(open, 'no relay-connect');
    assert.equal(open.at, START + 3000);
    assert.deepEqual(open.action.server, SERVER);
    // The same handshake context as the direct attempts: both sides derive it from the introduction.
    const [direct] = p.of(p.alice, 'connect');
    assert.ok(direct);
    assert.deepEqual(Buffer.from(open.action.context), Buffer.from(direct.action.context));
    assert.deepEqual(Buffer.from(p.of(p.bob, 'relay-connect')[0]!.action.context), Buffer.from(open.action.context));
    // Direct attempts go on while the relay connects.
    const before = p.of(p.alice, 'connect').length;
    p.step(START + 4000);
    assert.ok(p.of(p.alice, 'connect').length > before);
    p.feed(p.alice, { type: 'relay-spliced', now: p.now() });
    p.feed(p.alice, { type: 'secured', winner: { relay: true }, localPort: 41234, now: p.now() + 2 });
    const [done] = p.of(p.alice, 'done');
    assert.ok(done);
    assert.deepEqual(done.action.result.winner, { relay: true });
    assert.deepEqual(done.action.result.relay, { server: SERVER });
    const r = done.action.result.result;
    assert.equal(r.path, 'relay');
    assert.equal(r.localPort, 41234);
    assert.equal(`${r.remoteAddress}:${r.remotePort}`, '203.0.113.1:3478');
    assert.equal(r.elapsedMs, 4002);
    assert.ok(p.of(p.alice, 'event').some((e) => e.action.event.type === 'connected' && e.action.event.path === 'relay'));
  });

  it('relay auto: a direct path secured within the wait means no relay at all', () => {
    const p = pair();
    p.start();
    p.step(START + 800);
    const a = p.of(p.alice, 'connect').at(-1);
    assert.ok(a);
    p.feed(p.alice, { type: 'attempt-connected', attempt: a.action.attempt, now: p.now() });
    p.feed(p.alice, { type: 'secured', winner: { attempt: a.action.attempt }, localPort: 50001, now: p.now() });
    p.step(START + 5000);
    assert.equal(p.of(p.alice, 'relay-connect').length, 0);
    assert.equal(p.of(p.alice, 'done')[0]?.action.result.result.path, 'direct');
  });

  it('both sides take the same connection: a relayed stream secured while a direct one is being secured is held; the direct one wins if it completes', () => {
    const p = pair();
    p.start();
    p.step(START + 3000);
    const connects = p.of(p.alice, 'connect');
    const inFlight = connects.at(-1)!;
    p.feed(p.alice, { type: 'attempt-connected', attempt: inFlight.action.attempt, now: p.now() });
    p.feed(p.alice, { type: 'relay-spliced', now: p.now() });
    p.feed(p.alice, { type: 'secured', winner: { relay: true }, localPort: 41234, now: p.now() });
    assert.equal(p.of(p.alice, 'done').length, 0, 'took the relay while a direct connection was being secured');
    // No new direct attempt from now on.
    const count = p.of(p.alice, 'connect').length;
    p.step(START + 5000);
    assert.equal(p.of(p.alice, 'connect').length, count);
    p.feed(p.alice, { type: 'secured', winner: { attempt: inFlight.action.attempt }, localPort: 50001, now: p.now() });
    const [done] = p.of(p.alice, 'done');
    assert.equal(done?.action.result.result.path, 'direct');
    assert.deepEqual(done.action.result.winner, { attempt: inFlight.action.attempt });
  });

  it('…and the held relayed stream wins once the direct one fails its handshake', () => {
    const p = pair();
    p.start();
    p.step(START + 3000);
    const inFlight = p.of(p.alice, 'connect').at(-1)!;
    p.feed(p.alice, { type: 'attempt-connected', attempt: inFlight.action.attempt, now: p.now() });
    p.feed(p.alice, { type: 'relay-spliced', now: p.now() });
    p.feed(p.alice, { type: 'secured', winner: { relay: true }, localPort: 41234, now: p.now() });
    p.step(START + 3100);
    p.feed(p.alice, { type: 'attempt-failed', attempt: inFlight.action.attempt, why: 'handshake', detail: 'reset', now: p.now() });
    const [done] = p.of(p.alice, 'done');
    assert.equal(done?.action.result.result.path, 'relay');
    assert.equal(done.action.result.result.localPort, 41234);
    assert.equal(done.at, START + 3100);
  });

  it('relay only: the relay is opened at the introduction, no direct attempt is made and LAN connections are refused', () => {
    const p = pair({ relay: 'only' });
    p.start();
    assert.equal(p.of(p.alice, 'relay-connect')[0]?.at, START);
    assert.equal(p.of(p.bob, 'relay-connect')[0]?.at, START);
    p.step(START + 5000);
    assert.equal(p.of(p.alice, 'connect').length, 0);
    p.feed(p.alice, { type: 'incoming', conn: 7, from: { address: '192.0.2.9', port: 1 }, now: p.now() });
    assert.ok(p.of(p.alice, 'reject-incoming').some((x) => x.action.conn === 7));
  });

  it('relay only: a refused relay fails at once with NO_PATH naming the relay and why', () => {
    const p = pair({ relay: 'only' });
    p.start();
    p.feed(p.alice, { type: 'relay-failed', code: 403, detail: 'stream relay refused: 403 Relay disabled on this server', now: p.now() + 5 });
    const [fail] = p.of(p.alice, 'fail');
    assert.ok(fail);
    assert.equal(fail.action.error.code, 'NO_PATH');
    assert.match(fail.action.error.message, /only relayed paths were allowed, and there is no relay: the server at 203\.0\.113\.1:3478 has its relay turned off \(403\)/);
    const f = punchFailureOf(fail.action.error);
    assert.equal(f?.relay?.state, 'failed');
    assert.equal(f.relay.code, 403);
    assert.equal(f.relay.only, true);
  });

  it('relay never: no relay is opened; NO_PATH at the deadline says relaying was turned off', () => {
    const p = pair({ relay: 'never', timeoutMs: 5000 });
    p.start();
    p.step(START + 5001);
    assert.equal(p.of(p.alice, 'relay-connect').length, 0);
    const [fail] = p.of(p.alice, 'fail');
    assert.equal(fail?.action.error.code, 'NO_PATH');
    assert.match(fail.action.error.message, /No relay either: relaying was turned off for this attempt\./);
    assert.equal(punchFailureOf(fail.action.error)?.relay?.state, 'disabled');
  });

  it('a server that offers no stream relay (--no-relay, --turn, or none at all): no relay-connect, and the failure says which', () => {
    const cases: [RelayPolicy | null, RegExp][] = [
      [{ kind: 'none' }, /offers no relay \(it runs with relaying turned off\)/],
      [{ kind: 'turn', url: 'turn:198.51.100.9:3478', secret: Buffer.from('s'), ttlSeconds: 60 }, /relays through the TURN server turn:198\.51\.100\.9:3478, which carries datagrams only/],
      [null, /offers no relay \(it predates relays\)/],
    ];
    for (const [policy, words] of cases) {
      const p = pair({ policy, timeoutMs: 4000 });
      p.start();
      p.step(START + 4001);
      assert.equal(p.of(p.alice, 'relay-connect').length, 0);
      const [fail] = p.of(p.alice, 'fail');
      assert.equal(fail?.action.error.code, 'NO_PATH', `${policy?.kind ?? 'no offer'}: ${fail?.action.error.message ?? ''}`);
      assert.match(fail.action.error.message, words);
      // With relay only it fails at the introduction.
      const q = pair({ policy, relay: 'only' });
      q.start();
      assert.equal(q.of(q.alice, 'fail')[0]?.at, START);
    }
  });

  it('relay auto: a relay that fails leaves the direct attempts going; NO_PATH at the deadline names the relay failure', () => {
    const p = pair({ timeoutMs: 8000 });
    p.start();
    p.step(START + 3000);
    p.feed(p.alice, { type: 'relay-failed', code: 408, detail: 'stream relay refused: 408 Partner did not connect in time', now: p.now() });
    assert.equal(p.of(p.alice, 'fail').length, 0);
    const count = p.of(p.alice, 'connect').length;
    p.step(START + 8001);
    assert.ok(p.of(p.alice, 'connect').length > count);
    const [fail] = p.of(p.alice, 'fail');
    assert.equal(fail?.action.error.code, 'NO_PATH');
    assert.match(fail.action.error.message, /No relay either: bob did not come to the stream relay at 203\.0\.113\.1:3478 within its wait \(408\)/);
  });

  it('relay auto: a relay still waiting for the partner at the deadline is named in the failure', () => {
    const p = pair({ timeoutMs: 6000 });
    p.start();
    p.step(START + 6001);
    const [fail] = p.of(p.alice, 'fail');
    assert.equal(fail?.action.error.code, 'NO_PATH');
    assert.match(fail.action.error.message, /bob had not come to the stream relay at 203\.0\.113\.1:3478 by the deadline/);
    assert.equal(punchFailureOf(fail.action.error)?.relay?.code, 408);
  });

  it('the partner leaving ends a relay that waits for it (PEER_LEFT), but not one spliced and being secured', () => {
    const p = pair({ relay: 'only', bobRelay: 'only' });
    p.start();
    p.feed(p.bob, { type: 'abort', now: p.now() + 10 });
    assert.equal(p.of(p.alice, 'fail')[0]?.action.error.code, 'PEER_LEFT');
    const q = pair({ relay: 'only' });
    q.start();
    q.feed(q.alice, { type: 'relay-spliced', now: q.now() + 5 });
    q.feed(q.bob, { type: 'relay-spliced', now: q.now() + 5 });
    q.feed(q.bob, { type: 'secured', winner: { relay: true }, localPort: 1, now: q.now() + 8 });
    assert.equal(q.of(q.alice, 'fail').length, 0, 'alice gave up although bob secured the relayed stream');
    q.feed(q.alice, { type: 'secured', winner: { relay: true }, localPort: 2, now: q.now() + 9 });
    assert.equal(q.of(q.alice, 'done')[0]?.action.result.result.path, 'relay');
  });

  it('words each refusal of the stream relay', () => {
    assert.match(streamRelayRefusal(401, 'S', 'bob', ''), /refused our credentials/);
    assert.match(streamRelayRefusal(486, 'S', 'bob', ''), /quota/);
    assert.match(streamRelayRefusal(508, 'S', 'bob', ''), /full/);
    assert.match(streamRelayRefusal(undefined, 'S', 'bob', 'ECONNREFUSED'), /the stream relay at S failed: ECONNREFUSED/);
  });
});
