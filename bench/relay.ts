/**
 * `npm run bench:relay`: UDP through the built-in relay of `burrow serve` and through coturn's `turnserver`, in the
 * same run, same load, rounds interleaved.
 *
 *   node dist/bench/relay.js [--rounds N] [--seconds S] [--sessions N] [--window W] [--size BYTES]
 *
 * - Throughput: N sessions (default 4), each a TURN client (ChannelData) with its own allocation and a plain UDP
 *   peer on loopback that echoes every datagram back through the relay. Closed loop: W datagrams (default 64) in
 *   flight per session; each echo sends the next. Reported: relayed datagrams/s and MiB/s (both directions count).
 * - Added latency: one datagram in flight, round trip through the relay minus the direct round trip between the same
 *   sockets (median and p99 of 2,000).
 * Each server is pinned to core 0 with taskset when there is more than one core; this process (the load) to the
 * others. The built-in relay runs with `--relay-rate` and `--relay-total-rate` raised out of the way (coturn has no
 * per-session cap by default): what is measured is the relay's speed, not its bound. Every process started here is
 * stopped by its PID; every loop is bounded in count and time.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Endpoint } from '../src/codec/address.js';
import { encodeMessage } from '../src/codec/messages.js';
import { builtinCredentials, longTermKey, turnRestCredentials } from '../src/codec/turn.js';
import { deriveNetworkKeys } from '../src/crypto/keys.js';
import { TestTurnClient } from '../test/support/turn-client.js';

const CLI = fileURLToPath(new URL('../src/cli/burrow.cjs', import.meta.url));
const SECRET = 'bench relay secret, long enough';
const TURN_SECRET = 'bench coturn static auth secret';
const keys = deriveNetworkKeys(Buffer.from(SECRET));

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '4' },
    sessions: { type: 'string', default: '4' },
    window: { type: 'string', default: '64' },
    size: { type: 'string', default: '1200' },
  },
});
const ROUNDS = Number(args.rounds);
const SECONDS = Number(args.seconds);
const SESSIONS = Number(args.sessions);
const WINDOW = Number(args.window);
const SIZE = Number(args.size);

function has(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`]).status === 0;
}

const pin = availableParallelism() > 1 && has('taskset');
const serverCpu = pin ? ['taskset', '-c', '0'] : [];

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => { resolve(p); });
    });
  });
}

async function waitUdp(port: number): Promise<void> {
  // A bare Binding request until the server answers (at most 10 s).
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const req = Buffer.concat([Buffer.from('000100002112a442', 'hex'), randomBytes(12)]);
  try {
    for (let i = 0; i < 100; i++) {
      const got = new Promise<boolean>((resolve) => {
        const t = setTimeout(() => { resolve(false); }, 100);
        s.once('message', () => { clearTimeout(t); resolve(true); });
      });
      s.send(req, port, '127.0.0.1');
      if (await got) return;
    }
    throw new Error(`no server on UDP ${port}`);
  } finally {
    s.close();
  }
}

interface Server {
  readonly label: string;
  readonly port: number;
  readonly child: ChildProcess;
  /** Credentials for session i (name `a<i>`, partner `b<i>`), and what to do before the peer may be reached. */
  creds(i: number): { username: string; password: string; realm: string };
  /** Makes the peer socket reachable for session i (the built-in relay wants it registered as the partner). */
  prepare(i: number, peer: dgram.Socket): Promise<void>;
}

async function startBurrow(dir: string): Promise<Server> {
  const port = await freePort();
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, `${SECRET}\n`);
  const child = spawn(serverCpu[0] ?? process.execPath, [...serverCpu.slice(1), ...(pin ? [process.execPath] : []), CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--secret-file', secretFile, '--no-alt-port', '--log-level', 'error',
    '--relay-rate', '4GiB', '--relay-total-rate', '16GiB', '--relay-sessions-per-source', '1000', '--relay-sessions-per-peer', '100'], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitUdp(port);
  return {
    label: 'burrow serve (built-in relay)',
    port,
    child,
    creds: (i) => ({ ...builtinCredentials(keys.relay, { expiry: Math.floor(Date.now() / 1000) + 3600, networkIdHex: keys.networkIdHex, name: `a${i}`, peer: `b${i}` }), realm: 'burrow' }),
    prepare: async (i, peer) => {
      const msg = encodeMessage({ kind: 'register', txid: randomBytes(12), networkId: keys.networkId, name: `b${i}`, target: `a${i}`, sessionNonce: randomBytes(16), timestamp: Date.now(), candidates: [], mapping: 'unknown' }, { key: keys.clientToServer });
      const answered = new Promise<void>((resolve) => peer.once('message', () => { resolve(); }));
      peer.send(msg, port, '127.0.0.1');
      await answered;
    },
  };
}

async function startCoturn(dir: string): Promise<Server> {
  const port = await freePort();
  const child = spawn(serverCpu[0] ?? 'turnserver', [...serverCpu.slice(1), ...(pin ? ['turnserver'] : []), '-n', '--listening-ip', '127.0.0.1', '--relay-ip', '127.0.0.1', '--listening-port', String(port),
    '--min-port', '49152', '--max-port', '65535', '--realm', 'burrow', '--use-auth-secret', '--static-auth-secret', TURN_SECRET,
    '--no-tls', '--no-dtls', '--no-tcp-relay', '--no-cli', '--allow-loopback-peers', '--no-multicast-peers', '--log-file', join(dir, 'turn.log'), '--simple-log', '--total-quota', '0', '--user-quota', '0'],
  { stdio: ['ignore', 'ignore', 'ignore'] });
  await waitUdp(port);
  return {
    label: 'coturn turnserver',
    port,
    child,
    creds: (i) => ({ ...turnRestCredentials(TURN_SECRET, `a${i}`, Math.floor(Date.now() / 1000) + 3600), realm: 'burrow' }),
    prepare: () => Promise.resolve(),
  };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise((r) => child.once('close', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 5000);
  await closed;
  clearTimeout(t);
}

interface Session {
  readonly client: TestTurnClient;
  readonly peer: dgram.Socket;
  readonly peerEp: Endpoint;
}

async function openSessions(server: Server): Promise<Session[]> {
  const out: Session[] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const peer = dgram.createSocket('udp4');
    await new Promise<void>((r) => peer.bind(0, '127.0.0.1', r));
    peer.setRecvBufferSize(8 << 20);
    peer.setSendBufferSize(8 << 20);
    await server.prepare(i, peer);
    const c = server.creds(i);
    const client = await TestTurnClient.open({ address: '127.0.0.1', port: server.port }, { username: c.username, key: longTermKey(c.username, c.realm, c.password) });
    const a = await client.allocate();
    if (a.cls !== 'success') throw new Error(`${server.label}: Allocate failed: ${a.error?.code ?? '?'} ${a.error?.reason ?? ''}`);
    const peerEp = { address: '127.0.0.1', port: peer.address().port };
    const b = await client.bind(0x4000, peerEp);
    if (b.cls !== 'success') throw new Error(`${server.label}: ChannelBind failed: ${b.error?.code ?? '?'}`);
    // The peer echoes everything back to where it came from (the relayed address).
    peer.on('message', (m, rinfo) => { peer.send(m, rinfo.port, rinfo.address); });
    out.push({ client, peer, peerEp });
  }
  return out;
}

function closeSessions(sessions: Session[]): void {
  for (const s of sessions) {
    s.client.close();
    s.peer.close();
  }
}

/** Closed-loop echo through the relay: datagrams relayed per second (each echo is two relayed datagrams). */
async function throughput(sessions: Session[]): Promise<{ dps: number; mibps: number; lossPct: number }> {
  let echoes = 0;
  let sent = 0;
  let running = true;
  const payload = randomBytes(SIZE);
  for (const s of sessions) {
    s.client.onData = () => {
      echoes++;
      if (running) {
        s.client.sendChannel(0x4000, payload);
        sent++;
      }
    };
  }
  // Keep the window topped up even when datagrams are lost: every 50 ms, refill to WINDOW in flight.
  const inFlight = (): number => sent - echoes;
  const refill = setInterval(() => {
    const missing = SESSIONS * WINDOW - inFlight();
    for (let k = 0; k < missing; k++) {
      const s = sessions[k % sessions.length];
      if (s) s.client.sendChannel(0x4000, payload);
      sent++;
    }
  }, 50);
  for (const s of sessions) for (let k = 0; k < WINDOW; k++) { s.client.sendChannel(0x4000, payload); sent++; }
  const warm = Date.now() + 500;
  while (Date.now() < warm) await new Promise((r) => setTimeout(r, 50));
  const e0 = echoes;
  const s0 = sent;
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const e1 = echoes;
  const s1 = sent;
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  running = false;
  clearInterval(refill);
  await new Promise((r) => setTimeout(r, 300));
  const relayed = ((e1 - e0) * 2) / seconds;
  return { dps: relayed, mibps: (relayed * SIZE) / (1024 * 1024), lossPct: s1 - s0 > 0 ? Math.max(0, 100 * (1 - (e1 - e0) / (s1 - s0))) : 0 };
}

/** Round trips of one datagram: through the relay, and directly between the same two sockets. */
async function latency(session: Session): Promise<{ relayP50: number; relayP99: number; directP50: number; addedP50: number; addedP99: number }> {
  const N = 2000;
  const payload = randomBytes(64);
  const through: number[] = [];
  for (let i = 0; i < N; i++) {
    const t = process.hrtime.bigint();
    const got = new Promise<void>((resolve) => { session.client.onData = () => { resolve(); }; });
    session.client.sendChannel(0x4000, payload);
    const ok = await Promise.race([got.then(() => true), new Promise<boolean>((r) => setTimeout(() => { r(false); }, 200))]);
    if (ok) through.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  // Direct: the client's socket to the peer and back (the peer echoes to the sender).
  const direct: number[] = [];
  for (let i = 0; i < N; i++) {
    const t = process.hrtime.bigint();
    const got = new Promise<void>((resolve) => session.client.socket.once('message', () => { resolve(); }));
    session.client.socket.send(payload, session.peerEp.port, session.peerEp.address);
    await got;
    direct.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  const q = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? NaN;
  return { relayP50: q(through, 0.5), relayP99: q(through, 0.99), directP50: q(direct, 0.5), addedP50: q(through, 0.5) - q(direct, 0.5), addedP99: q(through, 0.99) - q(direct, 0.99) };
}

async function measure(start: () => Promise<Server>): Promise<{ label: string; dps: number; mibps: number; lossPct: number; lat: Awaited<ReturnType<typeof latency>> }> {
  const server = await start();
  let sessions: Session[] = [];
  try {
    sessions = await openSessions(server);
    const t = await throughput(sessions);
    const first = sessions[0];
    if (!first) throw new Error('no session');
    const lat = await latency(first);
    return { label: server.label, ...t, lat };
  } finally {
    closeSessions(sessions);
    await stop(server.child);
  }
}

async function main(): Promise<void> {
  if (!has('turnserver')) {
    process.stderr.write('bench:relay needs coturn (apt-get install coturn) for its baseline\n');
    process.exitCode = 1;
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'burrow-bench-relay-'));
  try {
    process.stdout.write(`bench:relay: ${SESSIONS} sessions × ${WINDOW} in flight, ${SIZE}-byte datagrams, ${SECONDS} s × ${ROUNDS} rounds; servers ${pin ? 'pinned to core 0' : 'unpinned'}; ${availableParallelism()} cores\n`);
    const results: Record<string, { dps: number[]; mibps: number[]; loss: number[]; added50: number[]; added99: number[] }> = {};
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? [() => startBurrow(dir), () => startCoturn(dir)] : [() => startCoturn(dir), () => startBurrow(dir)];
      for (const start of order) {
        const m = await measure(start);
        const slot = (results[m.label] ??= { dps: [], mibps: [], loss: [], added50: [], added99: [] });
        slot.dps.push(m.dps);
        slot.mibps.push(m.mibps);
        slot.loss.push(m.lossPct);
        slot.added50.push(m.lat.addedP50);
        slot.added99.push(m.lat.addedP99);
        process.stdout.write(`  round ${r + 1} ${m.label}: ${Math.round(m.dps)} datagrams/s, ${m.mibps.toFixed(1)} MiB/s relayed, loss ${m.lossPct.toFixed(2)}%; round trip through the relay p50 ${m.lat.relayP50.toFixed(0)} µs (direct ${m.lat.directP50.toFixed(0)} µs), added p50 ${m.lat.addedP50.toFixed(0)} µs p99 ${m.lat.addedP99.toFixed(0)} µs\n`);
      }
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
    process.stdout.write('\nmedian of rounds:\n');
    for (const [label, v] of Object.entries(results)) {
      process.stdout.write(`  ${label.padEnd(30)} ${String(Math.round(median(v.dps))).padStart(8)} datagrams/s  ${median(v.mibps).toFixed(1).padStart(7)} MiB/s  loss ${median(v.loss).toFixed(2)}%  added latency p50 ${median(v.added50).toFixed(0)} µs, p99 ${median(v.added99).toFixed(0)} µs\n`);
    }
    const b = results['burrow serve (built-in relay)'];
    const c = results['coturn turnserver'];
    if (b && c) process.stdout.write(`\nbuilt-in relay / coturn throughput: ${(median(b.dps) / median(c.dps)).toFixed(2)}× (goal ≥ 0.8×)\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
