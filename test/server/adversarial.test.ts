/**
 * The rendezvous server under attack, as it runs: the library's startServer in a process of its own
 * (test/support/server-process.ts), real UDP and TCP sockets on loopback, attackers on their own 127.x addresses.
 * Issue 5's adversarial items, one describe each:
 *   - crash inputs: everything that crashes a seed tool, the server stays up and keeps answering;
 *   - replay of every authenticated message type, from the original address and from another one;
 *   - amplification accounting, on the wire and in the server's counters, in strict and default mode;
 *   - per-source rate limits, with their effect measured.
 * Figures go to the test output (t.diagnostic).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { endpointKey } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage, type BurrowMessage } from '../../src/codec/messages.js';
import { decodeStun, splitStunStream, verifyIntegrity } from '../../src/codec/stun.js';
import { bindingRequest } from '../../src/core/stun-client.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { DEFAULT_LIMITS, type ServerLimits } from '../../src/server/core.js';
import { startServerProcess, type ServerProcess, type ServerSnapshot } from '../support/server-harness.js';
import { everyMessageType, junk, malformedMessages, registerRequest, txid, unauthenticatedMix } from '../support/shapes.js';
import { openAttacker, pacedSend, type Attacker } from '../support/udp-attacker.js';
import { decodeWgSync, encodeWgSync, wgProof } from '../../src/codec/wg-messages.js';
import { consumeResponse, createInitiation, dh, publicKeyOf, sealTransport, tai64n } from '../../src/crypto/wireguard.js';
import { randomBytes } from 'node:crypto';

const SECRET = 'adversarial test secret';
const KEYS = deriveNetworkKeys(Buffer.from(SECRET));
const WRONG = deriveNetworkKeys(Buffer.from('not the server secret'));
/** Every datagram reaches the parsers: the per-source limit would otherwise drop most of a test's inputs unread. */
const NO_RATE_LIMIT = { perSourceRate: 1e9, perSourceBurst: 1e9 };

/** Decodes an answer from the server and checks that the server authenticated it. */
function authenticatedAnswer(bytes: Uint8Array): BurrowMessage {
  const stun = decodeStun(bytes);
  assert.ok(stun.ok, 'answer is not STUN');
  assert.equal(verifyIntegrity(bytes, stun.msg, KEYS.serverToClient), 'valid');
  const d = decodeMessage(bytes);
  assert.ok(d.ok);
  return d.msg;
}

async function waitFor(check: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

let healthChecks = 0;
/** The server is alive and still does its job: answers a Binding request and registers a peer. */
async function assertServing(server: ServerProcess): Promise<void> {
  assert.ok(server.alive(), `the server process died: ${server.stderr()}`);
  const client = await openAttacker('127.0.0.1');
  try {
    await client.send(encodeMessage(bindingRequest(txid())), server.port);
    await client.send(registerRequest(KEYS, { name: `health-${++healthChecks}`, target: 'nobody', timestamp: Date.now() }), server.port);
    await waitFor(() => client.replies.length >= 2, 'the server to answer a Binding request and a REGISTER');
    const kinds = client.replies.map((r) => decodeMessage(r)).map((d) => (d.ok ? d.msg.kind : d.reason)).sort();
    assert.deepEqual(kinds, ['binding-ok', 'register-ok']);
    const ok = client.replies.find((r) => decodeMessage(r).ok && (decodeMessage(r) as { msg: BurrowMessage }).msg.kind === 'register-ok')!;
    authenticatedAnswer(ok);
  } finally {
    await client.close();
  }
}

/** A Binding answer exceeds its request by at most this: 20 → 44 bytes (IPv6), 28 → 52 with FINGERPRINT. */
const MAX_BINDING_EXCESS = 24;

/**
 * Every answer names the request it answers by transaction id; it must be no longer than that request, except the
 * minimal answer to a Binding request (at most 24 bytes longer). Returns the excess bytes of those.
 */
function checkAnswerSizes(sent: readonly Uint8Array[], replies: readonly Buffer[]): number {
  const requestLength = new Map<string, number>();
  for (const s of sent) if (s.length >= 20) requestLength.set(Buffer.from(s.subarray(8, 20)).toString('hex'), Math.max(s.length, requestLength.get(Buffer.from(s.subarray(8, 20)).toString('hex')) ?? 0));
  let excess = 0;
  for (const r of replies) {
    const id = r.subarray(8, 20).toString('hex');
    const length = requestLength.get(id);
    assert.ok(length !== undefined, `an answer to nothing we sent: ${r.toString('hex')}`);
    if (r.length <= length) continue;
    const d = decodeMessage(r);
    assert.ok(d.ok && d.msg.kind === 'binding-ok', `a ${d.ok ? d.msg.kind : d.reason} answer of ${r.length} bytes to a ${length}-byte request`);
    assert.ok(r.length - length <= MAX_BINDING_EXCESS, `a Binding answer ${r.length - length} bytes longer than its request`);
    excess += r.length - length;
  }
  return excess;
}

async function sendAndSettle(server: ServerProcess, attacker: Attacker, datagrams: readonly Uint8Array[], ports: readonly number[]): Promise<void> {
  await pacedSend(server, ports.flatMap((port) => datagrams.map((bytes) => ({ from: attacker, bytes, port }))));
}

describe('adversarial: crash inputs against the real server process (real sockets)', () => {
  let server: ServerProcess;
  let attacker: Attacker;
  before(async () => {
    server = await startServerProcess({ secret: SECRET, limits: NO_RATE_LIMIT });
    attacker = await openAttacker('127.0.0.2');
  });
  after(async () => {
    await attacker.close();
    const snap = await server.snapshot();
    assert.equal(snap.internalErrors, 0, 'the core threw on some input');
    const exit = await server.stop();
    assert.equal(exit.code, 0, `the server did not stop cleanly: ${server.stderr()}`);
  });

  it('empty datagrams (natpunch-go’s crash) are dropped unanswered, on both ports', async () => {
    const before = (await server.snapshot()).stats.malformed;
    await sendAndSettle(server, attacker, Array.from({ length: 100 }, () => new Uint8Array(0)), [server.port, server.alternatePort]);
    assert.equal(attacker.counts.received, 0);
    assert.equal((await server.snapshot()).stats.malformed - before, 200);
    await assertServing(server);
  });

  it('every single byte 0x00–0xFF is dropped unanswered, on both ports', async () => {
    await sendAndSettle(server, attacker, Array.from({ length: 256 }, (_, i) => Uint8Array.of(i)), [server.port, server.alternatePort]);
    assert.equal(attacker.counts.received, 0);
    await assertServing(server);
  });

  it('every prefix of every valid message type is dropped unanswered, on both ports', async (t) => {
    const prefixes: Uint8Array[] = [];
    for (const m of everyMessageType(KEYS, Date.now())) for (let n = 0; n < m.bytes.length; n++) prefixes.push(m.bytes.subarray(0, n));
    await sendAndSettle(server, attacker, prefixes, [server.port, server.alternatePort]);
    t.diagnostic(`${prefixes.length} prefixes of ${everyMessageType(KEYS, 0).length} message types, to 2 ports: ${attacker.counts.received} answers`);
    assert.equal(attacker.counts.received, 0);
    await assertServing(server);
  });

  it('truncations with a consistent length field get no answer longer than themselves (bare Binding aside)', async (t) => {
    const cuts: Uint8Array[] = [];
    for (const m of everyMessageType(KEYS, Date.now())) {
      for (let n = 20; n < m.bytes.length; n += 4) {
        const c = Buffer.from(m.bytes.subarray(0, n));
        c.writeUInt16BE(n - 20, 2);
        cuts.push(c);
      }
    }
    const a = await openAttacker('127.0.0.3');
    try {
      await sendAndSettle(server, a, cuts, [server.port]);
      const excess = checkAnswerSizes(cuts, a.replies);
      t.diagnostic(`${cuts.length} truncations: ${a.counts.received} answers, ${a.counts.receivedBytes} bytes for ${a.counts.sentBytes} sent; Binding-answer excess ${excess} bytes`);
    } finally {
      await a.close();
    }
    await assertServing(server);
  });

  it('unknown methods, lying length fields and oversized attributes (0xFFFF, longer than the datagram) get no answer longer than themselves', async (t) => {
    const inputs = malformedMessages();
    const a = await openAttacker('127.0.0.4');
    try {
      for (const { label, bytes } of inputs) {
        await sendAndSettle(server, a, [bytes], [server.port, server.alternatePort]);
        assert.ok(server.alive(), `${label} killed the server`);
      }
      // A Binding request with an empty comprehension-required attribute is still a Binding request: it gets the
      // minimal answer like a bare one.
      const excess = checkAnswerSizes(inputs.map((i) => i.bytes), a.replies);
      t.diagnostic(`${inputs.length} malformed messages to 2 ports: ${a.counts.received} answers (${a.counts.receivedBytes} bytes), Binding-answer excess ${excess} bytes`);
    } finally {
      await a.close();
    }
    await assertServing(server);
  });

  it('netpunch’s crash, a replay: every message type sent three times leaves the server answering', async () => {
    const a = await openAttacker('127.0.0.5');
    try {
      const messages = everyMessageType(KEYS, Date.now()).map((m) => m.bytes);
      const before = (await server.snapshot()).stats.replaysRejected;
      await sendAndSettle(server, a, [...messages, ...messages, ...messages], [server.port]);
      // The two UDP REGISTERs (an older client's, and a current client's refresh) are fresh the first time, then replays twice.
      assert.equal((await server.snapshot()).stats.replaysRejected - before, 4);
      checkAnswerSizes(messages, a.replies);
    } finally {
      await a.close();
    }
    await assertServing(server);
  });

  it('a stream of random junk of every shape (20,000 datagrams) leaves it answering', async () => {
    const pool = Buffer.from(Array.from({ length: 1 << 16 }, (_, i) => (i * 2_654_435_761) >>> 24));
    await sendAndSettle(server, attacker, Array.from({ length: 20_000 }, (_, i) => junk(i, pool)), [server.port]);
    assert.equal(attacker.counts.received, 0);
    await assertServing(server);
  });
});

/** A TCP connection to the rendezvous port, from `localAddress`, collecting whole STUN messages. */
async function tcpClient(port: number, localAddress: string): Promise<{ socket: net.Socket; messages: Uint8Array[]; bytes: () => number; local: string }> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const messages: Uint8Array[] = [];
  let pending = Buffer.alloc(0);
  let bytes = 0;
  socket.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    pending = Buffer.concat([pending, chunk]);
    const split = splitStunStream(pending);
    if ('error' in split) return;
    messages.push(...split.messages);
    pending = Buffer.from(split.rest);
  });
  socket.on('error', () => undefined);
  return { socket, messages, bytes: () => bytes, local: `${socket.localAddress ?? ''}:${String(socket.localPort)}` };
}

function sameState(a: ServerSnapshot, b: ServerSnapshot): void {
  assert.deepEqual({ ...b.state }, { ...a.state }, 'a replay changed the server state');
  assert.equal(b.stats.registrationsTotal, a.stats.registrationsTotal, 'a replay registered something');
  assert.equal(b.stats.introductions, a.stats.introductions, 'a replay introduced someone');
}

describe('adversarial: replay of every authenticated message type (real server process)', () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServerProcess({ secret: SECRET });
  });
  after(async () => {
    assert.equal((await server.snapshot()).internalErrors, 0);
    await server.stop();
  });

  it('UDP: REGISTER, answers, pushes, PROBE and CLOSE replayed from the original and from another address change nothing and draw no bytes', async (t) => {
    const now = Date.now();
    const alice = await openAttacker('127.0.0.1');
    const bob = await openAttacker('127.0.0.1');
    const other = await openAttacker('127.0.0.9');
    try {
      // A real exchange to capture: alice registers, bob registers (alice gets the push), alice refreshes (acks it).
      const nonceA = Buffer.alloc(16, 0xa1);
      const regA = registerRequest(KEYS, { name: 'alice', target: 'bob', timestamp: now, nonce: nonceA });
      await alice.send(regA, server.port);
      await waitFor(() => alice.replies.length === 1, 'alice’s answer');
      const regB = registerRequest(KEYS, { name: 'bob', target: 'alice', timestamp: now });
      await bob.send(regB, server.port);
      await waitFor(() => bob.replies.length === 1 && alice.replies.length === 2, 'bob’s answer and the push to alice');
      const regA2 = registerRequest(KEYS, { name: 'alice', target: 'bob', timestamp: now, nonce: nonceA });
      await alice.send(regA2, server.port);
      await waitFor(() => alice.replies.length === 3, 'alice’s refreshed answer');
      const [okA, push, okA2] = alice.replies as [Buffer, Buffer, Buffer];
      const okB = bob.replies[0]!;
      assert.equal(authenticatedAnswer(push).kind, 'introduce');
      await sleep(2000); // every re-sent push has gone (acknowledged by the refresh anyway)
      const peerShapes = everyMessageType(KEYS, now).filter((m) => /PROBE|CLOSE|REGISTER error/.test(m.label));
      const captured: { label: string; bytes: Buffer; register: boolean }[] = [
        { label: 'REGISTER alice', bytes: regA, register: true },
        { label: 'REGISTER bob', bytes: regB, register: true },
        { label: 'REGISTER alice (refresh)', bytes: regA2, register: true },
        { label: 'REGISTER success to alice', bytes: okA, register: false },
        { label: 'REGISTER success to bob (with introduction)', bytes: okB, register: false },
        { label: 'REGISTER success to alice (refresh)', bytes: okA2, register: false },
        { label: 'INTRODUCE pushed to alice', bytes: push, register: false },
        ...peerShapes.map((m) => ({ ...m, register: false })),
      ];
      const s0 = await server.snapshot();
      const aliceBytes = alice.counts.receivedBytes;
      const bobBytes = bob.counts.receivedBytes;
      let replayedBytes = 0;
      for (const from of [alice, bob, other]) {
        for (const c of captured) {
          await sendAndSettle(server, from, [c.bytes], [server.port]);
          replayedBytes += c.bytes.length;
        }
      }
      const s1 = await server.snapshot();
      sameState(s0, s1);
      const registers = captured.filter((c) => c.register).length;
      assert.equal(s1.stats.replaysRejected - s0.stats.replaysRejected, 3 * registers, 'every replayed REGISTER is counted as a replay');
      assert.equal(s1.stats.malformed - s0.stats.malformed, 3 * (captured.length - registers), 'every other replayed message is dropped as not for the server');
      const drawn = alice.counts.receivedBytes - aliceBytes + bob.counts.receivedBytes - bobBytes + other.counts.receivedBytes;
      t.diagnostic(`${3 * captured.length} replays (${replayedBytes} bytes) from alice’s, bob’s and a third address: ${drawn} bytes answered; replaysRejected +${s1.stats.replaysRejected - s0.stats.replaysRejected}, malformed +${s1.stats.malformed - s0.stats.malformed}`);
      assert.equal(drawn, 0, 'a replay drew an answer');
      // The registrations still point where they did: bob, re-registering with a new session, is introduced to
      // alice at alice’s own address, not at the replaying one. (The old bob session, at the same address, is told
      // it was displaced: two NOTICEs before or after the answer.)
      await bob.send(registerRequest(KEYS, { name: 'bob', target: 'alice', timestamp: Date.now() }), server.port);
      const answerOf = (): Buffer | undefined => bob.replies.slice(1).find((r) => authenticatedAnswer(r).kind === 'register-ok');
      await waitFor(() => answerOf() !== undefined && bob.replies.length === 4, 'bob’s new answer and the two NOTICEs to the old bob session');
      assert.deepEqual(bob.replies.slice(1).map((r) => authenticatedAnswer(r).kind).sort(), ['notice', 'notice', 'register-ok']);
      const fresh = authenticatedAnswer(answerOf()!);
      assert.ok(fresh.kind === 'register-ok' && fresh.intro !== undefined);
      assert.equal(endpointKey(fresh.intro.peerMapped), `127.0.0.1:${alice.port}`);
      assert.deepEqual(Buffer.from(fresh.intro.peerNonce), nonceA);
    } finally {
      await Promise.all([alice.close(), bob.close(), other.close()]);
    }
  });

  it('WireGuard: a handshake, its keepalive, the server\'s response and a WG-SYNC replayed from the original and another address change nothing and draw no bytes', async (t) => {
    const wgc = await openAttacker('127.0.0.1');
    const other = await openAttacker('127.0.0.9');
    try {
      // A real exchange to capture, as wireguard-go and burrow wg make it.
      const priv = randomBytes(32);
      const init = createInitiation(priv, KEYS.wireguard.publicKey, randomBytes(32), 7, tai64n(Date.now()));
      await wgc.send(init.packet, server.port);
      await waitFor(() => wgc.replies.length === 1, 'the handshake response');
      const response = wgc.replies[0]!;
      const session = consumeResponse(init, response, KEYS.wireguard.presharedKey);
      assert.ok(session);
      const keepalive = sealTransport(session.receiverIndex, 0n, session.sendKey, new Uint8Array(0));
      await wgc.send(keepalive, server.port);
      const facts = { txid: txid(), networkId: KEYS.networkId, timestamp: Date.now(), key: publicKeyOf(priv), listenPort: 51820, hosts: [], mapping: 'unknown' as const };
      const sync = encodeWgSync({ kind: 'wg-sync', ...facts, query: [], proof: wgProof(dh(priv, KEYS.wireguard.publicKey) ?? Buffer.alloc(32), facts) }, KEYS.clientToServer);
      await wgc.send(sync, server.port);
      await waitFor(() => wgc.replies.length === 2, 'the WG-SYNC answer');
      const answer = decodeWgSync(wgc.replies[1]!);
      assert.ok(answer.ok && answer.msg.kind === 'wg-sync-ok');
      assert.equal(endpointKey(answer.msg.self.endpoint ?? { address: '', port: 0 }), `127.0.0.1:${wgc.port}`);
      const captured = [init.packet, keepalive, response, sync];
      const s0 = await server.snapshot();
      const before = wgc.counts.receivedBytes;
      for (const from of [wgc, other]) for (const bytes of captured) await sendAndSettle(server, from, [bytes], [server.port]);
      const s1 = await server.snapshot();
      sameState(s0, s1);
      const drawn = wgc.counts.receivedBytes - before + other.counts.receivedBytes;
      t.diagnostic(`${2 * captured.length} WireGuard/WG-SYNC replays: ${drawn} bytes answered; replaysRejected +${s1.stats.replaysRejected - s0.stats.replaysRejected}`);
      assert.equal(drawn, 0, 'a replay drew an answer');
      // Initiation, keepalive and WG-SYNC, from each address; the server's own response is not a replay but junk to it.
      assert.equal(s1.stats.replaysRejected - s0.stats.replaysRejected, 6);
    } finally {
      await Promise.all([wgc.close(), other.close()]);
    }
  });

  it('TCP: a REGISTER replayed on its own connection, on a new one and from another address changes nothing and draws no bytes', async (t) => {
    const carol = await tcpClient(server.port, '127.0.0.1');
    const clients = [carol];
    try {
      const reg = registerRequest(KEYS, { name: 'carol', target: 'dave', timestamp: Date.now(), transport: 'tcp' });
      carol.socket.write(reg);
      await waitFor(() => carol.messages.length === 1, 'carol’s answer');
      assert.equal(authenticatedAnswer(carol.messages[0]!).kind, 'register-ok');
      const s0 = await server.snapshot();
      const carolBytes = carol.bytes();
      const again = await tcpClient(server.port, '127.0.0.1');
      const stranger = await tcpClient(server.port, '127.0.0.10');
      clients.push(again, stranger);
      for (const c of [carol, again, stranger]) c.socket.write(reg);
      await waitFor(() => server.alive(), 'alive');
      const deadline = Date.now() + 3000;
      let s1 = await server.snapshot();
      while (s1.stats.replaysRejected - s0.stats.replaysRejected < 3 && Date.now() < deadline) {
        await sleep(20);
        s1 = await server.snapshot();
      }
      await sleep(100);
      sameState(s0, s1);
      assert.equal(s1.stats.replaysRejected - s0.stats.replaysRejected, 3);
      const drawn = carol.bytes() - carolBytes + again.bytes() + stranger.bytes();
      t.diagnostic(`3 TCP replays of ${reg.length} bytes: ${drawn} bytes answered`);
      assert.equal(drawn, 0);
      // carol is still registered at her own connection: dave is introduced to it.
      const dave = await tcpClient(server.port, '127.0.0.1');
      clients.push(dave);
      dave.socket.write(registerRequest(KEYS, { name: 'dave', target: 'carol', timestamp: Date.now(), transport: 'tcp' }));
      await waitFor(() => dave.messages.length === 1, 'dave’s answer');
      const answer = authenticatedAnswer(dave.messages[0]!);
      assert.ok(answer.kind === 'register-ok' && answer.intro !== undefined);
      assert.equal(endpointKey(answer.intro.peerMapped), carol.local);
    } finally {
      for (const c of clients) c.socket.destroy();
    }
  });

  it('a REGISTER replayed after its timestamp window gets a 438 no longer than itself and changes nothing', async (t) => {
    const late = await startServerProcess({ secret: SECRET, limits: { timestampWindowMs: 500 } });
    const alice = await openAttacker('127.0.0.1');
    const other = await openAttacker('127.0.0.11');
    try {
      const reg = registerRequest(KEYS, { name: 'alice', target: 'bob', timestamp: Date.now() });
      await alice.send(reg, late.port);
      await waitFor(() => alice.replies.length === 1, 'alice’s answer');
      await sleep(1200);
      const s0 = await late.snapshot();
      await sendAndSettle(late, alice, [reg], [late.port]);
      await sendAndSettle(late, other, [reg], [late.port]);
      const s1 = await late.snapshot();
      sameState(s0, s1);
      assert.equal(s1.stats.staleTimestamps - s0.stats.staleTimestamps, 2);
      const answers = [alice.replies[1], other.replies[0]];
      for (const a of answers) {
        assert.ok(a !== undefined);
        const m = authenticatedAnswer(a);
        assert.ok(m.kind === 'error' && m.code === 438);
        assert.ok(a.length <= reg.length, `${a.length} > ${reg.length}`);
      }
      t.diagnostic(`stale replay of ${reg.length} bytes answered with ${answers.map((a) => a?.length).join(' and ')} bytes (438)`);
    } finally {
      await Promise.all([alice.close(), other.close()]);
      await late.stop();
    }
  });
});

async function measureMix(t: TestContext, mode: string, limits: Partial<ServerLimits>, count: number): Promise<{ wireIn: number; wireOut: number; snap: ServerSnapshot; excess: number }> {
  const server = await startServerProcess({ secret: SECRET, limits: { ...NO_RATE_LIMIT, ...limits } });
  const attackers = await Promise.all([0, 1, 2, 3].map((i) => openAttacker(`127.0.0.${20 + i}`)));
  try {
    const { datagrams, alternate } = unauthenticatedMix(KEYS, WRONG, count);
    const started = Date.now();
    await pacedSend(server, [
      ...datagrams.map((bytes, i) => ({ from: attackers[i % attackers.length]!, bytes, port: server.port })),
      ...alternate.map((bytes, i) => ({ from: attackers[i % attackers.length]!, bytes, port: server.alternatePort })),
    ]);
    const snap = await server.snapshot();
    const elapsed = (Date.now() - started) / 1000;
    const wireOut = attackers.reduce((s, a) => s + a.counts.sentBytes, 0);
    const wireIn = attackers.reduce((s, a) => s + a.counts.receivedBytes, 0);
    const excess = checkAnswerSizes([...datagrams, ...alternate], attackers.flatMap((a) => a.replies));
    t.diagnostic(
      `${mode}: ${datagrams.length + alternate.length} unauthenticated datagrams, ${wireOut} bytes sent; ${wireIn} bytes answered on the wire ` +
        `(ratio ${(wireIn / wireOut).toFixed(3)}); server counters unauthBytesIn ${snap.stats.unauthBytesIn}, unauthBytesOut ${snap.stats.unauthBytesOut} ` +
        `(ratio ${(snap.stats.unauthBytesOut / snap.stats.unauthBytesIn).toFixed(3)}); Binding-answer excess ${excess} bytes in ${elapsed.toFixed(1)} s; ` +
        `${snap.stats.stunBindingsUnanswered} bare Bindings unanswered; registrations ${snap.state.registrations}`,
    );
    assert.equal(snap.state.registrations, 1, 'only the one real registration (the replayed one) exists');
    assert.equal(snap.internalErrors, 0);
    return { wireIn, wireOut, snap, excess };
  } finally {
    await Promise.all(attackers.map((a) => a.close()));
    await server.stop();
  }
}

describe('adversarial: amplification accounting (real server process, per-source limits off)', () => {
  it('strict mode (bare Bindings unanswered): bytes answered ≤ bytes received, on the wire and in the counters', async (t) => {
    const { wireIn, wireOut, snap, excess } = await measureMix(t, 'strict', { answerBareBindings: false }, 20_000);
    assert.equal(excess, 0);
    assert.ok(wireIn <= wireOut, `${wireIn} > ${wireOut}`);
    assert.ok(snap.stats.unauthBytesOut <= snap.stats.unauthBytesIn);
    assert.ok(snap.stats.stunBindingsUnanswered > 0, 'bare Binding requests must go unanswered in strict mode');
  });

  it('default mode (bare Bindings answered): the mix stays ≤ 1, and only Binding answers exceed their requests, by ≤ 24 bytes', async (t) => {
    const { wireIn, wireOut, snap } = await measureMix(t, 'default', {}, 20_000);
    assert.ok(wireIn <= wireOut, `${wireIn} > ${wireOut}`);
    assert.ok(snap.stats.unauthBytesOut <= snap.stats.unauthBytesIn);
    assert.equal(snap.stats.stunBindingsUnanswered, 0);
  });

  it('default limits, nothing but bare Binding requests "from" one victim address: answers ≤ burst + rate × t', async (t) => {
    const server = await startServerProcess({ secret: SECRET });
    const a = await openAttacker('127.0.0.30');
    try {
      const started = Date.now();
      const requests = Array.from({ length: 20_000 }, (_, i) => encodeMessage({ kind: 'binding', txid: txid(), fingerprint: i % 2 === 0 }));
      await sendAndSettle(server, a, requests, [server.port]);
      const seconds = (Date.now() - started) / 1000;
      const allowance = DEFAULT_LIMITS.perSourceBurst + DEFAULT_LIMITS.perSourceRate * seconds;
      const excess = checkAnswerSizes(requests, a.replies);
      t.diagnostic(
        `bare Binding flood from one address: ${a.counts.sent} requests (${a.counts.sentBytes} bytes) in ${seconds.toFixed(1)} s; ${a.counts.received} answered ` +
          `(${a.counts.receivedBytes} bytes, allowance ${allowance.toFixed(0)}): ratio ${(a.counts.receivedBytes / a.counts.sentBytes).toFixed(3)} overall; excess ${excess} bytes`,
      );
      assert.ok(a.counts.received <= allowance + 1, `${a.counts.received} answers > ${allowance}`);
      assert.ok(a.counts.received >= DEFAULT_LIMITS.perSourceBurst, 'the burst at least is answered');
      assert.ok(excess <= MAX_BINDING_EXCESS * a.counts.received);
    } finally {
      await a.close();
      await server.stop();
    }
  });
});

describe('adversarial: per-source rate limits (real server process, default limits)', () => {
  it('a source sending 10× its burst gets its burst plus the refill answered; a second source is unaffected', async (t) => {
    const server = await startServerProcess({ secret: SECRET });
    const loud = await openAttacker('127.0.0.40');
    const quiet = await openAttacker('127.0.0.41');
    try {
      const burst = DEFAULT_LIMITS.perSourceBurst;
      const started = Date.now();
      const loudRequests = Array.from({ length: 10 * burst }, () => encodeMessage(bindingRequest(txid())));
      const quietRequests = Array.from({ length: 100 }, () => encodeMessage(bindingRequest(txid())));
      // The quiet source's requests are spread evenly through the loud one's.
      const every = loudRequests.length / quietRequests.length;
      await pacedSend(server, loudRequests.flatMap((bytes, i) => [
        { from: loud, bytes, port: server.port },
        ...(i % every === 0 ? [{ from: quiet, bytes: quietRequests[i / every]!, port: server.port }] : []),
      ]));
      const seconds = (Date.now() - started) / 1000;
      const snap = await server.snapshot();
      const allowance = burst + DEFAULT_LIMITS.perSourceRate * seconds;
      t.diagnostic(
        `rate limit ${DEFAULT_LIMITS.perSourceRate}/s, burst ${burst}: loud source sent ${loud.counts.sent} in ${seconds.toFixed(2)} s, ${loud.counts.received} answered ` +
          `(allowance ${allowance.toFixed(0)}), ${snap.stats.rateLimited} dropped by the limiter; quiet source sent ${quiet.counts.sent}, ${quiet.counts.received} answered`,
      );
      assert.ok(loud.counts.received >= burst, `the loud source got less than its burst: ${loud.counts.received}`);
      assert.ok(loud.counts.received <= allowance + 1, `the loud source got more than its allowance: ${loud.counts.received} > ${allowance}`);
      assert.equal(snap.stats.rateLimited, loud.counts.sent - loud.counts.received);
      assert.equal(quiet.counts.received, quiet.counts.sent, 'the quiet source was limited too');
    } finally {
      await Promise.all([loud.close(), quiet.close()]);
      await server.stop();
    }
  });
});
