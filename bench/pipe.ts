/**
 * `npm run bench:pipe`: Burrow's encrypted data path against the tools people would use instead, on one
 * lab path in one run (issue 13). Root only; needs socat and openssl.
 *
 * Path for everything: host A → router A (port-restricted NAT) → the core → router B (port-restricted
 * NAT) → host B. socat reaches host B through a port forward on router B (DNAT); Burrow punches its own
 * TCP path through both NATs.
 *
 *   socat          plaintext TCP, 128 KiB blocks (its fastest setting)
 *   socat TLS      OpenSSL TLS 1.3 (AES-256-GCM) on a throw-away certificate made with openssl
 *   burrow pipe    stdin → stdout
 *   burrow send    a file of random bytes → `burrow receive` (verified with SHA-256, in place at the end)
 *
 * Each run builds a fresh lab and measures all four in a rotated order (so load that drifts during a
 * run does not always hit the same tool). A rate is bytes / wall time from starting the sending side
 * until both sides exited: Burrow's includes Node's start-up, the punch and the handshake. Ratios are
 * taken within each run, then summarised (min / median) across runs. Peak RSS and CPU seconds per side
 * come from /usr/bin/time.
 *
 *   node dist/bench/pipe.js [--mib N] [--runs N] [--tools socat,socat-tls,pipe,send]
 *
 * BENCH_PIPE_PROFILE=DIR runs every Burrow side under `node --cpu-prof` and keeps the profiles in DIR
 * (named by tool, side and run), for `node dist/bench/profile-summary.js DIR/*.cpuprofile`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile, appendFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createLab, labAvailable, type Lab } from '../src/lab/topology.js';

const CLI = fileURLToPath(new URL('../src/cli/burrow.cjs', import.meta.url));
const SERVER = '203.0.113.1:3478';
const FORWARD_PORT = 5001;
/** Router B's public address (pub ↔ natB link), where the port forward listens. */
const ROUTER_B_PUBLIC = '198.51.100.6';
const TIME = '/usr/bin/time';

type Tool = 'socat' | 'socat-tls' | 'pipe' | 'send';
const TOOLS: readonly Tool[] = ['socat', 'socat-tls', 'pipe', 'send'];
const LABEL: Record<Tool, string> = {
  socat: 'socat, plaintext',
  'socat-tls': 'socat over TLS (OpenSSL)',
  pipe: 'burrow pipe',
  send: 'burrow send → receive (file)',
};

interface Side {
  readonly rssMiB: number;
  readonly cpuSeconds: number;
}
interface Measurement {
  readonly tool: Tool;
  readonly seconds: number;
  readonly bytes: number;
  readonly intact: boolean;
  readonly sender: Side;
  readonly receiver: Side;
  /** Burrow only: start until the "connected" line (start-up, punch, handshake). */
  readonly setupSeconds?: number;
  /** What the tool said it encrypts with. */
  readonly cipher?: string;
}

/** `node` and its flags for a Burrow side: under --cpu-prof when BENCH_PIPE_PROFILE names a directory. */
let profileRun = 0;
function node(tool: Tool, who: 'sender' | 'receiver'): string {
  const dir = process.env.BENCH_PIPE_PROFILE;
  const base = `"${process.execPath}"`;
  if (dir === undefined || dir === '') return base;
  return `${base} --cpu-prof --cpu-prof-dir "${dir}" --cpu-prof-name ${tool}-${who}-run${profileRun}.cpuprofile`;
}

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, BURROW_SECRET: 'bench pipe secret' };
  delete e.NODE_EXTRA_CA_CERTS;
  return e;
}

/** `/usr/bin/time` output: "bench-time rss=KiB user=s sys=s" on the last matching stderr line. */
function side(stderr: string): Side {
  const m = [...stderr.matchAll(/bench-time rss=(\d+) user=([\d.]+) sys=([\d.]+)/g)].at(-1);
  return m ? { rssMiB: Number(m[1]) / 1024, cpuSeconds: Number(m[2]) + Number(m[3]) } : { rssMiB: Number.NaN, cpuSeconds: Number.NaN };
}
const timed = (cmd: string): string => `${TIME} -f 'bench-time rss=%M user=%U sys=%S' ${cmd}`;

function lastNumber(stdout: string): number {
  return Number(stdout.trim().split('\n').at(-1) ?? 'NaN');
}

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function waitListening(lab: Lab, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await lab.exec('hB', 'ss', ['-Hltn', `sport = :${port}`]);
    if (r.stdout.trim() !== '') return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`socat did not start listening on ${port}`);
}

async function socatRun(lab: Lab, bytes: number, tls: boolean, pem: string): Promise<Measurement> {
  const listen = tls ? `OPENSSL-LISTEN:${FORWARD_PORT},reuseaddr,cert=${pem},verify=0` : `TCP-LISTEN:${FORWARD_PORT},reuseaddr`;
  const connect = tls ? `OPENSSL:${ROUTER_B_PUBLIC}:${FORWARD_PORT},verify=0` : `TCP:${ROUTER_B_PUBLIC}:${FORWARD_PORT}`;
  const receiver = lab.spawn('hB', 'sh', ['-c', `${timed(`socat -d -d -b 131072 -u ${listen} -`)} | wc -c`]);
  await waitListening(lab, FORWARD_PORT);
  const started = performance.now();
  const sender = lab.spawn('hA', 'sh', ['-c', `head -c ${bytes} /dev/zero | ${timed(`socat -b 131072 -u - ${connect}`)}`]);
  const [es, er] = await Promise.all([sender.exited, receiver.exited]);
  const seconds = (performance.now() - started) / 1000;
  if (es.code !== 0 || er.code !== 0) throw new Error(`socat${tls ? ' (TLS)' : ''} failed: ${sender.stderr} ${receiver.stderr}`);
  const got = lastNumber(receiver.stdout);
  const cipher = tls ? /SSL connection using (\S+)/.exec(receiver.stderr)?.[1] : undefined;
  return {
    tool: tls ? 'socat-tls' : 'socat',
    seconds,
    bytes: got,
    intact: got === bytes,
    sender: side(sender.stderr),
    receiver: side(receiver.stderr),
    ...(cipher !== undefined ? { cipher } : {}),
  };
}

async function withServer<T>(lab: Lab, body: () => Promise<T>): Promise<T> {
  const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', SERVER, '--log-format', 'json'], { env: env() });
  await server.waitForOutput('stderr', '"listening"', 10_000);
  try {
    return await body();
  } finally {
    server.kill();
    await server.exited;
  }
}

async function pipeRun(lab: Lab, bytes: number): Promise<Measurement> {
  return withServer(lab, async () => {
    const common = `pipe --server ${SERVER} --timeout 60`;
    const started = performance.now();
    const sender = lab.spawn('hA', 'sh', ['-c', `head -c ${bytes} /dev/zero | ${timed(`${node('pipe', 'sender')} "${CLI}" ${common} --as alice --to bob --send-only`)}`], { env: env() });
    const receiver = lab.spawn('hB', 'sh', ['-c', `${timed(`${node('pipe', 'receiver')} "${CLI}" ${common} --as bob --to alice --recv-only`)} | wc -c`], { env: env() });
    const connected = receiver.waitForOutput('stderr', 'connected to', 60_000).then(() => (performance.now() - started) / 1000, () => Number.NaN);
    const [es, er] = await Promise.all([sender.exited, receiver.exited]);
    const seconds = (performance.now() - started) / 1000;
    if (es.code !== 0 || er.code !== 0) throw new Error(`burrow pipe failed: ${sender.stderr} ${receiver.stderr}`);
    const got = lastNumber(receiver.stdout);
    return {
      tool: 'pipe',
      seconds,
      bytes: got,
      intact: got === bytes,
      sender: side(sender.stderr),
      receiver: side(receiver.stderr),
      setupSeconds: await connected,
      cipher: /encrypted with (\S+)\)/.exec(receiver.stderr)?.[1] ?? '?',
    };
  });
}

async function sendRun(lab: Lab, bytes: number, source: string, sourceHash: string, outDir: string): Promise<Measurement> {
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir);
  return withServer(lab, async () => {
    const common = `--server ${SERVER} --timeout 60`;
    const started = performance.now();
    const sender = lab.spawn('hA', 'sh', ['-c', timed(`${node('send', 'sender')} "${CLI}" send "${source}" ${common} --as alice --to bob`)], { env: env() });
    const receiver = lab.spawn('hB', 'sh', ['-c', timed(`${node('send', 'receiver')} "${CLI}" receive ${common} --as bob --to alice --out "${outDir}" --yes`)], { env: env() });
    const connected = receiver.waitForOutput('stderr', 'connected to', 60_000).then(() => (performance.now() - started) / 1000, () => Number.NaN);
    const [es, er] = await Promise.all([sender.exited, receiver.exited]);
    const seconds = (performance.now() - started) / 1000;
    if (es.code !== 0 || er.code !== 0) throw new Error(`burrow send/receive failed: ${sender.stderr} ${receiver.stderr}`);
    // Verified after the clock stopped: exactly the file, in place, nothing left behind.
    const names = await readdir(outDir);
    const intact = names.length === 1 && names[0] === 'source.bin' && (await sha256(join(outDir, 'source.bin'))) === sourceHash;
    return { tool: 'send', seconds, bytes, intact, sender: side(sender.stderr), receiver: side(receiver.stderr), setupSeconds: await connected };
  });
}

const mbps = (m: Measurement): number => m.bytes / 1e6 / m.seconds;
function summary(values: number[]): { min: number; median: number; max: number } {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length % 2 === 1 ? (s[(s.length - 1) / 2] ?? Number.NaN) : ((s[s.length / 2 - 1] ?? 0) + (s[s.length / 2] ?? 0)) / 2;
  return { min: s[0] ?? Number.NaN, median: mid, max: s.at(-1) ?? Number.NaN };
}
const f0 = (n: number): string => (Number.isFinite(n) ? n.toFixed(0) : '?');
const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '?');
const load = (): string => loadavg().map((x) => x.toFixed(2)).join(' ');

function onPath(program: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { mib: { type: 'string', default: '1024' }, runs: { type: 'string', default: '3' }, tools: { type: 'string', default: TOOLS.join(',') } } });
  const tools = values.tools.split(',').map((t) => t.trim());
  const unknown = tools.filter((t) => !(TOOLS as readonly string[]).includes(t));
  if (unknown.length > 0 || tools.length === 0) {
    process.stderr.write(`bench:pipe: --tools takes a comma-separated list of ${TOOLS.join(', ')}\n`);
    return 2;
  }
  const chosen = TOOLS.filter((t) => tools.includes(t));
  const available = labAvailable();
  if (!available.ok) {
    process.stderr.write(`bench:pipe needs the NAT lab: ${available.reason}\n`);
    return 2;
  }
  const missing = ['socat', 'openssl', 'ss', TIME].filter((p) => !onPath(p));
  if (missing.length > 0) {
    process.stderr.write(`bench:pipe needs ${missing.join(', ')} (Debian: socat openssl iproute2 time)\n`);
    return 2;
  }
  const mib = Number(values.mib);
  const runs = Math.max(1, Number(values.runs));
  const bytes = mib * 1024 * 1024;
  const scratch = await mkdtemp(join(tmpdir(), 'burrow-bench-pipe-'));
  const results: Measurement[][] = [];
  try {
    // A throw-away certificate for socat's TLS server (P-256; the cipher is what matters here).
    const pem = join(scratch, 'bench.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=burrow-bench',
      '-keyout', join(scratch, 'key.pem'), '-out', join(scratch, 'cert.pem')], { stdio: 'ignore' });
    execFileSync('sh', ['-c', `cat "${join(scratch, 'key.pem')}" "${join(scratch, 'cert.pem')}" > "${pem}"`]);
    // The file for `burrow send`: random bytes, written once (and so in the page cache for every run).
    const source = join(scratch, 'source.bin');
    await writeFile(source, Buffer.alloc(0));
    const hash = createHash('sha256');
    for (let left = bytes; left > 0; left -= 8 << 20) {
      const piece = randomBytes(Math.min(8 << 20, left));
      hash.update(piece);
      await appendFile(source, piece);
    }
    const sourceHash = hash.digest('hex');
    const outDir = join(scratch, 'received');

    process.stderr.write(`bench:pipe: ${mib} MiB per transfer, ${runs} runs; load average at start ${load()}\n`);
    for (let i = 0; i < runs; i++) {
      const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
      const run: Measurement[] = [];
      const loadBefore = load();
      try {
        const forward = `table ip burrow_bench_forward {\n chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  ip daddr ${ROUTER_B_PUBLIC} tcp dport ${FORWARD_PORT} dnat to ${lab.addresses.hosts.hB.v4}:${FORWARD_PORT}\n }\n}\n`;
        const r = await lab.exec('natB', 'nft', ['-f', '-'], { input: forward });
        if (r.code !== 0) throw new Error(`port forward: ${r.stderr}`);
        profileRun = i + 1;
        const order = chosen.map((_, k) => chosen[(k + i) % chosen.length] ?? 'socat');
        for (const tool of order) {
          switch (tool) {
            case 'socat':
              run.push(await socatRun(lab, bytes, false, pem));
              break;
            case 'socat-tls':
              run.push(await socatRun(lab, bytes, true, pem));
              break;
            case 'pipe':
              run.push(await pipeRun(lab, bytes));
              break;
            case 'send':
              run.push(await sendRun(lab, bytes, source, sourceHash, outDir));
              break;
          }
          await lab.flushConntrack('natA');
          await lab.flushConntrack('natB');
        }
      } finally {
        await lab.destroy();
      }
      results.push(run);
      const line = chosen.map((t) => {
        const m = run.find((x) => x.tool === t);
        return `${t} ${m ? f0(mbps(m)) : '?'}`;
      }).join(', ');
      process.stderr.write(`run ${i + 1}/${runs} (order ${run.map((m) => m.tool).join(' → ')}; load ${loadBefore} → ${load()}): ${line} MB/s\n`);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }

  const of = (run: Measurement[], t: Tool): Measurement | undefined => run.find((m) => m.tool === t);
  const rate = (run: Measurement[], t: Tool): number => {
    const m = of(run, t);
    return m ? mbps(m) : Number.NaN;
  };
  const out: string[] = [];
  out.push(`bench:pipe — ${mib} MiB per transfer, ${runs} runs, one lab per run: host A → port-restricted NAT → core → port-restricted NAT → host B`);
  out.push(`rate = bytes / wall time from starting the sender until both sides exited (Burrow's includes start-up, punch, handshake)`);
  out.push('');
  out.push(`${'MB/s per run'.padEnd(32)}${results.map((_, i) => `run ${i + 1}`.padStart(9)).join('')}      min   median`);
  for (const t of chosen) {
    const rs = results.map((run) => rate(run, t));
    const s = summary(rs);
    out.push(`${LABEL[t].padEnd(32)}${rs.map((r) => f0(r).padStart(9)).join('')} ${f0(s.min).padStart(8)} ${f0(s.median).padStart(8)}`);
  }
  out.push('');
  const ratios: { label: string; target: number; values: number[] }[] = [
    { label: 'burrow pipe / socat TLS', target: 1.0, values: results.map((r) => rate(r, 'pipe') / rate(r, 'socat-tls')) },
    { label: 'burrow pipe / socat plaintext', target: 0.6, values: results.map((r) => rate(r, 'pipe') / rate(r, 'socat')) },
    { label: 'burrow send / burrow pipe', target: 0.8, values: results.map((r) => rate(r, 'send') / rate(r, 'pipe')) },
    { label: 'socat TLS / socat plaintext', target: Number.NaN, values: results.map((r) => rate(r, 'socat-tls') / rate(r, 'socat')) },
  ];
  out.push(`${'ratio (same run)'.padEnd(32)}${results.map((_, i) => `run ${i + 1}`.padStart(9)).join('')}      min   median   target`);
  for (const r of ratios.filter((x) => x.values.some(Number.isFinite))) {
    const s = summary(r.values);
    const verdict = Number.isNaN(r.target) ? '' : `≥ ${r.target.toFixed(1)}  ${s.median >= r.target ? 'met' : 'MISSED'} (median)`;
    out.push(`${r.label.padEnd(32)}${r.values.map((v) => f2(v).padStart(9)).join('')} ${f2(s.min).padStart(8)} ${f2(s.median).padStart(8)}   ${verdict}`);
  }
  out.push('');
  out.push(`${'per side (max over runs)'.padEnd(32)}${'peak RSS sender'.padStart(17)}${'receiver'.padStart(10)}${'CPU s sender'.padStart(14)}${'receiver'.padStart(10)}`);
  for (const t of chosen) {
    const ms = results.map((run) => of(run, t)).filter((m): m is Measurement => m !== undefined);
    const max = (f: (m: Measurement) => number): number => Math.max(...ms.map(f));
    const med = (f: (m: Measurement) => number): number => summary(ms.map(f)).median;
    out.push(`${LABEL[t].padEnd(32)}${`${f0(max((m) => m.sender.rssMiB))} MiB`.padStart(17)}${`${f0(max((m) => m.receiver.rssMiB))} MiB`.padStart(10)}` +
      `${f2(med((m) => m.sender.cpuSeconds)).padStart(14)}${f2(med((m) => m.receiver.cpuSeconds)).padStart(10)}   (CPU: median)`);
  }
  const burrow = results.flatMap((run) => [of(run, 'pipe'), of(run, 'send')]).filter((m): m is Measurement => m !== undefined);
  const peak = Math.max(...burrow.flatMap((m) => [m.sender.rssMiB, m.receiver.rssMiB]));
  out.push(`peak RSS of any Burrow side: ${f0(peak)} MiB (target ≤ 150 MiB) ${peak <= 150 ? 'met' : 'MISSED'}`);
  const setup = summary(burrow.map((m) => m.setupSeconds ?? Number.NaN).filter(Number.isFinite));
  out.push(`Burrow start-up + punch + handshake (until "connected"): median ${f2(setup.median)} s, max ${f2(setup.max)} s`);
  const ciphers = [...new Set(results.flatMap((run) => run.map((m) => (m.cipher !== undefined ? `${LABEL[m.tool]}: ${m.cipher}` : ''))).filter((c) => c !== ''))];
  out.push(`ciphers: ${ciphers.join('; ')}`);
  const intact = results.every((run) => run.every((m) => m.intact));
  out.push(`every transfer delivered intact (send: SHA-256 of the received file, nothing else in --out): ${intact ? 'yes' : 'NO'}`);
  out.push(`load average at end: ${load()} (this machine's cores are shared; see the per-run figures)`);
  process.stdout.write(`${out.join('\n')}\n`);
  return intact ? 0 : 1;
}

process.exitCode = await main();
