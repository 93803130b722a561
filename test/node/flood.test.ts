/**
 * Floods against the real server in a process of its own (test/support/server-process.ts), whose memory is read from
 * /proc/PID/status:
 *   - 1,000,000 unauthenticated datagrams of every shape: memory stays flat and no state is created;
 *   - 120,000 distinct names registered by a client that holds the secret, under the default limits: memory stays
 *     within the bound of docs/protocol.md section 6, the oldest entries are evicted, and a real pair (two punch()
 *     peers) connects during the flood.
 * BURROW_FLOOD_DATAGRAMS overrides the first flood's size (default 1,000,000).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { punch } from '../../src/index.js';
import { decodeMessage } from '../../src/codec/messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { DEFAULT_LIMITS } from '../../src/server/core.js';
import { startServerProcess } from '../support/server-harness.js';
import { junk, registerRequest, unauthenticatedMix } from '../support/shapes.js';
import { floodUntil, openAttacker, pacedFlood } from '../support/udp-attacker.js';

const SECRET = 'flood test secret';
const KEYS = deriveNetworkKeys(Buffer.from(SECRET));
const WRONG = deriveNetworkKeys(Buffer.from('some other secret'));
const MiB = 1024 * 1024;
const FLOOD = Number(process.env.BURROW_FLOOD_DATAGRAMS ?? 1_000_000);
/** RSS growth allowed between warm-up and the end of the flood: V8 and glibc keep some freed pages (measured: < 2 MiB). */
const FLOOD_RSS_SLACK = 8 * MiB;

const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;

describe('flood: unauthenticated datagrams (real server process)', () => {
  it(`${FLOOD.toLocaleString('en')} junk and unauthenticated datagrams: flat memory, no state created`, async (t) => {
    // Per-source limits off: every datagram reaches the parsers, the MAC checks and the replay cache (the worst case,
    // and what an attacker with many source addresses gets anyway).
    const server = await startServerProcess({ secret: SECRET, limits: { perSourceRate: 1e9, perSourceBurst: 1e9 } });
    const attackers = [await openAttacker('127.0.0.50', false)];
    try {
      // Every shape of the unauthenticated mix, diluted with junk 1:3 so that a flood of a million fits in CI time
      // (the shapes that cost a MAC check are ~6% of the flood; the adversarial tests send the undiluted mix).
      const { datagrams, alternate } = unauthenticatedMix(KEYS, WRONG, 4096);
      const pool = Buffer.from(Array.from({ length: 1 << 16 }, (_, i) => (i * 2_654_435_761) >>> 24));
      const all = [
        ...datagrams.map((bytes) => ({ bytes, port: server.port })),
        ...alternate.map((bytes) => ({ bytes, port: server.alternatePort })),
        ...Array.from({ length: 3 * (datagrams.length + alternate.length) }, (_, i) => ({ bytes: junk(i, pool), port: server.port })),
      ];
      const sources = Array.from({ length: 8 }, (_, i) => `127.0.0.${60 + i}`);
      // Warm-up: the one real REGISTER (the first of the mix), then every shape many times over.
      await pacedFlood(server, 1, () => ({ from: attackers[0]!, ...all[0]! }));
      await floodUntil(server, 100_000, all.slice(1), sources);
      const warm = await server.snapshot();
      const warmRss = server.vmRss();
      const started = Date.now();
      const { sent: count, handled } = await floodUntil(server, FLOOD, all.slice(1), sources);
      const seconds = (Date.now() - started) / 1000;
      const end = await server.snapshot();
      const endRss = server.vmRss();
      t.diagnostic(`${count} datagrams sent, ${handled} handled (the rest dropped by the kernel: the socket buffer was full) in ${seconds.toFixed(1)} s (${Math.round(handled / seconds)}/s); VmRSS ${mib(warmRss)} after warm-up, ${mib(endRss)} at the end (${mib(endRss - warmRss)} growth); heap ${mib(warm.heapUsed)} → ${mib(end.heapUsed)}`);
      t.diagnostic(`state after warm-up ${JSON.stringify(warm.state)}, at the end ${JSON.stringify(end.state)}; malformed ${end.stats.malformed}, authFailures ${end.stats.authFailures}, stale ${end.stats.staleTimestamps}, replays ${end.stats.replaysRejected}`);
      assert.ok(handled >= FLOOD, `the server handled only ${handled}`);
      assert.ok(endRss - warmRss <= FLOOD_RSS_SLACK, `RSS grew by ${mib(endRss - warmRss)}`);
      assert.deepEqual(end.state, warm.state, 'unauthenticated traffic changed the server state');
      assert.equal(end.state.registrations, 1);
      assert.equal(end.stats.registrationsTotal, warm.stats.registrationsTotal);
      assert.ok(end.stats.unauthBytesOut <= end.stats.unauthBytesIn, 'amplified');
      assert.equal(end.internalErrors, 0);
    } finally {
      await Promise.all(attackers.map((a) => a.close()));
      await server.stop();
    }
  });
});

describe('flood: registrations by a client holding the secret (real server process, default limits)', () => {
  it('120,000 distinct names: bounded memory, oldest evicted, and a real pair connects during the flood', async (t) => {
    const NAMES = 120_000;
    const server = await startServerProcess({ secret: SECRET });
    // 300 source addresses: each spends its burst of 400 (the per-source limit stays at its default).
    const SOURCES = Math.ceil(NAMES / DEFAULT_LIMITS.perSourceBurst);
    const attackers = await Promise.all(Array.from({ length: SOURCES }, (_, i) => openAttacker(`127.0.${1 + Math.floor(i / 200)}.${1 + (i % 200)}`, i === 0)));
    const aborter = new AbortController();
    try {
      const idle = await server.snapshot();
      const idleRss = server.vmRss();
      const addr = `127.0.0.1:${server.port}`;
      // alice waits from the start; bob arrives half-way through the flood.
      const alice = punch({ server: addr, secret: SECRET, name: 'alice', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 60_000, signal: aborter.signal });
      let bob: ReturnType<typeof punch> | undefined;
      const now = Date.now();
      const started = Date.now();
      const { handled } = await pacedFlood(
        server,
        NAMES,
        (i) => {
          if (i === NAMES / 2) bob = punch({ server: addr, secret: SECRET, name: 'bob', peer: 'alice', local: '127.0.0.1:0', timeoutMs: 60_000, signal: aborter.signal });
          return { from: attackers[i % SOURCES]!, bytes: registerRequest(KEYS, { name: `flood-${i}`, target: `flood-${i}-partner`, timestamp: now + (Date.now() - started) }), port: server.port };
        },
        256,
        240_000,
      );
      const seconds = (Date.now() - started) / 1000;
      const [a, b] = await Promise.all([alice, bob!]);
      const end = await server.snapshot();
      const endRss = server.vmRss();
      const perEntry = (endRss - idleRss) / end.state.registrations;
      t.diagnostic(`${handled} REGISTERs of distinct names from ${SOURCES} sources in ${seconds.toFixed(1)} s; ${end.stats.registrationsTotal - idle.stats.registrationsTotal} accepted, ${end.stats.rateLimited} rate-limited, ${end.stats.evictions} evicted; store ${end.state.registrations} of ${DEFAULT_LIMITS.maxRegistrations}`);
      t.diagnostic(`VmRSS idle ${mib(idleRss)}, full store ${mib(endRss)}: ${mib(endRss - idleRss)} for ${end.state.registrations} registrations (${Math.round(perEntry)} bytes each, replay cache ${end.state.replayEntries} entries included); heap ${mib(end.heapUsed)}; young generation ${mib(idle.newSpace)} → ${mib(end.newSpace)}`);
      t.diagnostic(`alice ↔ bob connected during the flood: ${a.elapsedMs} ms and ${b.elapsedMs} ms, ${a.path}`);
      assert.equal(a.remotePort, b.localPort);
      assert.equal(b.remotePort, a.localPort);
      assert.equal(end.state.registrations, DEFAULT_LIMITS.maxRegistrations, 'the store is not at its bound');
      assert.ok(end.stats.evictions >= 0.95 * (NAMES - DEFAULT_LIMITS.maxRegistrations), `only ${end.stats.evictions} evictions`);
      // The oldest names are gone and the newest are there: their partners are introduced only to the newest.
      const probe = attackers[0]!;
      const introducedTo = async (i: number): Promise<boolean> => {
        const before = probe.replies.length;
        await probe.send(registerRequest(KEYS, { name: `flood-${i}-partner`, target: `flood-${i}`, timestamp: Date.now() }), server.port);
        for (let w = 0; probe.replies.length === before && w < 200; w++) await sleep(10);
        const d = decodeMessage(probe.replies[before] ?? new Uint8Array(0));
        assert.ok(d.ok && d.msg.kind === 'register-ok', 'no answer');
        return d.msg.intro !== undefined;
      };
      assert.equal(await introducedTo(0), false, 'the oldest registration was not evicted');
      assert.equal(await introducedTo(NAMES - 1), true, 'the newest registration is missing');
      // docs/protocol.md section 6: a full store of 100,000 registrations takes at most 128 MiB beyond an idle server,
      // besides V8's young generation: a nursery for short-lived objects that V8 grows with the request rate (to at
      // most 3 × 16 MiB with Node's defaults), whatever the state.
      const youngGrowth = Math.max(0, end.newSpace - idle.newSpace);
      assert.ok(end.newSpace <= 48 * MiB, `young generation ${mib(end.newSpace)}`);
      assert.ok(endRss - idleRss - youngGrowth <= 128 * MiB, `a full store took ${mib(endRss - idleRss - youngGrowth)} (young generation growth ${mib(youngGrowth)} aside)`);
      assert.equal(end.internalErrors, 0);
    } finally {
      aborter.abort();
      await Promise.all(attackers.map((x) => x.close()));
      await server.stop();
    }
  });
});
