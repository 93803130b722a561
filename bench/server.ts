/**
 * `npm run bench:server`: how much the rendezvous server takes, against coturn, on this machine.
 *
 *   node dist/bench/server.js [--rounds N] [--seconds S] [--window W] [--pairs N] [--request bare|fingerprint]
 *                             [--profile] [--skip-multi] [--redis-only]
 *
 * - STUN Binding throughput: what every standard STUN client sends, a bare RFC 8489 Binding request (20 bytes;
 *   `--request fingerprint` adds FINGERPRINT), from 1,000 loopback source addresses. `burrow serve` with its
 *   native batched socket, `burrow serve` with Node's dgram socket (the fallback), and coturn
 *   (`turnserver --stun-only`), each pinned to core 0 with taskset; the C load generator (bench/stunload.c,
 *   compiled here with `cc -O2`) pinned to core 1; same requests, same load, rounds interleaved so all servers see
 *   the same machine weather.
 * - Registrations/s and memory per registration: 100,000 authenticated REGISTER requests (built here with
 *   the project's codec and keys, sent by the C generator from 4,096 loopback source addresses), and the
 *   server's RSS before and after.
 * - Introductions/s and REGISTER latency: authenticated REGISTER pairs; each pair's second REGISTER makes the server
 *   push INTRODUCE to the first, which acknowledges it with a refresh REGISTER, as Burrow's client does. One process
 *   (pinned to core 0), then `--workers 2` (all cores, load generator included).
 * - Over Redis (when redis-server is installed; `--redis-only` measures only this): introductions/s and REGISTER
 *   latency with one `burrow serve --redis`, then two sharing one redis-server with each pair's peers on different
 *   servers; the CPU each process spends per introduction; Redis memory per registration (20,000 registrations).
 *
 * Every process started here is stopped by its PID; every loop is bounded in count and time.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { encodeMessage } from '../src/codec/messages.js';
import { bindingRequest } from '../src/core/stun-client.js';
import { deriveNetworkKeys } from '../src/crypto/keys.js';
import { nativeUdp } from '../src/node/datagram-port.js';

const CLI = fileURLToPath(new URL('../src/cli/burrow.cjs', import.meta.url));
const LOADGEN_SOURCE = fileURLToPath(new URL('../../bench/stunload.c', import.meta.url));
const SECRET = 'bench server secret';
/** Distinct loopback source addresses the REGISTER load comes from (127.1.0.0 + i). */
const SOURCES = 4096;
/** Distinct loopback source addresses the STUN load comes from. */
const STUN_SOURCES = 1000;

interface LoadResult {
  readonly seconds: number;
  readonly sent: number;
  readonly answered: number;
  readonly lost: number;
  readonly unmatched: number;
  readonly errors: number;
  readonly p50us: number;
  readonly p99us: number;
  readonly rate: number;
  readonly introductions?: number;
  readonly introRate?: number;
  readonly registers?: number;
  readonly acks?: number;
}

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env };
  delete e.NODE_EXTRA_CA_CERTS; // a CA bundle burrow never uses; it only slows Node's start-up
  delete e.BURROW_SECRET;
  return e;
}

function has(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' }).status === 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A free UDP port on 127.0.0.1 (for coturn, which needs one on its command line). */
async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => { r(); }));
  return port;
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? Number.NaN);
}

interface Server {
  readonly name: string;
  readonly port: number;
  readonly pid: number;
  stop(): Promise<void>;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => { r(); }));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

type Backend = 'native' | 'dgram';

async function startBurrow(dir: string, cpus: string, backend: Backend, extra: string[] = [], nodeArgs: string[] = []): Promise<Server> {
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, `${SECRET}\n`);
  // --log-level warn hides the "listening" line (and the per-peer lines that would slow the server), so the port
  // is chosen here and the server is polled until it answers.
  const port = await freePort();
  const child = spawn('taskset', ['-c', cpus, process.execPath, ...nodeArgs, CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--no-alt-port', '--secret-file', secretFile, '--log-format', 'json', '--log-level', 'warn', ...extra], {
    env: { ...env(), BURROW_UDP_BACKEND: backend },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<never>((_, reject) => child.once('exit', () => { reject(new Error(`burrow serve exited: ${stderr}`)); }));
  exited.catch(() => undefined);
  await Promise.race([waitForStun(port, 'burrow serve'), exited]);
  return { name: `burrow-${backend}`, port, pid: child.pid ?? -1, stop: () => stopChild(child) };
}

async function startCoturn(dir: string, cpus: string): Promise<Server> {
  const port = await freePort();
  const child = spawn('taskset', ['-c', cpus, 'turnserver', '-n', '--stun-only', '--no-cli', '--listening-ip', '127.0.0.1', '--listening-port', String(port),
    '--log-file', 'stdout', '--simple-log', '--no-tls', '--no-dtls', '--pidfile', join(dir, 'turnserver.pid'), '--db', join(dir, 'turndb')], { stdio: ['ignore', 'ignore', 'ignore'] });
  await waitForStun(port, 'coturn');
  return { name: 'coturn', port, pid: child.pid ?? -1, stop: () => stopChild(child) };
}

/** Sends padded Binding requests until one is answered (at most 10 s). */
async function waitForStun(port: number, what: string): Promise<void> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  try {
    const answered = new Promise<void>((resolve) => s.once('message', () => { resolve(); }));
    for (let i = 0; i < 100; i++) {
      s.send(encodeMessage(bindingRequest(randomBytes(12))), port, '127.0.0.1');
      const done = await Promise.race([answered.then(() => true), sleep(100).then(() => false)]);
      if (done) return;
    }
    throw new Error(`${what} does not answer STUN Binding requests on 127.0.0.1:${port}`);
  } finally {
    await new Promise<void>((r) => s.close(() => { r(); }));
  }
}

function runLoad(loadgen: string, cpus: string, args: string[], timeoutMs: number): LoadResult {
  const r = spawnSync('taskset', ['-c', cpus, loadgen, ...args], { encoding: 'utf8', timeout: timeoutMs });
  if (r.status !== 0) throw new Error(`stunload failed (${String(r.status ?? r.signal)}): ${r.stderr}`);
  return JSON.parse(r.stdout) as LoadResult;
}

// ------------------------------------------------------------------------------------------------
// Scripts of authenticated REGISTER requests for the C generator (format in bench/stunload.c).

interface ScriptRecord {
  readonly source: number;
  readonly pair: number;
  readonly kind: 1 | 2 | 3;
  readonly bytes: Uint8Array;
  /** Which server it goes to: 0 (--port), or 1 (--port2: a second server over the same Redis). */
  readonly target?: 0 | 1;
}

function writeScript(path: string, records: readonly ScriptRecord[]): void {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(8);
  head.write('BLS1', 0, 'latin1');
  head.writeUInt32BE(records.length, 4);
  parts.push(head);
  for (const r of records) {
    const h = Buffer.alloc(12);
    h.writeUInt32BE(r.source, 0);
    h.writeUInt32BE(r.pair, 4);
    h.writeUInt8(r.kind, 8);
    h.writeUInt8(r.target ?? 0, 9);
    h.writeUInt16BE(r.bytes.length, 10);
    parts.push(h, Buffer.from(r.bytes));
  }
  writeFileSync(path, Buffer.concat(parts));
}

const keys = deriveNetworkKeys(Buffer.from(SECRET, 'utf8'));

/**
 * A REGISTER as Burrow's client sends it (one host candidate, the same in every REGISTER of a peer: `host`), whose
 * transaction id starts with `index`.
 */
function register(index: number, name: string, target: string, nonce: Uint8Array, hostPort: number, host: number): Uint8Array {
  const txid = randomBytes(12);
  txid.writeUInt32BE(index, 0);
  return encodeMessage({
    kind: 'register', txid, networkId: keys.networkId, name, target, sessionNonce: nonce, timestamp: Date.now(),
      candidates: [{ kind: 'host', priority: 2130706431, endpoint: { address: `10.${(host >> 16) & 255}.${(host >> 8) & 255}.${host & 255}`, port: hostPort } }], mapping: 'endpoint-independent',
  }, { key: keys.clientToServer });
}

/** `count` registrations whose partners never come: registrations/s and memory. */
function registrationScript(count: number): ScriptRecord[] {
  const out: ScriptRecord[] = [];
  for (let i = 0; i < count; i++) out.push({ source: i % SOURCES, pair: 0, kind: 1, bytes: register(i, `peer-${i}`, `absent-${i}`, randomBytes(16), 40000, i) });
  return out;
}

/**
 * `pairs` pairs registering one after the other, then each side's acknowledging refresh (the generator
 * sends it when that side receives INTRODUCE). Nonces start with the pair number and the side: that is
 * how the generator attributes an INTRODUCE to its pair.
 */
function introductionScript(pairs: number, twoServers = false): ScriptRecord[] {
  const sides = (p: number) => [0, 1].map((side) => {
    const nonce = randomBytes(16);
    nonce.writeUInt32BE(p, 0);
    nonce[4] = side;
    return { side, source: (2 * p + side) % SOURCES, name: `${side === 0 ? 'a' : 'b'}-${p}`, partner: `${side === 0 ? 'b' : 'a'}-${p}`, nonce };
  });
  const all = Array.from({ length: pairs }, (_, p) => sides(p));
  const records: ScriptRecord[] = [];
  for (const kind of [1, 2] as const) {
    for (const [p, pair] of all.entries()) {
      for (const s of pair) {
        records.push({ source: s.source, pair: p, kind: kind === 1 ? 1 : s.side === 0 ? 2 : 3, bytes: register(records.length, s.name, s.partner, s.nonce, 40000 + s.side, 2 * p + s.side), ...(twoServers && s.side === 1 ? { target: 1 as const } : {}) });
      }
    }
  }
  return records;
}

// ------------------------------------------------------------------------------------------------

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)] ?? Number.NaN;
}

function medianRun(runs: readonly LoadResult[]): LoadResult {
  const m = median(runs.map((r) => r.rate));
  return runs.find((r) => r.rate === m) ?? runs[0]!;
}

function fmtRate(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

function lossPct(r: LoadResult): string {
  return `${((100 * r.lost) / Math.max(1, r.sent)).toFixed(2)} %`;
}

function ms(us: number): string {
  return `${(us / 1000).toFixed(2)} ms`;
}

function stunLine(label: string, runs: readonly LoadResult[]): string {
  const m = medianRun(runs);
  return `${label.padEnd(34)} ${fmtRate(m.rate).padStart(9)}/s  (runs: ${runs.map((r) => fmtRate(r.rate)).join(', ')})  loss ${lossPct(m)}  p50 ${ms(m.p50us)}  p99 ${ms(m.p99us)}`;
}

async function stunRounds(loadgen: string, servers: readonly Server[], rounds: number, seconds: number, window: number, loadCpus: string, request: string): Promise<Map<string, LoadResult[]>> {
  const results = new Map<string, LoadResult[]>(servers.map((s) => [s.name, []]));
  for (let round = 0; round < rounds; round++) {
    for (const s of servers) {
      const r = runLoad(loadgen, loadCpus, ['--mode', 'stun', '--port', String(s.port), '--request', request, '--window', String(window), '--sources', String(STUN_SOURCES),
        '--warmup-ms', '500', '--duration-ms', String(seconds * 1000), '--timeout-ms', '500'], seconds * 1000 + 20_000);
      if (r.unmatched > 0 || r.errors > 0) throw new Error(`${s.name}: ${r.unmatched} unmatched answers, ${r.errors} errors`);
      results.get(s.name)?.push(r);
      process.stderr.write(`  round ${round + 1}/${rounds} ${s.name}: ${fmtRate(r.rate)}/s\n`);
    }
    await sleep(200);
  }
  return results;
}

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** A process and its children (a server and its workers). */
function processTree(pid: number): number[] {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    // gone
  }
  return [pid, ...children.flatMap(processTree)];
}

interface IntroResult {
  readonly load: LoadResult;
  /** CPU milliseconds per introduction, per process (the primary first). */
  readonly cpuMsPerIntro: readonly number[];
}

async function introductions(loadgen: string, dir: string, cpus: string, loadCpus: string, pairs: number, workers: number, backend: Backend): Promise<IntroResult> {
  const script = join(dir, `intro-${workers}.bls`);
  const server = await startBurrow(dir, cpus, backend, workers > 1 ? ['--workers', String(workers)] : []);
  // Built after the server started: it refuses REGISTERs timestamped before its start (a restart forgets replays).
  writeScript(script, introductionScript(pairs));
  try {
    const pids = processTree(server.pid);
    const before = pids.map(cpuSeconds);
    const r = runLoad(loadgen, loadCpus, ['--mode', 'script', '--port', String(server.port), '--script', script, '--window', '128', '--sources', String(SOURCES),
      '--duration-ms', '60000', '--timeout-ms', '2000'], 90_000);
    const cpu = pids.map((p, i) => cpuSeconds(p) - (before[i] ?? 0));
    if (r.errors > 0 || r.unmatched > 0) throw new Error(`introductions: ${r.errors} error answers, ${r.unmatched} unmatched datagrams`);
    return { load: r, cpuMsPerIntro: cpu.map((c) => (1000 * c) / Math.max(1, r.introductions ?? 0)) };
  } finally {
    await server.stop();
  }
}

/** redis-server on 127.0.0.1 (nothing on disk), pinned to `cpus`, once it accepts connections. */
async function startRedisServer(cpus: string): Promise<Server & { url: string }> {
  const port = await freePort();
  const child = spawn('taskset', ['-c', cpus, 'redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: ['ignore', 'ignore', 'ignore'] });
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      sock.once('connect', () => { sock.destroy(); resolve(true); });
      sock.once('error', () => { sock.destroy(); resolve(false); });
    });
    if (ok) return { name: 'redis-server', port, pid: child.pid ?? -1, url, stop: () => stopChild(child) };
    await sleep(50);
  }
  await stopChild(child);
  throw new Error(`redis-server did not start on port ${port}`);
}

interface RedisIntroResult extends IntroResult {
  /** CPU milliseconds per introduction of redis-server. */
  readonly redisCpuMs: number;
}

/**
 * Introductions through `servers` burrow serve processes sharing one Redis: with two, each pair's first peer talks
 * to server 1 and its second to server 2, so every introduction crosses servers (store, then PUBLISH to the owner).
 */
async function redisIntroductions(loadgen: string, dir: string, cpus: string, pairs: number, servers: 1 | 2, backend: Backend, workers = 1): Promise<RedisIntroResult> {
  const script = join(dir, `intro-redis-${servers}.bls`);
  const redis = await startRedisServer(cpus);
  const burrows: Server[] = [];
  try {
    const prof = process.env.BENCH_REDIS_PROFILE === '1' ? ['--cpu-prof', `--cpu-prof-dir=${join(dir, `prof-redis-${servers}`)}`] : [];
    for (let i = 0; i < servers; i++) burrows.push(await startBurrow(dir, cpus, backend, ['--redis', redis.url, '--server-id', `bench-${i + 1}`, ...(workers > 1 ? ['--workers', String(workers)] : [])], prof));
    writeScript(script, introductionScript(pairs, servers === 2));
    const pids = burrows.flatMap((b) => processTree(b.pid));
    const before = pids.map(cpuSeconds);
    const redisBefore = cpuSeconds(redis.pid);
    const r = runLoad(loadgen, cpus, ['--mode', 'script', '--port', String(burrows[0]?.port ?? 0), ...(servers === 2 ? ['--port2', String(burrows[1]?.port ?? 0)] : []), '--script', script, '--window', '128',
      '--sources', String(SOURCES), '--duration-ms', '60000', '--timeout-ms', '2000'], 90_000);
    const intros = Math.max(1, r.introductions ?? 0);
    const cpu = pids.map((p, i) => (1000 * (cpuSeconds(p) - (before[i] ?? 0))) / intros);
    if (r.errors > 0 || r.unmatched > 0) throw new Error(`introductions over Redis: ${r.errors} error answers, ${r.unmatched} unmatched datagrams`);
    return { load: r, cpuMsPerIntro: cpu, redisCpuMs: (1000 * (cpuSeconds(redis.pid) - redisBefore)) / intros };
  } finally {
    for (const b of burrows) await b.stop();
    await redis.stop();
  }
}

/** Redis memory per registration: 20,000 REGISTERs (partners never come) through one `burrow serve --redis`. */
async function redisMemory(loadgen: string, dir: string, backend: Backend): Promise<{ perRegistration: number; regKey: number; replayKey: number; keys: number; answered: number }> {
  const { createClient } = await import('redis');
  const redis = await startRedisServer('1');
  const server = await startBurrow(dir, '0', backend, ['--redis', redis.url, '--server-id', 'bench-mem']);
  const client = createClient({ url: redis.url });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const used = async (): Promise<number> => Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1] ?? 0);
    const before = await used();
    // Fewer than the in-memory run: sent at the slower rate over Redis, 100,000 would outlast the timestamp window.
    const count = 20_000;
    const regScript = join(dir, 'registrations-redis.bls');
    writeScript(regScript, registrationScript(count));
    const regs = runLoad(loadgen, '1', ['--mode', 'script', '--port', String(server.port), '--script', regScript, '--window', '128', '--sources', String(SOURCES),
      '--duration-ms', '60000', '--timeout-ms', '2000'], 90_000);
    if (regs.errors > 0 || regs.unmatched > 0) throw new Error(`registrations over Redis: ${regs.errors} error answers, ${regs.unmatched} unmatched`);
    const after = await used();
    const [regKey] = await client.keys('burrow:reg:*:peer-1');
    const [replayKey] = (await client.scan('0', { MATCH: 'burrow:replay:*', COUNT: 1000 })).keys;
    return {
      // Per registration stored: a registration key and its REGISTER's replay fingerprint key.
      perRegistration: (after - before) / Math.max(1, regs.answered),
      regKey: regKey ? Number(await client.memoryUsage(regKey)) : Number.NaN,
      replayKey: replayKey ? Number(await client.memoryUsage(replayKey)) : Number.NaN,
      keys: await client.dbSize(),
      answered: regs.answered,
    };
  } finally {
    client.destroy();
    await server.stop();
    await redis.stop();
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: {
    rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '3' }, window: { type: 'string', default: '128' },
    pairs: { type: 'string', default: '10000' }, request: { type: 'string', default: 'bare' }, profile: { type: 'boolean', default: false },
    'skip-multi': { type: 'boolean', default: false }, 'redis-only': { type: 'boolean', default: false },
  } });
  const rounds = Number(values.rounds);
  const seconds = Number(values.seconds);
  const window = Number(values.window);
  const pairs = Number(values.pairs);
  const request = values.request;
  if (![rounds, seconds, window, pairs].every((n) => Number.isInteger(n) && n > 0) || seconds > 60 || rounds > 20 || pairs > 1_000_000 || (request !== 'bare' && request !== 'fingerprint')) {
    process.stderr.write('usage: node dist/bench/server.js [--rounds N] [--seconds S] [--window W] [--pairs N] [--request bare|fingerprint] [--profile] [--skip-multi]\n');
    return 2;
  }
  if (process.platform !== 'linux') {
    process.stderr.write('bench:server needs Linux (sendmmsg, taskset, /proc).\n');
    return 1;
  }
  const cc = ['cc', 'gcc', 'clang'].find(has);
  if (cc === undefined) {
    process.stderr.write('bench:server needs a C compiler for its load generator (bench/stunload.c); none found (cc, gcc, clang). Install one, e.g. `apt-get install gcc`.\n');
    return 1;
  }
  if (!has('taskset')) {
    process.stderr.write('bench:server needs taskset (util-linux) to pin the server and the load generator to their cores.\n');
    return 1;
  }
  const cpus = availableParallelism();
  if (cpus < 2) {
    process.stderr.write('bench:server needs at least 2 CPUs: one for the server, one for the load generator.\n');
    return 1;
  }
  const coturn = has('turnserver');
  if (!coturn) process.stderr.write('note: coturn is not installed (apt-get install coturn); the comparison with it is skipped.\n');
  const native = nativeUdp();
  const backends: Backend[] = 'addon' in native ? ['native', 'dgram'] : ['dgram'];
  if (!('addon' in native)) process.stderr.write(`note: ${native.error}; only the dgram backend is measured.\n`);
  const best: Backend = backends[0] ?? 'dgram';

  const dir = mkdtempSync(join(tmpdir(), 'burrow-bench-server-'));
  const started: Server[] = [];
  const track = (s: Server): Server => {
    started.push(s);
    return s;
  };
  try {
    const loadgen = join(dir, 'stunload');
    const c = spawnSync(cc, ['-O2', '-o', loadgen, LOADGEN_SOURCE], { encoding: 'utf8' });
    if (c.status !== 0) throw new Error(`compiling ${LOADGEN_SOURCE} failed:\n${c.stderr}`);
    const out: string[] = [];
    out.push(`bench:server — Node ${process.version}, ${cpus} CPUs (${cpuModel()}); one-core runs: servers on core 0, load generator (C, sendmmsg/recvmmsg) on core 1;`);
    out.push(`${window} requests outstanding; STUN rates are medians of ${rounds} interleaved runs of ${seconds} s`);

    if (!values['redis-only']) {
    // 1. STUN Binding, one core each.
    process.stderr.write(`STUN Binding throughput (${request} requests from ${STUN_SOURCES} sources), one core:\n`);
    const single: Server[] = [];
    for (const b of backends) single.push(track(await startBurrow(dir, '0', b, [], values.profile && b === best ? ['--cpu-prof', `--cpu-prof-dir=${join(dir, 'prof')}`] : [])));
    if (coturn) single.push(track(await startCoturn(dir, '0')));
    const stun = await stunRounds(loadgen, single, rounds, seconds, window, '1', request);
    for (const s of single) await s.stop();
    const bytes = request === 'bare' ? '20-byte bare' : '28-byte bare + FINGERPRINT';
    out.push('', `STUN Binding requests answered (${bytes} RFC 8489 requests from ${STUN_SOURCES} loopback addresses), one core each:`);
    for (const b of backends) out.push(stunLine(`burrow serve (${b})`, stun.get(`burrow-${b}`) ?? []));
    if (coturn) {
      const coturnRate = medianRun(stun.get('coturn') ?? []).rate;
      out.push(stunLine('coturn --stun-only', stun.get('coturn') ?? []));
      for (const b of backends) {
        const ratio = medianRun(stun.get(`burrow-${b}`) ?? []).rate / coturnRate;
        out.push(`ratio burrow (${b})/coturn`.padEnd(35) + `${ratio.toFixed(2)}   (goal ≥ 0.8)  ${ratio >= 0.8 ? 'met' : 'MISSED'}`);
      }
    }
    if (values.profile) out.push('', `burrow serve (${best}) profile under STUN load (self time, top functions):`, ...profileSummary(join(dir, 'prof'), 15));

    // 2. Registrations and memory, one core. Twice: with V8's default young generation (a GC nursery that V8 grows
    // with the request rate, up to 3 × 16 MiB), and with it capped, so that the RSS delta is the state alone.
    process.stderr.write('registrations:\n');
    const regScript = join(dir, 'registrations.bls');
    const memory: { label: string; perReg: number; before: number; after: number; regs: LoadResult }[] = [];
    for (const [label, nodeArgs] of [['V8 defaults', []], ['young generation capped (--max-semi-space-size=1)', ['--max-semi-space-size=1']]] as const) {
      const server = track(await startBurrow(dir, '0', best, [], [...nodeArgs]));
      writeScript(regScript, registrationScript(100_000));
      await sleep(500);
      const before = rssKiB(server.pid);
      const regs = runLoad(loadgen, '1', ['--mode', 'script', '--port', String(server.port), '--script', regScript, '--window', '128', '--sources', String(SOURCES),
        '--duration-ms', '60000', '--timeout-ms', '2000'], 90_000);
      await sleep(1000);
      const after = rssKiB(server.pid);
      await server.stop();
      if (regs.errors > 0 || regs.unmatched > 0) throw new Error(`registrations: ${regs.errors} error answers, ${regs.unmatched} unmatched`);
      memory.push({ label, perReg: ((after - before) * 1024) / 100_000, before, after, regs });
    }
    const regs = memory[0]!.regs;
    out.push('', `registrations, one core (${best}):`.padEnd(35) + `${fmtRate(regs.rate)}/s  (${regs.answered} of ${regs.sent} answered, lost ${regs.lost})  p50 ${ms(regs.p50us)}  p99 ${ms(regs.p99us)}`);
    for (const m of memory) {
      out.push(`memory per registration at 100,000: ${m.perReg.toFixed(0)} bytes  (server RSS ${(m.before / 1024).toFixed(0)} → ${(m.after / 1024).toFixed(0)} MiB, delta / 100,000; ${m.label})`);
    }
    const state = memory[1]?.perReg ?? Number.NaN;
    out.push(`  target ≤ 1024 bytes of state per registration: ${state <= 1024 ? 'met' : 'MISSED'}`);

    // 3. Introductions: one process on one core, then two workers on all cores.
    process.stderr.write('introductions, one process:\n');
    const intro = await introductions(loadgen, dir, '0', '1', pairs, 1, best);
    out.push('', `introductions (${pairs} pairs: 3 REGISTERs and 1 pushed INTRODUCE each; ${best} socket):`);
    out.push(introLine('one process, one core', intro, pairs));
    if (!values['skip-multi']) {
      const all = `0-${cpus - 1}`;
      process.stderr.write('introductions, --workers 2:\n');
      const introMulti = await introductions(loadgen, dir, all, all, pairs, 2, best);
      out.push(introLine(`--workers 2, all ${cpus} cores`, introMulti, pairs));
      out.push(`(with --workers 2 the ${cpus} cores are shared by the primary, 2 workers and the load generator; the CPU cost per`);
      out.push(' introduction of each process says what each would sustain on a core of its own)');
    }
    }
    // 4. Several servers sharing one Redis.
    if (has('redis-server')) {
      const all = `0-${cpus - 1}`;
      process.stderr.write('introductions over Redis:\n');
      const viaRedis1 = await redisIntroductions(loadgen, dir, all, pairs, 1, best);
      if (process.env.BENCH_REDIS_PROFILE === '1') process.stderr.write(`${profileSummary(join(dir, 'prof-redis-1'), 25).join('\n')}\n`);
      const viaRedis2 = await redisIntroductions(loadgen, dir, all, pairs, 2, best);
      const viaRedisWorkers = await redisIntroductions(loadgen, dir, all, pairs, 1, best, 2);
      out.push('', `introductions with --redis (redis-server and the load generator share all ${cpus} cores with the servers; ${pairs} pairs):`);
      out.push(introLine('one server over Redis', viaRedis1, pairs) + `; redis-server ${viaRedis1.redisCpuMs.toFixed(3)}`);
      out.push(introLine('two servers over Redis, pairs split', viaRedis2, pairs, ' (server 1 + server 2)') + `; redis-server ${viaRedis2.redisCpuMs.toFixed(3)}`);
      out.push(introLine('one server over Redis, --workers 2', viaRedisWorkers, pairs) + `; redis-server ${viaRedisWorkers.redisCpuMs.toFixed(3)}`);
      const perCore = (cpuMs: number): string => fmtRate(1000 / cpuMs);
      out.push(`each on a core of its own, by its CPU per introduction: one server over Redis ${perCore(viaRedis1.cpuMsPerIntro[0] ?? Number.NaN)}/s; two servers ` +
        `${perCore(viaRedis2.cpuMsPerIntro[0] ?? Number.NaN)}/s + ${perCore(viaRedis2.cpuMsPerIntro[1] ?? Number.NaN)}/s; redis-server ${perCore(viaRedis2.redisCpuMs)}/s`);
      out.push('(in the two-server run each pair\'s peers register with different servers: every introduction crosses servers, through the');
      out.push(' store and a PUBLISH to the partner\'s server, which sends the push)');
      process.stderr.write('Redis memory per registration:\n');
      const mem = await redisMemory(loadgen, dir, best);
      out.push(`Redis memory per registration: ${mem.perRegistration.toFixed(0)} bytes of used_memory (delta / ${mem.answered} registrations answered of 20,000 sent; ${mem.keys} keys); ` +
        `MEMORY USAGE: registration key ${mem.regKey} bytes, replay fingerprint key ${mem.replayKey} bytes (one per request, expires after 2 × the timestamp window)`);
    } else {
      process.stderr.write('note: redis-server is not installed (apt-get install redis-server); the figures over Redis are skipped.\n');
    }
    process.stdout.write(`${out.join('\n')}\n`);
    return 0;
  } finally {
    for (const s of started) await s.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function introLine(label: string, result: IntroResult, pairs: number, processes = ' (primary + workers)'): string {
  const r = result.load;
  const cpu = result.cpuMsPerIntro.map((c) => c.toFixed(3)).join(' + ');
  return `${label.padEnd(34)} ${fmtRate(r.introRate ?? 0).padStart(7)}/s  (${r.introductions ?? 0} of ${pairs} pairs, lost ${r.lost})  REGISTER p50 ${ms(r.p50us)}  p99 ${ms(r.p99us)}  CPU ms per introduction: ${cpu}${result.cpuMsPerIntro.length > 1 ? processes : ''}`;
}

function cpuModel(): string {
  const m = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return m?.[1]?.trim() ?? 'unknown CPU';
}

/** Top functions by self time from the V8 CPU profile(s) in `dir`. */
function profileSummary(dir: string, top: number): string[] {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  } catch {
    return ['  (no profile written)'];
  }
  interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }
  const self = new Map<string, number>();
  let busy = 0;
  for (const f of files) {
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    p.samples.forEach((id, i) => {
      const n = byId.get(id);
      if (!n || n.callFrame.functionName === '(idle)') return;
      const key = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*\/(dist|node:)/, '$1')}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ''}`;
      const dt = p.timeDeltas[i] ?? 0;
      self.set(key, (self.get(key) ?? 0) + dt);
      busy += dt;
    });
  }
  return [...self].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, t]) => `  ${((100 * t) / busy).toFixed(1).padStart(5)} %  ${k}`);
}

process.exitCode = await main();
