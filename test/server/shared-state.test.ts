/**
 * The server's seams, with a fake clock and the in-memory shared state: the atomic register-and-find-partner store,
 * the router and its "nobody listens" answer, the replay guard and the WG-PROOF-KEY shared between servers, effects
 * answered late or never, and the machine shape (`handle` + `nextTimeoutAt`, no polling).
 *
 * "Servers" here are several cores over one MemorySharedState: exactly what several Redis-backed servers are, with
 * the store in memory. Interleavings that a real store produces (answers arriving late, in either order) are made
 * with a runner whose answers the test releases by hand.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage, type BurrowMessage } from '../../src/codec/messages.js';
import { decodeStun, verifyIntegrity } from '../../src/codec/stun.js';
import { decodeWgSync, encodeWgSync, wgProof } from '../../src/codec/wg-messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { dh, keyPairOf, publicKeyOf } from '../../src/crypto/wireguard.js';
import { ServerCore } from '../../src/server/core.js';
import { LocalServer } from '../../src/server/local.js';
import { ServerMachine, sharedStateRunner, type EffectOutcome, type EffectRunner } from '../../src/server/machine.js';
import { MemorySharedState } from '../../src/server/shared.js';
import { MemoryStore, type Registration } from '../../src/server/store.js';
import type { Effect, Guard, ServerAction, ServerEvent } from '../../src/server/types.js';
import { counterBytes } from '../support/simnet.js';
import { sends, TestServer } from './harness.js';

const KEYS = deriveNetworkKeys(Buffer.from('shared state secret'));
const T0 = 1_700_000_000_000;
const A: Endpoint = { address: '198.51.100.2', port: 40000 };
const B: Endpoint = { address: '198.51.100.6', port: 40001 };
const PROOF_KEY = keyPairOf(counterBytes('proof key')(32));
const LIMITS = { maxRegistrations: 1000, timestampWindowMs: 30_000, replayCapacity: 4096 };

let tx = 0;
function register(name: string, target: string, nonce: number, opts: { ts?: number; transport?: 'tcp' } = {}): Buffer {
  const txid = Buffer.alloc(12);
  txid.writeUInt32BE(++tx, 8);
  return encodeMessage({
    kind: 'register', txid, networkId: KEYS.networkId, name, target, sessionNonce: Buffer.alloc(16, nonce),
    timestamp: opts.ts ?? T0, candidates: [{ kind: 'host', priority: 2130706431, endpoint: { address: '192.0.2.10', port: 5000 } }], mapping: 'unknown', ...(opts.transport ? { transport: opts.transport } : {}),
  }, { key: KEYS.clientToServer });
}

function decoded(data: Uint8Array): BurrowMessage {
  const d = decodeMessage(data);
  assert.ok(d.ok);
  return d.msg;
}

function events(actions: readonly ServerAction[]): ServerEvent[] {
  return actions.flatMap((a) => (a.type === 'event' ? [a.event] : []));
}

/** Two (or more) servers over one in-memory shared state; what each sends because of another's input is collected. */
function cluster(ids: readonly string[]): { shared: MemorySharedState; servers: TestServer[]; later: Map<string, ServerAction[]> } {
  const shared = new MemorySharedState({ limits: LIMITS, proofKey: PROOF_KEY });
  const later = new Map<string, ServerAction[]>(ids.map((id) => [id, []]));
  const clock = { now: 0 };
  const servers = ids.map((serverId) => new TestServer({
    networks: [KEYS], serverId, shared, clock, seed: 1, randomBytes: counterBytes(serverId),
    onLater: (actions) => { later.get(serverId)?.push(...actions); },
  }));
  return { shared, servers, later };
}

describe('registration store (in memory)', () => {
  const owner = { server: 's1', channel: { kind: 'udp' as const } };
  const reg = (name: string, target: string, nonce: string, now: number): Registration => ({
    network: 'net', name, target, nonce, mapped: A, candidates: [], mapping: 'unknown', expiresAt: now + 60_000, owner, version: `v-${name}-${now}`,
  });

  it('registers and finds the partner in one step, reporting what it replaced', () => {
    const store = new MemoryStore(10);
    const first = store.register(reg('alice', 'bob', 'n1', T0), T0);
    assert.deepEqual([first.previous, first.partner, first.evicted], [undefined, undefined, 0]);
    const second = store.register(reg('bob', 'alice', 'n2', T0 + 1), T0 + 1);
    assert.equal(second.partner?.name, 'alice', 'whichever registers second sees the first');
    const refresh = store.register(reg('alice', 'bob', 'n1', T0 + 2), T0 + 2);
    assert.equal(refresh.previous?.version, `v-alice-${T0}`);
    assert.equal(refresh.partner?.name, 'bob');
    const other = store.register(reg('alice', 'bob', 'n3', T0 + 3), T0 + 3);
    assert.equal(other.previous?.nonce, 'n1', 'a second session replaces the first and says so');
  });

  it('withdraws only the session (and owner) it is told, never a newer one', () => {
    const store = new MemoryStore(10);
    store.register(reg('alice', 'bob', 'n1', T0), T0);
    assert.equal(store.withdraw('net', 'alice', 'n0', undefined, T0), undefined);
    assert.equal(store.withdraw('net', 'alice', 'n1', { server: 's2', channel: { kind: 'udp' } }, T0), undefined);
    assert.equal(store.withdraw('net', 'alice', 'n1', { server: 's1', channel: { kind: 'udp' } }, T0)?.name, 'alice');
    assert.equal(store.size, 0);
  });

  it('expires and evicts, oldest first, and keeps one owner object per server', () => {
    const store = new MemoryStore(3);
    for (let i = 0; i < 5; i++) store.register({ ...reg(`p${i}`, 'x', 'n', T0 + i), owner: { server: 's1', channel: { kind: 'udp' } } }, T0 + i);
    assert.equal(store.size, 3);
    assert.equal(store.lookup('net', 'p1', T0 + 10), undefined);
    assert.equal(store.lookup('net', 'p2', T0 + 10)?.owner, store.lookup('net', 'p4', T0 + 10)?.owner, 'owners are shared, not copied per registration');
    assert.equal(store.sweep(T0 + 60_003), 2);
    assert.equal(store.expirations, 2);
  });
});

describe('several servers over one shared state', () => {
  it('peers registered with different servers meet; the push leaves from the server the partner registered with', () => {
    const { servers, later } = cluster(['s1', 's2']);
    const [s1, s2] = servers as [TestServer, TestServer];
    assert.equal(sends(s1.datagram('main', A, register('alice', 'bob', 1), T0)).length, 1);
    const out = sends(s2.datagram('main', B, register('bob', 'alice', 2), T0 + 5));
    // s2 answers bob (with alice's introduction); s1, alice's server, pushes to alice.
    assert.equal(out.length, 1);
    const answer = decoded(out[0]!.data);
    assert.ok(answer.kind === 'register-ok' && answer.intro?.peerName === 'alice');
    const pushed = sends(later.get('s1') ?? []);
    assert.equal(pushed.length, 1);
    assert.deepEqual(pushed[0]!.to, A);
    const push = decoded(pushed[0]!.data);
    assert.ok(push.kind === 'introduce' && push.intro.peerName === 'bob');
    assert.equal(s2.stats.introductions, 1);
  });

  it('a partner whose server is gone counts as absent: no introduction, and its registration is withdrawn', () => {
    const { servers } = cluster(['s1', 's2']);
    const [s1, s2] = servers as [TestServer, TestServer];
    s1.datagram('main', A, register('alice', 'bob', 1), T0);
    s1.close(); // s1 stops: nobody listens for its pushes any more
    const actions = s2.datagram('main', B, register('bob', 'alice', 2), T0 + 5);
    const answer = decoded(sends(actions)[0]!.data);
    assert.ok(answer.kind === 'register-ok' && answer.intro === undefined, 'bob was told about a peer that cannot be reached');
    assert.ok(events(actions).some((e) => e.type === 'partner-unreachable' && e.name === 'alice' && e.server === 's1'));
    assert.equal(s2.stats.partnersUnreachable, 1);
    assert.equal(s2.store.lookup(KEYS.networkIdHex, 'alice', T0 + 6), undefined);
  });

  it('a REGISTER taken by one server is a replay on every other, from any address', () => {
    const { servers } = cluster(['s1', 's2', 's3']);
    const req = register('alice', 'bob', 1);
    assert.equal(sends(servers[0]!.datagram('main', A, req, T0)).length, 1);
    for (const s of servers.slice(1)) {
      assert.deepEqual(sends(s.datagram('main', { address: '203.0.113.66', port: 9 }, req, T0 + 10)), []);
      assert.equal(s.stats.replaysRejected, 1);
    }
    assert.deepEqual(servers[0]!.store.lookup(KEYS.networkIdHex, 'alice', T0 + 20)?.mapped, A);
  });

  it('a push is acknowledged by the recipient registering again on another server: no re-send', () => {
    const { servers, later } = cluster(['s1', 's2']);
    const [s1, s2] = servers as [TestServer, TestServer];
    s1.datagram('main', A, register('alice', 'bob', 1), T0);
    s2.datagram('main', B, register('bob', 'alice', 2), T0 + 5);
    assert.equal(sends(later.get('s1') ?? []).length, 1, 'the first push');
    // alice's acknowledging refresh reaches s2 (another process, another server behind the same name).
    s2.datagram('main', A, register('alice', 'bob', 1), T0 + 20);
    assert.equal(s1.nextTimeoutAt(), T0 + 105, 's1 still expects to re-send 100 ms after its push');
    assert.deepEqual(sends(s1.timer(T0 + 105)), [], 'the re-send saw the newer registration');
    assert.equal(s1.nextTimeoutAt(), undefined);
  });

  it('without the acknowledgement, the push is re-sent by its holder with back-off', () => {
    const { servers, later } = cluster(['s1', 's2']);
    const [s1, s2] = servers as [TestServer, TestServer];
    s1.datagram('main', A, register('alice', 'bob', 1), T0);
    s2.datagram('main', B, register('bob', 'alice', 2), T0 + 5);
    const at: number[] = [];
    for (let t = T0; t < T0 + 5000; t += 5) if (sends(s1.timer(t)).length > 0) at.push(t - T0);
    assert.deepEqual(at, [105, 305, 705, 1505]);
    assert.equal(sends(later.get('s1') ?? []).length, 1);
  });

  it('a WG-SYNC proof made against one server verifies on another (one WG-PROOF-KEY for all)', () => {
    const { servers } = cluster(['s1', 's2']);
    const priv = randomBytes(32);
    const facts = { txid: randomBytes(12), networkId: KEYS.networkId, timestamp: T0, key: publicKeyOf(priv), listenPort: 51820, hosts: [], mapping: 'unknown' as const };
    // The client learnt the proof key from s1 (its WG-PROOF-KEY attribute) ...
    const first = sends(servers[0]!.datagram('main', A, encodeWgSync({ kind: 'wg-sync', ...facts, query: [], proof: undefined }, KEYS.clientToServer), T0));
    const learnt = decodeWgSync(first[0]!.data);
    assert.ok(learnt.ok && learnt.msg.kind === 'wg-sync-ok');
    assert.deepEqual(Buffer.from(learnt.msg.proofKey), PROOF_KEY.publicKey);
    // ... and proves to s2.
    const second = { ...facts, txid: randomBytes(12) };
    const proof = wgProof(dh(priv, learnt.msg.proofKey) ?? Buffer.alloc(32), second);
    const out = sends(servers[1]!.datagram('main', B, encodeWgSync({ kind: 'wg-sync', ...second, query: [], proof }, KEYS.clientToServer), T0 + 1));
    const answer = decodeWgSync(out[0]!.data);
    assert.ok(answer.ok && answer.msg.kind === 'wg-sync-ok');
    assert.equal(answer.msg.self.announced, true);
    assert.equal(servers[1]!.stats.authFailures, 0);
  });
});

/** A runner whose answers wait until the test releases them, in any order. */
class HeldRunner implements EffectRunner {
  readonly held: { effect: Effect; release: () => void; fail: (reason: string) => void }[] = [];
  private readonly inner: EffectRunner;
  constructor(shared: MemorySharedState) {
    this.inner = sharedStateRunner(shared);
  }
  run(effect: Effect, guard: Guard | undefined): Promise<EffectOutcome> {
    return new Promise((resolve, reject) => {
      this.held.push({
        effect,
        // The store is asked when the answer is released: that is the moment the operation happens.
        release: () => { resolve(this.inner.run(effect, guard)); },
        fail: (reason) => { reject(new Error(reason)); },
      });
    });
  }
}

/** A server whose effects are held, on a fake clock; `later` collects what answers cause. */
function heldServer(serverId: string, shared: MemorySharedState, limits: Record<string, number> = {}) {
  let now = T0;
  const later: ServerAction[] = [];
  const runner = new HeldRunner(shared);
  const core = new ServerCore({ networks: [KEYS], serverId, proofKey: PROOF_KEY, seed: 1, randomBytes: counterBytes(serverId), limits });
  const machine = new ServerMachine(core, { runner, router: shared.router, now: () => now, onLater: (a) => { later.push(...a); } });
  return {
    core, machine, runner, later,
    at(t: number) {
      now = t;
    },
    datagram(from: Endpoint, data: Uint8Array) {
      return machine.handle({ type: 'datagram', socket: 'main', from, data, now });
    },
  };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('asynchronous shared state: answers late, in any order, or never', () => {
  for (const order of ['alice first', 'bob first'] as const) {
    it(`two partners registering at once on two servers are introduced exactly once (${order} reaches the store)`, async () => {
      const shared = new MemorySharedState({ limits: LIMITS, proofKey: PROOF_KEY });
      const s1 = heldServer('s1', shared);
      const s2 = heldServer('s2', shared);
      assert.deepEqual(s1.datagram(A, register('alice', 'bob', 1)), [], 'nothing is answered before the store answers');
      assert.deepEqual(s2.datagram(B, register('bob', 'alice', 2)), []);
      const [a, b] = [s1.runner.held[0]!, s2.runner.held[0]!];
      for (const h of order === 'alice first' ? [a, b] : [b, a]) {
        h.release();
        await settle();
      }
      // The one stored second saw the first: its server routes a push (delivered at once, to the other server).
      const second = order === 'alice first' ? s2 : s1;
      assert.equal(second.runner.held.length, 2);
      assert.equal(second.runner.held[1]!.effect.op, 'deliver');
      second.runner.held[1]!.release();
      await settle();
      const introductions = s1.core.stats.introductions + s2.core.stats.introductions;
      assert.equal(introductions, 1);
      const told = (actions: ServerAction[]) => sends(actions).map((x) => decoded(x.data)).filter((m) => (m.kind === 'register-ok' && m.intro !== undefined) || m.kind === 'introduce').length;
      assert.equal(told(s1.later), 1, 'alice heard of bob once');
      assert.equal(told(s2.later), 1, 'bob heard of alice once');
    });
  }

  it('a store that fails draws an authenticated 503, no longer than the request, and a store-error event', async () => {
    const shared = new MemorySharedState({ limits: LIMITS, proofKey: PROOF_KEY });
    const s = heldServer('s1', shared);
    const req = register('alice', 'bob', 1);
    s.datagram(A, req);
    s.runner.held[0]!.fail('connection refused');
    await settle();
    const [answer] = sends(s.later);
    assert.ok(answer);
    const msg = decoded(answer.data);
    assert.ok(msg.kind === 'error' && msg.code === 503);
    const stun = decodeStun(answer.data);
    assert.ok(stun.ok && verifyIntegrity(answer.data, stun.msg, KEYS.serverToClient) === 'valid');
    assert.ok(answer.data.length <= req.length);
    assert.ok(events(s.later).some((e) => e.type === 'store-error' && e.op === 'register'));
    assert.equal(s.core.stats.storeErrors, 1);
  });

  it('a store that never answers: the request fails at its deadline (a timer, not a hung promise); a late answer is ignored', async () => {
    const shared = new MemorySharedState({ limits: LIMITS, proofKey: PROOF_KEY });
    const s = heldServer('s1', shared, { effectTimeoutMs: 2000 });
    s.datagram(A, register('alice', 'bob', 1));
    assert.equal(s.machine.nextTimeoutAt(), T0 + 2000);
    s.at(T0 + 2000);
    const out = s.machine.handle({ type: 'timer', now: T0 + 2000 });
    const msg = decoded(sends(out)[0]!.data);
    assert.ok(msg.kind === 'error' && msg.code === 503);
    assert.equal(s.core.state.pendingEffects, 0);
    s.runner.held[0]!.release();
    await settle();
    assert.deepEqual(sends(s.later), [], 'the late answer was dropped');
  });

  it('requests in flight are bounded: beyond the bound, authenticated requests are dropped and counted', () => {
    const shared = new MemorySharedState({ limits: LIMITS, proofKey: PROOF_KEY });
    const s = heldServer('s1', shared, { maxPendingEffects: 3 });
    for (let i = 0; i < 10; i++) s.datagram(A, register(`p${i}`, 'x', i));
    assert.equal(s.runner.held.length, 3);
    assert.equal(s.core.stats.storeBusy, 7);
    assert.equal(s.core.state.pendingEffects, 3);
  });
});

describe('the server machine', () => {
  it('asks for a timer only when something waits: idle, no timer at all (no polling)', () => {
    const s = new TestServer({ networks: [KEYS], seed: 1, randomBytes: counterBytes('m') });
    assert.equal(s.nextTimeoutAt(), undefined);
    s.datagram('main', A, encodeMessage({ kind: 'binding', txid: Buffer.alloc(12, 1), fingerprint: false }), T0);
    s.datagram('main', A, register('alice', 'bob', 1), T0);
    assert.equal(s.nextTimeoutAt(), undefined, 'a Binding and a lone registration need no timer');
    s.datagram('main', B, register('bob', 'alice', 2), T0 + 5);
    assert.equal(s.nextTimeoutAt(), T0 + 105, 'the push to alice is due for a re-send');
  });

  it('a second live session under the same name displaces the first, and says so', () => {
    const s = new TestServer({ networks: [KEYS], seed: 1, randomBytes: counterBytes('d') });
    const first = events(s.datagram('main', A, register('alice', 'bob', 1), T0));
    assert.ok(first.some((e) => e.type === 'registered' && !e.displaced && e.isNew));
    const refresh = events(s.datagram('main', A, register('alice', 'bob', 1), T0 + 1000));
    assert.ok(refresh.some((e) => e.type === 'registered' && !e.displaced && !e.isNew));
    const other = events(s.datagram('main', B, register('alice', 'bob', 9), T0 + 2000));
    assert.ok(other.some((e) => e.type === 'registered' && e.displaced && e.isNew));
    assert.equal(s.stats.registrationsDisplaced, 1);
  });

  it('a TCP connection that closes takes its own registration, not one made since over a new connection', () => {
    const s = new TestServer({ networks: [KEYS], seed: 1, randomBytes: counterBytes('t') });
    s.streamMessage(1, A, register('carol', 'dave', 3, { transport: 'tcp' }), T0);
    s.streamMessage(2, A, register('carol', 'dave', 3, { transport: 'tcp' }), T0 + 10); // reconnected, same session
    s.streamClosed(1, T0 + 20);
    assert.ok(s.store.lookup(KEYS.networkIdHex, 'carol', T0 + 30), 'the old connection took the new one\'s registration');
    s.streamClosed(2, T0 + 40);
    assert.equal(s.store.lookup(KEYS.networkIdHex, 'carol', T0 + 50), undefined);
  });

  it('an in-memory server answers everything within the call: the whole rendezvous is synchronous', () => {
    const s = new LocalServer({ networks: [KEYS], seed: 1, randomBytes: counterBytes('sync') });
    s.handle({ type: 'datagram', socket: 'main', from: A, data: register('alice', 'bob', 1), now: T0 });
    const out = s.handle({ type: 'datagram', socket: 'main', from: B, data: register('bob', 'alice', 2), now: T0 + 1 });
    assert.deepEqual(sends(out).map((x) => decoded(x.data).kind), ['introduce', 'register-ok'], 'the push, then the answer');
    assert.equal(s.core.state.pendingEffects, 0);
  });
});
