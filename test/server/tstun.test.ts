/** The T-STUN core, driven directly with connection ids, bytes and a fake clock. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzRuns } from '../support/fuzz.js';
import type { Endpoint } from '../../src/codec/address.js';
import { BurrowError } from '../../src/errors.js';
import {
  DEFAULT_TSTUN_LIMITS, TSTUN_KEY_BYTES, TstunCore, encodeTstunAnswer,
  type TstunAction, type TstunEvent, type TstunLimits,
} from '../../src/server/tstun.js';

const T0 = 1_000_000;
const KEY = sha256('correct horse');
const OTHER_KEY = sha256('battery staple');

function sha256(text: string): Uint8Array {
  return createHash('sha256').update(text).digest();
}

/** Generous rate limits unless a test is about them, so that only the limit under test bites. */
function core(limits: Partial<TstunLimits> = {}): TstunCore {
  return new TstunCore({ limits: { perSourceBurst: 10_000, ...limits }, seed: 7 });
}

function ep(address: string, port: number): Endpoint {
  return { address, port };
}

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** What each connection was told, as text, and who was closed or destroyed. */
function summary(actions: TstunAction[]) {
  const written = new Map<number, string>();
  const closed: number[] = [];
  const destroyed: [number, string][] = [];
  const events: TstunEvent[] = [];
  for (const a of actions) {
    switch (a.type) {
      case 'write': written.set(a.id, (written.get(a.id) ?? '') + text(a.data)); break;
      case 'close': closed.push(a.id); break;
      case 'destroy': destroyed.push([a.id, a.reason]); break;
      case 'event': events.push(a.event); break;
      default: a satisfies never;
    }
  }
  return { written, closed, destroyed, events };
}

/** A client that connects, sends the key in one piece and half-closes, as punchhole's does. */
function client(s: TstunCore, id: number, remote: Endpoint, key: Uint8Array, now = T0): TstunAction[] {
  return [...s.handleConnected(id, remote, now), ...s.handleData(id, key, now), ...s.handleEnded(id)];
}

describe('T-STUN core', () => {
  it('tells each of two clients with the same key the other’s address, "<ip> <port>" with no newline, then closes', () => {
    const s = core();
    const first = summary(client(s, 1, ep('198.51.100.2', 40000), KEY));
    assert.equal(first.written.size, 0);
    assert.deepEqual(first.events.map((e) => e.type), ['waiting']);
    assert.equal(s.stats.waiting, 1);

    const out = summary(client(s, 2, ep('203.0.113.9', 51000), KEY, T0 + 250));
    assert.equal(out.written.get(1), '203.0.113.9 51000');
    assert.equal(out.written.get(2), '198.51.100.2 40000');
    assert.deepEqual(out.closed, [1, 2]);
    assert.deepEqual(out.destroyed, []);
    const paired = out.events.find((e) => e.type === 'paired');
    assert.deepEqual(paired, { type: 'paired', first: { id: 1, remote: ep('198.51.100.2', 40000) }, second: { id: 2, remote: ep('203.0.113.9', 51000) }, waitedMs: 250 });
    assert.equal(s.stats.pairs, 1);
    assert.equal(s.stats.waiting, 0);
    // Both stay tracked until the driver reports them closed.
    assert.equal(s.stats.open, 2);
    s.handleClosed(1);
    s.handleClosed(2);
    assert.equal(s.stats.open, 0);
    assert.equal(s.nextTimeoutAt, undefined);
  });

  it('writes each answer as one write no longer than punchhole’s 52-byte recv()', () => {
    const s = core();
    client(s, 1, ep('ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe', 65535), KEY);
    const writes = client(s, 2, ep('2001:db8::1', 5000), KEY).filter((a) => a.type === 'write');
    assert.equal(writes.length, 2);
    for (const w of writes) assert.ok(w.data.length <= 52);
    assert.deepEqual(Buffer.from(encodeTstunAnswer(ep('192.0.2.1', 3477))), Buffer.from('192.0.2.1 3477', 'ascii'));
    assert.equal(encodeTstunAnswer(ep('ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe', 65535)).length, 45);
  });

  it('answers a client that never half-closes (punchhole’s own server does not wait for EOF)', () => {
    const s = core();
    s.handleConnected(1, ep('192.0.2.1', 1000), T0);
    s.handleData(1, KEY, T0);
    s.handleConnected(2, ep('192.0.2.2', 2000), T0);
    const out = summary(s.handleData(2, KEY, T0));
    assert.equal(out.written.get(1), '192.0.2.2 2000');
    assert.equal(out.written.get(2), '192.0.2.1 1000');
    // A late EOF is harmless.
    assert.deepEqual(s.handleEnded(1), []);
  });

  it('shows IPv4-mapped IPv6 peers (dual-stack sockets) as dotted quads, and IPv6 in RFC 5952 form', () => {
    const s = core();
    client(s, 1, ep('::ffff:192.0.2.33', 1234), KEY);
    const out = summary(client(s, 2, ep('2001:0DB8:0:0:0:0:0:7', 4321), KEY));
    assert.equal(out.written.get(2), '192.0.2.33 1234');
    assert.equal(out.written.get(1), '2001:db8::7 4321');
  });

  it('does not pair different keys', () => {
    const s = core();
    client(s, 1, ep('192.0.2.1', 1), KEY);
    const out = summary(client(s, 2, ep('192.0.2.2', 2), OTHER_KEY));
    assert.equal(out.written.size, 0);
    assert.equal(s.stats.waiting, 2);
  });

  it('pairs in arrival order: of three clients with one key the third waits, and a fourth completes it', () => {
    const s = core();
    client(s, 1, ep('192.0.2.1', 1), KEY);
    const second = summary(client(s, 2, ep('192.0.2.2', 2), KEY));
    assert.deepEqual([...second.written.keys()].sort(), [1, 2]);
    const third = summary(client(s, 3, ep('192.0.2.3', 3), KEY));
    assert.equal(third.written.size, 0);
    assert.deepEqual(third.events.map((e) => e.type), ['waiting']);
    const fourth = summary(client(s, 4, ep('192.0.2.4', 4), KEY));
    assert.equal(fourth.written.get(3), '192.0.2.4 4');
    assert.equal(fourth.written.get(4), '192.0.2.3 3');
    assert.equal(s.stats.pairs, 2);
    assert.equal(s.stats.waiting, 0);
  });

  it('never pairs with a client that disconnected while waiting', () => {
    const s = core();
    client(s, 1, ep('192.0.2.1', 1), KEY);
    const left = summary(s.handleClosed(1));
    assert.deepEqual(left.events, [{ type: 'left', client: { id: 1, remote: ep('192.0.2.1', 1) }, phase: 'waiting' }]);
    assert.equal(s.stats.left, 1);
    const second = summary(client(s, 2, ep('192.0.2.2', 2), KEY));
    assert.equal(second.written.size, 0, 'paired with a dead connection');
    const third = summary(client(s, 3, ep('192.0.2.3', 3), KEY));
    assert.equal(third.written.get(2), '192.0.2.3 3');
    assert.equal(third.written.get(3), '192.0.2.2 2');
  });

  it('forgets a client that disconnects while still sending its key', () => {
    const s = core();
    s.handleConnected(1, ep('192.0.2.1', 1), T0);
    s.handleData(1, KEY.subarray(0, 10), T0);
    assert.deepEqual(summary(s.handleClosed(1)).events.map((e) => e.type === 'left' && e.phase), ['collecting']);
    assert.equal(s.stats.open, 0);
  });

  describe('rejects a bad key with a typed reason and keeps no state', () => {
    const cases: { name: string; feed: (s: TstunCore) => TstunAction[]; reason: string }[] = [
      { name: '33 bytes in one piece', feed: (s) => s.handleData(1, new Uint8Array(33), T0), reason: 'key-too-long' },
      { name: '20 + 13 bytes', feed: (s) => [...s.handleData(1, new Uint8Array(20), T0), ...s.handleData(1, new Uint8Array(13), T0)], reason: 'key-too-long' },
      { name: '32 bytes, then one more while waiting', feed: (s) => [...s.handleData(1, KEY, T0), ...s.handleData(1, new Uint8Array(1), T0)], reason: 'key-too-long' },
      { name: '31 bytes, then EOF', feed: (s) => [...s.handleData(1, KEY.subarray(0, 31), T0), ...s.handleEnded(1)], reason: 'key-too-short' },
      { name: 'EOF without a byte', feed: (s) => s.handleEnded(1), reason: 'key-too-short' },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const s = core();
        s.handleConnected(1, ep('192.0.2.1', 1), T0);
        const out = summary(c.feed(s));
        assert.deepEqual(out.destroyed, [[1, c.reason]]);
        assert.equal(out.written.size, 0);
        assert.deepEqual([s.stats.open, s.stats.waiting, s.stats.sources], [0, 0, 0]);
        assert.equal(s.nextTimeoutAt, undefined);
        // The key did not stay registered: the next client with it waits instead of pairing.
        assert.equal(summary(client(s, 2, ep('192.0.2.2', 2), KEY)).written.size, 0);
      });
    }
  });

  it('drops a client whose 32 bytes do not arrive within the key timeout', () => {
    const s = core();
    s.handleConnected(1, ep('192.0.2.1', 1), T0);
    s.handleData(1, KEY.subarray(0, 10), T0 + 100);
    assert.equal(s.nextTimeoutAt, T0 + DEFAULT_TSTUN_LIMITS.keyTimeoutMs);
    assert.deepEqual(s.handleTimer(T0 + DEFAULT_TSTUN_LIMITS.keyTimeoutMs - 1), []);
    const out = summary(s.handleTimer(T0 + DEFAULT_TSTUN_LIMITS.keyTimeoutMs));
    assert.deepEqual(out.destroyed, [[1, 'key-timeout']]);
    assert.deepEqual(out.events.map((e) => e.type === 'timed-out' && e.phase), ['key']);
    assert.equal(s.stats.timedOut.key, 1);
    assert.equal(s.stats.open, 0);
  });

  it('drops a client nobody joins within the partner timeout, and does not pair with it afterwards', () => {
    const s = core();
    client(s, 1, ep('192.0.2.1', 1), KEY, T0 + 5);
    assert.equal(s.nextTimeoutAt, T0 + 5 + DEFAULT_TSTUN_LIMITS.partnerTimeoutMs);
    assert.deepEqual(s.handleTimer(T0 + 4 + DEFAULT_TSTUN_LIMITS.partnerTimeoutMs), []);
    const out = summary(s.handleTimer(T0 + 5 + DEFAULT_TSTUN_LIMITS.partnerTimeoutMs));
    assert.deepEqual(out.destroyed, [[1, 'partner-timeout']]);
    assert.equal(s.stats.timedOut.partner, 1);
    assert.equal(summary(client(s, 2, ep('192.0.2.2', 2), KEY, T0 + 200_000)).written.size, 0);
  });

  it('destroys an answered connection that does not finish closing within the linger timeout', () => {
    const s = core({ lingerTimeoutMs: 500 });
    client(s, 1, ep('192.0.2.1', 1), KEY);
    client(s, 2, ep('192.0.2.2', 2), KEY);
    s.handleClosed(2);
    // Bytes after the answer are ignored, not a reason to reject.
    assert.deepEqual(s.handleData(1, new Uint8Array(100), T0 + 10), []);
    const out = summary(s.handleTimer(T0 + 500));
    assert.deepEqual(out.destroyed, [[1, 'linger-timeout']]);
    assert.equal(s.stats.open, 0);
    assert.equal(s.nextTimeoutAt, undefined);
  });

  it('expires the earliest deadline across phases first', () => {
    const s = core({ keyTimeoutMs: 1000, partnerTimeoutMs: 300 });
    s.handleConnected(1, ep('192.0.2.1', 1), T0); // key deadline T0 + 1000
    client(s, 2, ep('192.0.2.2', 2), KEY, T0 + 100); // partner deadline T0 + 400
    assert.equal(s.nextTimeoutAt, T0 + 400);
    assert.deepEqual(summary(s.handleTimer(T0 + 400)).destroyed, [[2, 'partner-timeout']]);
    assert.equal(s.nextTimeoutAt, T0 + 1000);
  });

  it('limits open connections per IPv4 address, and frees the slot on close', () => {
    const s = core();
    for (let i = 0; i < 16; i++) assert.deepEqual(s.handleConnected(i, ep('192.0.2.1', 1000 + i), T0), []);
    assert.deepEqual(summary(s.handleConnected(16, ep('192.0.2.1', 2000), T0)).destroyed, [[16, 'too-many-from-source']]);
    assert.deepEqual(s.handleConnected(17, ep('192.0.2.2', 2000), T0), [], 'another address is not affected');
    s.handleClosed(0);
    assert.deepEqual(s.handleConnected(18, ep('192.0.2.1', 3000), T0), []);
    assert.equal(s.stats.rejected['too-many-from-source'], 1);
  });

  it('counts an IPv6 /64 as one source, and a dual-stack IPv4 client as its IPv4 address', () => {
    const s = core({ maxConnectionsPerSource: 2 });
    assert.deepEqual(s.handleConnected(1, ep('2001:db8:1:2::a', 1), T0), []);
    assert.deepEqual(s.handleConnected(2, ep('2001:db8:1:2:ffff::b', 1), T0), []);
    assert.deepEqual(summary(s.handleConnected(3, ep('2001:db8:1:2::c', 1), T0)).destroyed, [[3, 'too-many-from-source']]);
    assert.deepEqual(s.handleConnected(4, ep('2001:db8:1:3::a', 1), T0), [], 'another /64');
    assert.deepEqual(s.handleConnected(5, ep('192.0.2.1', 1), T0), []);
    assert.deepEqual(s.handleConnected(6, ep('::ffff:192.0.2.1', 2), T0), []);
    assert.deepEqual(summary(s.handleConnected(7, ep('192.0.2.1', 3), T0)).destroyed, [[7, 'too-many-from-source']]);
  });

  it('limits open connections overall', () => {
    const s = core({ maxConnections: 4 });
    for (let i = 0; i < 4; i++) assert.deepEqual(s.handleConnected(i, ep(`192.0.2.${i + 1}`, 1), T0), []);
    const out = summary(s.handleConnected(4, ep('192.0.2.99', 1), T0));
    assert.deepEqual(out.destroyed, [[4, 'too-many-connections']]);
    assert.deepEqual(out.events.map((e) => e.type === 'rejected' && e.reason), ['too-many-connections']);
    // A turned-away connection left nothing behind: its later inputs are ignored.
    assert.deepEqual(s.handleData(4, KEY, T0), []);
    assert.deepEqual(s.handleClosed(4), []);
    assert.equal(s.stats.open, 4);
  });

  it('limits the connection rate per source in a fixed table', () => {
    const s = core({ perSourceRate: 1, perSourceBurst: 3 });
    const open = (id: number, address: string, now: number) => {
      const out = s.handleConnected(id, ep(address, id), now);
      s.handleClosed(id); // rate, not concurrency, is under test
      return summary(out).destroyed;
    };
    for (let i = 0; i < 3; i++) assert.deepEqual(open(i, '192.0.2.1', T0), []);
    assert.deepEqual(open(3, '192.0.2.1', T0), [[3, 'rate-limited']]);
    assert.deepEqual(open(4, '192.0.2.2', T0), [], 'another source has its own bucket');
    assert.deepEqual(open(5, '192.0.2.1', T0 + 1000), [], 'one token a second');
    assert.equal(s.stats.rejected['rate-limited'], 1);
  });

  it('ignores a repeated connection id (a driver bug) without disturbing the open one', () => {
    const s = core();
    s.handleConnected(1, ep('192.0.2.1', 1), T0);
    assert.deepEqual(s.handleConnected(1, ep('192.0.2.9', 9), T0), []);
    assert.equal(s.stats.open, 1);
    s.handleClosed(1);
    assert.equal(s.stats.open, 0);
  });

  it('refuses nonsensical limits with a USAGE error', () => {
    for (const limits of [{ maxConnections: 0 }, { keyTimeoutMs: Number.NaN }, { rateTableSlots: 1000 }, { perSourceRate: -1 }]) {
      assert.throws(() => new TstunCore({ limits, seed: 1 }), (e: unknown) => e instanceof BurrowError && e.code === 'USAGE');
    }
  });
});

describe('T-STUN core properties', () => {
  /** Splits `bytes` at the given cut points. */
  function chunks(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
    const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
    const out: Uint8Array[] = [];
    let at = 0;
    for (const p of [...points, bytes.length]) {
      out.push(bytes.subarray(at, p)); // empty pieces included on purpose
      at = p;
    }
    return out;
  }

  /** Two clients, each sending its key in the given pieces, with or without a half-close. */
  function pairWith(aCuts: number[], bCuts: number[], halfClose: boolean, key: Uint8Array) {
    const s = core();
    const out: TstunAction[] = [];
    s.handleConnected(1, ep('192.0.2.1', 1111), T0);
    s.handleConnected(2, ep('2001:db8::2', 2222), T0);
    for (const piece of chunks(key, aCuts)) out.push(...s.handleData(1, piece, T0));
    if (halfClose) out.push(...s.handleEnded(1));
    for (const piece of chunks(key, bCuts)) out.push(...s.handleData(2, piece, T0));
    if (halfClose) out.push(...s.handleEnded(2));
    return out;
  }

  it('gives the same answers however the 32-byte keys are split into pieces', () => {
    const reference = pairWith([], [], true, KEY);
    assert.equal(reference.filter((a) => a.type === 'write').length, 2);
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: TSTUN_KEY_BYTES, maxLength: TSTUN_KEY_BYTES }),
        fc.array(fc.nat(64), { maxLength: 40 }),
        fc.array(fc.nat(64), { maxLength: 40 }),
        fc.boolean(),
        (key, aCuts, bCuts, halfClose) => {
          assert.deepEqual(pairWith(aCuts, bCuts, halfClose, key), reference);
        },
      ),
      { numRuns: fuzzRuns(500) },
    );
  });

  it('never throws on any sequence of inputs, stays within its limits and cleans up completely', () => {
    const addresses = ['192.0.2.1', '192.0.2.2', '::ffff:192.0.2.1', '2001:db8::1', '2001:db8::2', 'not an address', ''];
    const input = fc.oneof(
      fc.record({ type: fc.constant('connected' as const), id: fc.nat(12), address: fc.constantFrom(...addresses), port: fc.integer({ min: -1, max: 70_000 }) }),
      fc.record({ type: fc.constant('data' as const), id: fc.nat(12), bytes: fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.constant(KEY), fc.constant(KEY.subarray(0, 16)), fc.constant(KEY.subarray(16))) }),
      fc.record({ type: fc.constant('ended' as const), id: fc.nat(12) }),
      fc.record({ type: fc.constant('closed' as const), id: fc.nat(12) }),
      fc.record({ type: fc.constant('timer' as const) }),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(input, fc.nat(20_000)), { maxLength: 80 }), (steps) => {
        const limits = { maxConnections: 6, maxConnectionsPerSource: 3, keyTimeoutMs: 5_000, partnerTimeoutMs: 20_000, lingerTimeoutMs: 1_000, perSourceRate: 2, perSourceBurst: 4 };
        const s = new TstunCore({ limits, seed: 3 });
        const live = new Set<number>(); // ids the core may still act on
        let now = T0;
        for (const [step, dt] of steps) {
          now += dt;
          let out: TstunAction[];
          switch (step.type) {
            case 'connected': out = s.handleConnected(step.id, ep(step.address, step.port), now); live.add(step.id); break;
            case 'data': out = s.handleData(step.id, step.bytes, now); break;
            case 'ended': out = s.handleEnded(step.id); break;
            case 'closed': out = s.handleClosed(step.id); live.delete(step.id); break;
            case 'timer': out = s.handleTimer(now); break;
            default: step satisfies never; out = [];
          }
          for (const a of out) {
            if (a.type !== 'event') assert.ok(live.has(a.id), `action for a connection the driver closed: ${JSON.stringify(a)}`);
            if (a.type === 'write') assert.ok(a.data.length <= 52);
          }
          assert.ok(s.stats.open >= 0 && s.stats.open <= limits.maxConnections);
          assert.ok(s.stats.waiting >= 0 && s.stats.waiting <= s.stats.open);
          assert.ok(s.stats.sources <= s.stats.open);
          const next = s.nextTimeoutAt;
          if (s.stats.open === 0) assert.equal(next, undefined);
        }
        // Everything expires on its own.
        s.handleTimer(now + 200_000);
        assert.deepEqual([s.stats.open, s.stats.waiting, s.stats.sources], [0, 0, 0]);
        assert.equal(s.nextTimeoutAt, undefined);
      }),
      { numRuns: fuzzRuns(1000) },
    );
  });
});
