/**
 * Punches under random packet loss in the NAT lab, shared by test/lab/loss.test.ts and `npm run bench:loss`: one lab
 * (two port-restricted NATs, `numgen random` loss on both routers, so peer↔server and peer↔peer traffic both suffer),
 * one `burrow serve` in the core, then `runs` punches between real `burrow punch` processes, one after another, with
 * fresh names and with both routers' conntrack flushed before each. Root only.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { parsePunchOutput } from '../../src/lab/scenario.js';
import { createLab, type Lab } from '../../src/lab/topology.js';

const CLI = fileURLToPath(new URL('../../src/cli/burrow.cjs', import.meta.url));

export interface LossTrialOptions {
  readonly runs: number;
  readonly lossPercent: number;
  /** Each peer's --timeout. */
  readonly timeoutSeconds: number;
  /** Called after each run, e.g. for progress output. */
  readonly onRun?: (run: LossRun) => void;
}

export interface LossRun {
  readonly index: number;
  readonly connected: boolean;
  /** The later of the two peers' `elapsedMs` (from its start until it knew the path), when both connected. */
  readonly connectMs: number | undefined;
  readonly detail: string;
}

export interface LossTrials {
  readonly runs: readonly LossRun[];
  readonly connected: number;
  readonly runId: string;
}

/** Nearest-rank percentile (0 < p ≤ 100). */
export function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((x, y) => x - y);
  return sorted[Math.max(1, Math.ceil((p / 100) * sorted.length)) - 1] ?? Number.NaN;
}

/** "min … / p50 … / p90 … / p95 … / max …" in milliseconds. */
export function distribution(samples: readonly number[]): string {
  const f = (p: number): string => `${percentile(samples, p).toFixed(0)} ms`;
  return `min ${f(0.0001)} / p50 ${f(50)} / p90 ${f(90)} / p95 ${f(95)} / max ${f(100)} (${samples.length} samples)`;
}

async function oneRun(lab: Lab, env: NodeJS.ProcessEnv, index: number, timeoutSeconds: number): Promise<LossRun> {
  await Promise.all([lab.flushConntrack('natA'), lab.flushConntrack('natB')]);
  const tag = `${String(index)}-${randomBytes(3).toString('hex')}`;
  const peer = (node: 'hA' | 'hB', name: string, other: string) =>
    lab.spawn(node, process.execPath, [CLI, 'punch', '--server', '203.0.113.1:3478', '--as', name, '--to', other, '--timeout', String(timeoutSeconds), '--format', 'json', '--relay', 'never'], { env });
  const alice = peer('hA', `alice-${tag}`, `bob-${tag}`);
  const bob = peer('hB', `bob-${tag}`, `alice-${tag}`);
  const [ea, eb] = await Promise.all([alice.exited, bob.exited]);
  const oa = ea.code === 0 ? parsePunchOutput(alice.stdout) : undefined;
  const ob = eb.code === 0 ? parsePunchOutput(bob.stdout) : undefined;
  // Connected to each other: each names the other's router (port-restricted NATs keep no LAN path between them).
  const connected = oa?.ok === true && ob?.ok === true && oa.value.remoteAddress === lab.addresses.routers.natB.public.v4 && ob.value.remoteAddress === lab.addresses.routers.natA.public.v4;
  const tail = (s: string): string => s.trim().split('\n').at(-1) ?? '';
  return {
    index,
    connected,
    connectMs: connected ? Math.max(oa.value.elapsedMs, ob.value.elapsedMs) : undefined,
    detail: connected ? '' : `alice exit ${String(ea.code)}: ${tail(alice.stderr)} | bob exit ${String(eb.code)}: ${tail(bob.stderr)}`,
  };
}

export async function runLossTrials(options: LossTrialOptions): Promise<LossTrials> {
  const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
  const env: NodeJS.ProcessEnv = { ...process.env, BURROW_SECRET: randomBytes(32).toString('base64url') };
  delete env.NODE_EXTRA_CA_CERTS;
  delete env.NODE_TEST_CONTEXT;
  try {
    const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', '203.0.113.1:3478', '--log-format', 'json'], { env });
    await server.waitForOutput('stderr', '"listening"', 5000);
    await Promise.all([lab.setLoss('natA', options.lossPercent), lab.setLoss('natB', options.lossPercent)]);
    const runs: LossRun[] = [];
    for (let i = 0; i < options.runs; i++) {
      const run = await oneRun(lab, env, i, options.timeoutSeconds);
      runs.push(run);
      options.onRun?.(run);
    }
    if (server.exitStatus !== null) throw new Error(`the server exited during the trials: ${server.stderr}`);
    return { runs, connected: runs.filter((r) => r.connected).length, runId: lab.runId };
  } finally {
    await lab.destroy();
  }
}
