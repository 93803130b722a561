/**
 * Birthday-probing runs in the lab (issue 11), shared by the lab test (test/lab/birthday.test.ts) and
 * `npm run bench:birthday`: one lab, one `burrow serve` in the core, and `runs` pairs of `burrow punch` one after the
 * other (conntrack and the NATs' state flushed between runs). Every datagram is counted on the routers with tcpdump:
 *
 * - toward the hard side: datagrams from the easy NAT's public IP to the hard NAT's public IP, captured as they arrive
 *   on the hard router (the probe budget: at most 1,100 per attempt, at most 250 in any one-second window);
 * - between two symmetric NATs: each side's datagrams to the other's public IP, captured as they leave its own router.
 *
 * With `relay: 'never'` each side hands its path to the handoff program (src/lab/programs/handoff.ts, through
 * `-- COMMAND`, i.e. $BURROW_LOCAL_PORT), which must exchange datagrams with the other side. With `relay: 'auto'`
 * each side stays on (as the proxy, if relayed) until it reports a direct path (the first result, or a later
 * {"event":"path"} line) or `settleMs` passes; then it is stopped by its PID. Every process is the lab's, and the lab
 * is destroyed on every outcome.
 */

import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { NatKind } from './nat-rules.js';
import type { RouterNode } from './plan.js';
import type { LabProcess } from './process.js';
import { DEFAULT_CLI } from './scenario.js';
import { createLab, type Lab } from './topology.js';

const HANDOFF_PROGRAM = fileURLToPath(new URL('./programs/handoff.js', import.meta.url));
const STREAM_PROGRAM = fileURLToPath(new URL('./programs/udp-stream.js', import.meta.url));
const SERVER = '203.0.113.1:3478';

export interface BirthdayRunsOptions {
  readonly a: NatKind;
  readonly b: NatKind;
  /** Which side starts first in each run: 'a', 'b', or alternating (a first in even runs). */
  readonly first: 'a' | 'b' | 'alternate';
  readonly runs: number;
  readonly relay: 'never' | 'auto';
  /** Between the two starts (ms). */
  readonly delayMs?: number;
  /** Each peer's --timeout (s). */
  readonly timeoutSeconds?: number;
  /** relay 'auto': how long to wait for a direct path before stopping the peers (ms). */
  readonly settleMs?: number;
  /**
   * relay 'auto': run udp-stream as COMMAND on both sides (`rate` datagrams/s for `durationMs`) through
   * $BURROW_LOCAL_PORT, and wait for it to end (instead of stopping the peers once direct).
   */
  readonly stream?: { readonly rate: number; readonly durationMs: number };
  /** Extra `burrow punch` arguments. */
  readonly peerArgs?: readonly string[];
  readonly cliPath?: string;
  /** Called after every run (progress). */
  readonly onRun?: (run: BirthdayRun, index: number) => void;
}

/** What one side printed. */
export interface PeerOutcome {
  readonly name: 'alice' | 'bob';
  readonly exit: number | null;
  /** The first JSON line (the result), if any. */
  readonly result: { path: string; elapsedMs: number; localPort: number; birthday?: { role: string; probes: number } } | undefined;
  /** Later {"event":"path"} lines. */
  readonly moves: readonly { path: string; elapsedMs: number; birthday?: { role: string; probes: number } }[];
  /** The handoff program's report (relay 'never'). */
  readonly handoff: { ok: boolean; heard: boolean; peerHeard: boolean } | undefined;
  /** The stream program's report (`stream`). */
  readonly stream: { sent: number; received: number; highest: number; missing: number[] } | undefined;
  /** The path in use at the end: the last move's, or the result's. */
  readonly finalPath: string | undefined;
  /** When this side knew its final path, from its own start (ms). */
  readonly finalMs: number | undefined;
  readonly stderr: string;
}

export interface BirthdayRun {
  readonly first: 'a' | 'b';
  readonly a: PeerOutcome;
  readonly b: PeerOutcome;
  /** Both sides on a direct path, found by birthday probing (and, relay 'never', the handoff held). */
  readonly direct: boolean;
  /** From the second side's start until both knew the direct path (ms); undefined unless direct. */
  readonly connectMs: number | undefined;
  /** Datagrams from the easy side's public IP toward the hard side's (one hard side only), and the most in any 1 s. */
  readonly towardHard: { readonly total: number; readonly maxPerSecond: number } | undefined;
  /** Both sides symmetric: each side's datagrams to the other's public IP. */
  readonly sprayed: { readonly a: number; readonly b: number } | undefined;
  /** The easy side's probe count as it reported it. */
  readonly probes: number | undefined;
}

interface Capture {
  readonly proc: LabProcess;
  stop(): Promise<number[]>;
}

/** Starts tcpdump in `router` for `filter`; `stop()` returns the capture times (s) of the matching datagrams. */
async function capture(lab: Lab, router: RouterNode, filter: string): Promise<Capture> {
  // Bounded in time by `timeout`, stopped early with SIGINT (tcpdump then flushes and exits).
  const proc = lab.spawn(router, 'timeout', ['-s', 'INT', '120', 'tcpdump', '-i', 'any', '-n', '-tt', '-l', '-q', filter]);
  proc.endInput();
  await proc.waitForOutput('stderr', 'listening on', 10_000);
  return {
    proc,
    stop: async () => {
      await sleep(300); // the last datagrams reach the capture
      proc.kill('SIGINT');
      await Promise.race([proc.exited, sleep(5000)]);
      return proc.stdout.split('\n').map((l) => Number(l.split(' ')[0])).filter((t) => Number.isFinite(t) && t > 0);
    },
  };
}

/** The most timestamps (s) in any window of one second. */
export function maxPerSecond(times: readonly number[]): number {
  const t = [...times].sort((x, y) => x - y);
  let best = 0;
  let j = 0;
  for (let i = 0; i < t.length; i++) {
    while ((t[i] ?? 0) - (t[j] ?? 0) >= 1) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

function parseLines(stdout: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not ours
    }
  }
  return out;
}

function outcome(name: 'alice' | 'bob', p: LabProcess): PeerOutcome {
  const lines = parseLines(p.stdout);
  const first = lines[0];
  const result = first && typeof first.path === 'string' && first.event === undefined ? (first as unknown as PeerOutcome['result']) : undefined;
  const moves = lines.filter((l) => l.event === 'path') as unknown as PeerOutcome['moves'];
  const last = lines.at(-1);
  const handoff = last && 'peerHeard' in last ? (last as unknown as PeerOutcome['handoff']) : undefined;
  const stream = last && 'highest' in last ? (last as unknown as PeerOutcome['stream']) : undefined;
  const final = moves.at(-1) ?? result;
  return {
    name,
    exit: p.exitStatus?.code ?? null,
    result,
    moves,
    handoff,
    stream,
    finalPath: final?.path,
    finalMs: final?.elapsedMs,
    stderr: p.stderr,
  };
}

/** Runs the pairs; the lab is destroyed on every outcome. */
export async function runBirthdayRuns(o: BirthdayRunsOptions): Promise<BirthdayRun[]> {
  const cli = o.cliPath ?? DEFAULT_CLI;
  const dir = await mkdtemp(join(tmpdir(), 'burrow-birthday-lab-'));
  const lab = await createLab({ a: o.a, b: o.b });
  const runs: BirthdayRun[] = [];
  try {
    const secretFile = join(dir, 'secret');
    await writeFile(secretFile, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600 });
    const serve = lab.spawn('pub', process.execPath, [cli, 'serve', '--listen', SERVER, '--secret-file', secretFile, '--log-format', 'json']);
    serve.endInput();
    await serve.waitForOutput('stderr', '"listening"', 10_000);
    const ipA = lab.addresses.routers.natA.public.v4;
    const ipB = lab.addresses.routers.natB.public.v4;
    const hard: 'a' | 'b' | 'both' | undefined = o.a === 'symmetric' && o.b === 'symmetric' ? 'both' : o.a === 'symmetric' ? 'a' : o.b === 'symmetric' ? 'b' : undefined;
    const timeout = o.timeoutSeconds ?? 8;
    for (let i = 0; i < o.runs; i++) {
      await Promise.all([lab.flushConntrack('natA'), lab.flushConntrack('natB')]);
      const first: 'a' | 'b' = o.first === 'alternate' ? (i % 2 === 0 ? 'a' : 'b') : o.first;
      const captures: Capture[] = [];
      if (hard === 'a') captures.push(await capture(lab, 'natA', `udp and src host ${ipB} and dst host ${ipA}`));
      if (hard === 'b') captures.push(await capture(lab, 'natB', `udp and src host ${ipA} and dst host ${ipB}`));
      if (hard === 'both') {
        captures.push(await capture(lab, 'natA', `udp and src host ${ipA} and dst host ${ipB}`));
        captures.push(await capture(lab, 'natB', `udp and src host ${ipB} and dst host ${ipA}`));
      }
      const start = (side: 'a' | 'b'): LabProcess => {
        const [name, peer] = side === 'a' ? (['alice', 'bob'] as const) : (['bob', 'alice'] as const);
        const args = [cli, 'punch', '--server', SERVER, '--secret-file', secretFile, '--as', name, '--to', peer, '--format', 'json', '--timeout', String(timeout), '--relay', o.relay, ...(o.peerArgs ?? [])];
        if (o.relay === 'never') {
          args.push('--', process.execPath, HANDOFF_PROGRAM, '--port', '$BURROW_LOCAL_PORT', '--remote-address', '$BURROW_REMOTE_ADDRESS', '--remote-port', '$BURROW_REMOTE_PORT', '--timeout-ms', '4000');
        }
        if (o.relay === 'auto' && o.stream) {
          args.push('--', process.execPath, STREAM_PROGRAM, '--port', '$BURROW_LOCAL_PORT', '--remote-address', '$BURROW_REMOTE_ADDRESS', '--remote-port', '$BURROW_REMOTE_PORT',
            '--rate', String(o.stream.rate), '--duration-ms', String(o.stream.durationMs), '--linger-ms', '1500');
        }
        const p = lab.spawn(side === 'a' ? 'hA' : 'hB', process.execPath, args);
        p.endInput();
        return p;
      };
      const second: 'a' | 'b' = first === 'a' ? 'b' : 'a';
      const firstProc = start(first);
      await sleep(o.delayMs ?? 500);
      const secondProc = start(second);
      const [pa, pb] = first === 'a' ? [firstProc, secondProc] : [secondProc, firstProc];
      const bound = (timeout + 8) * 1000;
      const stopAfter = async (p: LabProcess, ms: number): Promise<void> => {
        const timer = setTimeout(() => {
          p.kill('SIGKILL');
        }, ms);
        await p.exited;
        clearTimeout(timer);
      };
      if (o.relay === 'never') {
        await Promise.all([stopAfter(pa, bound), stopAfter(pb, bound)]);
      } else if (o.stream) {
        await Promise.all([stopAfter(pa, bound + o.stream.durationMs), stopAfter(pb, bound + o.stream.durationMs)]);
      } else {
        const settle = o.settleMs ?? 8000;
        const direct = (text: string): boolean => /"path":"direct"/.test(text) || /"path":"lan"/.test(text);
        await Promise.all([pa, pb].map((p) => p.waitForOutput('stdout', direct, settle).catch(() => undefined)));
        // Symmetric pairs: keep running on the relay a while, so that a spray would show.
        if (hard === 'both') await sleep(2000);
        for (const p of [pa, pb]) p.kill('SIGTERM');
        await Promise.all([stopAfter(pa, 5000), stopAfter(pb, 5000)]);
      }
      const times = await Promise.all(captures.map((c) => c.stop()));
      const a = outcome('alice', pa);
      const b = outcome('bob', pb);
      const handoffOk = o.relay !== 'never' || (a.handoff?.ok === true && b.handoff?.ok === true && a.exit === 0 && b.exit === 0);
      const viaBirthday = (x: PeerOutcome): boolean => x.finalPath === 'direct' && (x.moves.at(-1)?.birthday ?? x.result?.birthday) !== undefined;
      const direct = viaBirthday(a) && viaBirthday(b) && handoffOk;
      const delay = pa.startedAt < pb.startedAt ? pb.startedAt - pa.startedAt : pa.startedAt - pb.startedAt;
      const firstOut = first === 'a' ? a : b;
      const secondOut = first === 'a' ? b : a;
      const connectMs = direct && firstOut.finalMs !== undefined && secondOut.finalMs !== undefined ? Math.max(secondOut.finalMs, firstOut.finalMs - delay) : undefined;
      const easy = hard === 'a' ? b : hard === 'b' ? a : undefined;
      const easyBirthday = easy?.moves.at(-1)?.birthday ?? easy?.result?.birthday;
      const run: BirthdayRun = {
        first,
        a,
        b,
        direct,
        connectMs,
        towardHard: hard === 'a' || hard === 'b' ? { total: times[0]?.length ?? 0, maxPerSecond: maxPerSecond(times[0] ?? []) } : undefined,
        sprayed: hard === 'both' ? { a: times[0]?.length ?? 0, b: times[1]?.length ?? 0 } : undefined,
        probes: easyBirthday?.role === 'easy' ? easyBirthday.probes : undefined,
      };
      runs.push(run);
      o.onRun?.(run, i);
    }
    serve.kill('SIGTERM');
    await Promise.race([serve.exited, sleep(3000)]);
    return runs;
  } finally {
    await lab.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}
