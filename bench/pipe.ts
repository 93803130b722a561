/**
 * `npm run bench:pipe`: throughput of `burrow pipe` (TCP simultaneous open, AES-256-GCM records) through
 * two port-restricted NATs in the lab, against plain `socat` TCP over the same path in the same run
 * (the baseline), with the peak RSS of Burrow's sender and receiver. Root only.
 *
 *   node dist/bench/pipe.js [--mib N] [--runs N]
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createLab, labAvailable, type Lab } from '../src/lab/topology.js';

const CLI = fileURLToPath(new URL('../src/cli/burrow.cjs', import.meta.url));

interface Run {
  readonly seconds: number;
  readonly bytes: number;
  readonly senderRssMiB?: number | undefined;
  readonly receiverRssMiB?: number | undefined;
}

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, BURROW_SECRET: 'bench pipe secret' };
  delete e.NODE_EXTRA_CA_CERTS;
  return e;
}

function rss(stderr: string): number | undefined {
  const m = /maxrss=(\d+)/.exec(stderr);
  return m?.[1] ? Number(m[1]) / 1024 : undefined;
}

function received(stdout: string): number {
  return Number(stdout.trim().split('\n').at(-1) ?? 'NaN');
}

async function burrowRun(lab: Lab, bytes: number): Promise<Run> {
  const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', '203.0.113.1:3478', '--log-format', 'json'], { env: env() });
  await server.waitForOutput('stderr', '"listening"', 5000);
  const common = `pipe --server 203.0.113.1:3478 --timeout 60 --quiet`;
  const started = performance.now();
  const a = lab.spawn('hA', 'sh', ['-c', `head -c ${bytes} /dev/zero | /usr/bin/time -f maxrss=%M "${process.execPath}" "${CLI}" ${common} --as alice --to bob --send-only`], { env: env() });
  const b = lab.spawn('hB', 'sh', ['-c', `/usr/bin/time -f maxrss=%M "${process.execPath}" "${CLI}" ${common} --as bob --to alice --recv-only | wc -c`], { env: env() });
  const [ea, eb] = await Promise.all([a.exited, b.exited]);
  const seconds = (performance.now() - started) / 1000;
  server.kill();
  await server.exited;
  if (ea.code !== 0 || eb.code !== 0) throw new Error(`burrow pipe failed: ${a.stderr} ${b.stderr}`);
  return { seconds, bytes: received(b.stdout), senderRssMiB: rss(a.stderr), receiverRssMiB: rss(b.stderr) };
}

async function socatRun(lab: Lab, bytes: number, portA: number, portB: number): Promise<Run> {
  // TCP simultaneous open with fixed ports: the port-restricted NATs keep them (Linux masquerade).
  const opts = (port: number) => `sourceport=${port},reuseaddr,connect-timeout=0.3,retry=200,interval=0.02`;
  const started = performance.now();
  // 128 KiB blocks (socat's default is 8 KiB): the strongest plain-TCP baseline, not a handicapped one.
  const a = lab.spawn('hA', 'sh', ['-c', `head -c ${bytes} /dev/zero | socat -b 131072 -u - TCP:198.51.100.6:${portB},${opts(portA)}`]);
  const b = lab.spawn('hB', 'sh', ['-c', `socat -b 131072 -u TCP:198.51.100.2:${portA},${opts(portB)} - | wc -c`]);
  const [ea, eb] = await Promise.all([a.exited, b.exited]);
  const seconds = (performance.now() - started) / 1000;
  if (ea.code !== 0 || eb.code !== 0) throw new Error(`socat failed: ${a.stderr} ${b.stderr}`);
  return { seconds, bytes: received(b.stdout) };
}

function mibps(r: Run): number {
  return r.bytes / 1024 / 1024 / r.seconds;
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { mib: { type: 'string', default: '1024' }, runs: { type: 'string', default: '2' } } });
  const available = labAvailable();
  if (!available.ok) {
    process.stderr.write(`bench:pipe needs the NAT lab: ${available.reason}\n`);
    return 2;
  }
  const bytes = Number(values.mib) * 1024 * 1024;
  const runs = Math.max(1, Number(values.runs));
  const burrow: Run[] = [];
  const socat: Run[] = [];
  for (let i = 0; i < runs; i++) {
    const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
    try {
      socat.push(await socatRun(lab, bytes, 41000 + i, 42000 + i));
      await lab.flushConntrack('natA');
      await lab.flushConntrack('natB');
      burrow.push(await burrowRun(lab, bytes));
    } finally {
      await lab.destroy();
    }
    process.stderr.write(`run ${i + 1}/${runs}: socat ${mibps(socat.at(-1)!).toFixed(0)} MiB/s, burrow ${mibps(burrow.at(-1)!).toFixed(0)} MiB/s\n`);
  }
  const best = (rs: Run[]) => Math.max(...rs.map(mibps));
  const median = (rs: Run[]) => {
    const s = rs.map(mibps).sort((x, y) => x - y);
    return s[Math.floor((s.length - 1) / 2)] ?? Number.NaN;
  };
  const ok = [...burrow, ...socat].every((r) => r.bytes === bytes);
  const peakSend = Math.max(...burrow.map((r) => r.senderRssMiB ?? Number.NaN));
  const peakRecv = Math.max(...burrow.map((r) => r.receiverRssMiB ?? Number.NaN));
  const ratio = median(burrow) / median(socat);
  process.stdout.write(
    `bench:pipe — ${values.mib} MiB through two port-restricted NATs in the lab, ${runs} runs each, same lab path\n` +
      `(wall time per transfer: start of both sides until both exited; Burrow's includes Node start-up, the punch and the handshake)\n` +
      `socat TCP, 128 KiB blocks   median ${median(socat).toFixed(0)} MiB/s   best ${best(socat).toFixed(0)} MiB/s\n` +
      `burrow pipe (AES-256-GCM)   median ${median(burrow).toFixed(0)} MiB/s   best ${best(burrow).toFixed(0)} MiB/s\n` +
      `ratio burrow/socat          ${(ratio * 100).toFixed(0)} %   (target ≥ 50 %)  ${ratio >= 0.5 ? 'met' : 'MISSED'}\n` +
      `peak RSS burrow sender      ${peakSend.toFixed(0)} MiB   (target ≤ 150 MiB)  ${peakSend <= 150 ? 'met' : 'MISSED'}\n` +
      `peak RSS burrow receiver    ${peakRecv.toFixed(0)} MiB   (target ≤ 150 MiB)  ${peakRecv <= 150 ? 'met' : 'MISSED'}\n` +
      `bytes delivered intact      ${ok ? 'yes' : 'NO'}\n`,
  );
  return ok ? 0 : 1;
}

process.exitCode = await main();
