/**
 * `burrow lab`: runs a real punch across emulated NATs (network namespaces + nftables, root only) and
 * reports what each side printed, whether the handoff contract held, and how long it took. The lab is
 * torn down on every outcome, including Ctrl-C. `burrow lab matrix` does that for every pair of NAT kinds and draws
 * the result as an SVG grid.
 */
import { writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { isMatrixRelay, MATRIX_RELAYS, relayAvailable, runMatrix, type MatrixResult, type MatrixRun } from '../lab/matrix.js';
import { cellLines, formatMs, renderMatrixSvg } from '../lab/matrix-svg.js';
import { isNatKind, NAT_KINDS, type NatKind } from '../lab/nat-rules.js';
import { runPunchScenario, type PeerResult, type PunchScenarioResult } from '../lab/scenario.js';
import { labAvailable } from '../lab/topology.js';
import { say, type Io } from './common.js';
import { usageError } from './parse.js';
import type { Parsed } from './schema.js';

function kind(flag: string, value: string | undefined): NatKind {
  if (value === undefined) throw usageError(`${flag} KIND is required`, `KIND is one of ${NAT_KINDS.join(', ')}`);
  if (!isNatKind(value)) throw usageError(`${flag} "${value}" is not a NAT kind`, `use one of ${NAT_KINDS.join(', ')}`);
  return value;
}

function describePeer(p: PeerResult): string {
  const status = p.exit.code === null ? `killed by ${p.exit.signal ?? 'a signal'}` : `exit ${p.exit.code}`;
  const handoff = p.handoff ? (p.handoff.ok ? ', handoff contract holds' : ', HANDOFF FAILED') : '';
  return `${p.name} in ${p.node}: ${status} after ${Math.round(p.wallMs)} ms${handoff}\n` +
    p.stderr.split('\n').filter((l) => l.length > 0).map((l) => `    ${l}`).join('\n') +
    (p.stdout.length > 0 ? `\n    stdout: ${p.stdout.trim()}` : '');
}

export function formatReport(r: PunchScenarioResult): string {
  const o = r.options;
  const peers = [r.peers.a, r.peers.b].filter((p): p is PeerResult => p !== null);
  return `lab ${r.runId}: ${o.a} ↔ ${o.sameNat === true ? `${o.a} (same NAT)` : o.b}: ${r.connected ? 'CONNECTED' : 'not connected'} ` +
    `(lab set-up ${Math.round(r.setupMs)} ms, both exited ${Math.round(r.allExitedMs)} ms after the first started)\n` +
    peers.map(describePeer).join('\n') + '\n';
}

export async function labPunchCommand(parsed: Parsed<'lab punch'>, io: Io): Promise<number> {
  const { values } = parsed;
  const a = kind('--a', values.a);
  const b = values['same-nat'] && values.b === undefined ? a : kind('--b', values.b);
  const available = labAvailable();
  if (!available.ok) throw usageError(`cannot build the NAT lab: ${available.reason}`, 'run it as root on Linux with iproute2, nftables and conntrack installed');
  const result = await runPunchScenario({
    a,
    b,
    sameNat: values['same-nat'],
    first: values.first,
    delayMs: values.delay,
    timeoutSeconds: values.timeout,
    lossPercent: values.loss,
    signal: io.signal,
  });
  io.stdout.write(formatReport(result));
  return result.connected ? 0 : 1;
}

/** The root-only half of `burrow demo`: one punch across two port-restricted NATs. */
export async function labDemo(io: Io, signal: AbortSignal): Promise<number> {
  const available = labAvailable();
  if (!available.ok) {
    say(io, `skipping the emulated-NAT demo: ${available.reason}.`);
    return 0;
  }
  say(io, 'demo 2: the same across two emulated port-restricted NATs (network namespaces + nftables)');
  const result = await runPunchScenario({ a: 'port-restricted', b: 'port-restricted', timeoutSeconds: 10, signal });
  io.stdout.write(formatReport(result));
  return result.connected ? 0 : 1;
}

function listOf<T extends string>(flag: string, text: string, valid: (v: string) => v is T, choices: readonly string[]): T[] {
  const items = text.split(',').map((v) => v.trim()).filter((v) => v !== '');
  if (items.length === 0) throw usageError(`${flag} is empty`, `give one or more of ${choices.join(', ')}, separated by commas`);
  const bad = items.filter((v) => !valid(v));
  if (bad.length > 0) throw usageError(`${flag}: "${bad.join('", "')}" ${bad.length === 1 ? 'is' : 'are'} not one of ${choices.join(', ')}`, `separate several with commas, e.g. ${flag} ${choices.slice(0, 2).join(',')}`);
  return [...new Set(items)] as T[];
}

/** Whether a run ended as it should: connected, or (where no relay is reachable) exit 5 on both sides. */
export function runAsExpected(run: MatrixRun): boolean {
  if (run.connected) return true;
  return !relayAvailable(run.relay) && run.harnessError === null && run.peers.first.exitCode === 5 && run.peers.second.exitCode === 5;
}

function describeRun(run: MatrixRun): string {
  const where = `${run.relay}: ${run.first} first → ${run.second} (first behind router ${run.position.toUpperCase()}, run ${run.index + 1})`;
  if (run.connected) {
    const relayed = run.relayDatagrams === null ? '' : `; relay carried ${run.relayDatagrams} datagrams, ${run.relayDatagramsAfterResult ?? '?'} after both connected`;
    const probes = run.probes === null && run.sockets === null ? '' : `; birthday: ${String(run.probes ?? '?')} probes, ${String(run.sockets ?? '?')} sockets`;
    const moved = run.initialPath !== run.path ? ` (${run.initialPath} first, then moved)` : '';
    return `${where}: ${run.path}${moved} in ${formatMs(run.connectMs)}${probes}${relayed}`;
  }
  const exits = `exit ${String(run.peers.first.exitCode ?? run.peers.first.signal)} / ${String(run.peers.second.exitCode ?? run.peers.second.signal)}`;
  const errors = [...new Set([run.peers.first.error, run.peers.second.error].filter((e): e is string => e !== null))].join(' | ');
  return `${where}: ${runAsExpected(run) ? 'no path (as expected without a relay)' : 'FAILED'}, ${exits}: ${errors.replace(/\s+/g, ' ').slice(0, 400)}`;
}

/** The matrix as text: one table per relay mode. */
export function formatMatrixText(result: MatrixResult): string {
  const width = Math.max(...result.kinds.map((k) => k.length), 'first \\ second'.length) + 2;
  const col = 30;
  const lines: string[] = [];
  for (const relay of result.relays) {
    lines.push(`relay ${relay} (rows: the peer that starts first; ${result.runsPerCell} runs per cell)`);
    lines.push('first \\ second'.padEnd(width) + result.kinds.map((k) => k.padEnd(col)).join(''));
    for (const first of result.kinds) {
      const row = result.kinds.map((second) => {
        const cell = result.cells.find((c) => c.relay === relay && c.first === first && c.second === second);
        if (cell === undefined) return '-'.padEnd(col);
        const [l1, l2] = cellLines(cell);
        return `${l1}, ${l2.replace('median ', '')}${cell.medianProbes === null ? '' : `, ${Math.round(cell.medianProbes)} probes`}`.padEnd(col);
      });
      lines.push(first.padEnd(width) + row.join(''));
    }
    lines.push('');
  }
  return lines.join('\n');
}

export async function labMatrixCommand(parsed: Parsed<'lab matrix'>, io: Io): Promise<number> {
  const { values } = parsed;
  const kinds = listOf('--kinds', values.kinds, isNatKind, NAT_KINDS);
  const relays = listOf('--relay', values.relay, isMatrixRelay, MATRIX_RELAYS);
  if (values['upgrade-wait'] > 60) throw usageError(`--upgrade-wait ${values['upgrade-wait']} is too long`, 'give at most 60 seconds (0: no wait)');
  const available = labAvailable();
  if (!available.ok) throw usageError(`cannot build the NAT lab: ${available.reason}`, 'run it as root on Linux with iproute2, nftables and conntrack installed');
  const total = kinds.length * kinds.length * 2 * values.runs * relays.length;
  say(io, `${total} runs: ${kinds.length}×${kinds.length} cells × 2 router positions × ${values.runs} run(s) × ${relays.length} relay mode(s)`);
  let done = 0;
  const result = await runMatrix({
    kinds,
    relays,
    runs: values.runs,
    ...(values.timeout !== undefined ? { timeoutSeconds: values.timeout } : {}),
    upgradeWaitMs: Math.round(values['upgrade-wait'] * 1000),
    signal: io.signal,
    onRun: (run) => {
      done++;
      say(io, `[${done}/${total}] ${describeRun(run)}`);
    },
  });
  const note = `made by burrow lab matrix on ${hostname()}, ${result.startedAt.slice(0, 16).replace('T', ' ')} UTC, in ${Math.round(result.durationMs / 1000)} s`;
  await writeFile(values.report, renderMatrixSvg(result, note));
  const unexpected = result.runs.filter((r) => !runAsExpected(r));
  if (values.format === 'json') {
    // Each run without the peers' full output (kept short); the errors stay.
    const runs = result.runs.map((r) => ({ ...r, peers: { first: { ...r.peers.first, stdout: undefined, stderr: undefined }, second: { ...r.peers.second, stdout: undefined, stderr: undefined } } }));
    io.stdout.write(`${JSON.stringify({ ...result, runs, report: values.report, unexpected: unexpected.length })}\n`);
  } else {
    io.stdout.write(formatMatrixText(result));
  }
  say(io, `wrote ${values.report}; ${result.runs.length - unexpected.length} of ${result.runs.length} runs ended as expected`);
  for (const run of unexpected) say(io, `unexpected: ${describeRun(run)}`);
  return unexpected.length === 0 ? 0 : 1;
}
