/**
 * `npm run bench:connect`: how fast two peers behind port-restricted NATs connect, in the NAT lab (root only).
 *
 *   node dist/bench/connect.js [--runs N] [--late-delay-ms MS]
 *
 * Each run uses a fresh lab and server (fresh conntrack), and times the real CLI processes, Node's start-up included:
 * (a) both peers started together: from the first spawn until both have exited, and the `elapsedMs` each prints;
 * (b) a late joiner: B starts 3 s after A; from B's spawn until both have exited.
 * The baselines are netpunch's, measured the same way (issue 2).
 */

import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { runPunchScenario, type PunchScenarioResult } from '../src/lab/scenario.js';
import { labAvailable } from '../src/lab/topology.js';

interface Metric {
  readonly label: string;
  readonly samples: number[];
  readonly target: string;
  readonly targetMs: number;
  readonly netpunch: string;
}

/** Nearest-rank percentile of `samples` (0 < p <= 100). */
function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((x, y) => x - y);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] ?? Number.NaN;
}

function ms(value: number): string {
  return Number.isNaN(value) ? '—' : `${value.toFixed(0)} ms`;
}

function describeFailure(result: PunchScenarioResult): string {
  return [result.peers.a, result.peers.b]
    .map((peer) => (peer === null ? 'absent' : `${peer.name} exit ${String(peer.exit.code)}: ${peer.stderr.trim().split('\n').at(-1) ?? ''}`))
    .join('; ');
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, 'late-delay-ms': { type: 'string' } } });
  const runs = Number(values.runs ?? '20');
  const lateDelayMs = Number(values['late-delay-ms'] ?? '3000');
  if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(lateDelayMs) || lateDelayMs < 0) {
    console.error('usage: node dist/bench/connect.js [--runs N] [--late-delay-ms MS]');
    return 2;
  }
  const availability = labAvailable();
  if (!availability.ok) {
    console.error(`bench:connect runs in the NAT lab and cannot run here: ${availability.reason}.`);
    console.error('Run it as root on Linux, e.g. `sudo npm run bench:connect`.');
    return 1;
  }

  const wall: number[] = [];
  const elapsed: number[] = [];
  const late: number[] = [];
  let failures = 0;
  const record = (what: string, i: number, result: PunchScenarioResult, measure: () => void): void => {
    if (result.connected) {
      measure();
      console.error(`${what} ${i + 1}/${runs}: ok`);
    } else {
      failures++;
      console.error(`${what} ${i + 1}/${runs}: FAILED (${describeFailure(result)})`);
    }
  };

  for (let i = 0; i < runs; i++) {
    const result = await runPunchScenario({ a: 'port-restricted', b: 'port-restricted', timeoutSeconds: 10, checkHandoff: false });
    record('both start', i, result, () => {
      wall.push(result.allExitedMs);
      for (const peer of [result.peers.a, result.peers.b]) {
        if (peer?.output?.ok === true) elapsed.push(peer.output.value.elapsedMs);
      }
    });
  }
  for (let i = 0; i < runs; i++) {
    const result = await runPunchScenario({
      a: 'port-restricted',
      b: 'port-restricted',
      first: 'a',
      delayMs: lateDelayMs,
      timeoutSeconds: 10 + Math.ceil(lateDelayMs / 1000),
      checkHandoff: false,
    });
    record('late joiner', i, result, () => {
      const b = result.peers.b;
      if (b !== null) late.push(result.allExitedMs - b.startedAtMs);
    });
  }

  const metrics: Metric[] = [
    { label: 'both start: wall time until both exited', samples: wall, target: '≤ 150 ms', targetMs: 150, netpunch: '212 ms' },
    { label: 'both start: peers’ elapsedMs', samples: elapsed, target: '≤ 30 ms', targetMs: 30, netpunch: '—' },
    { label: `late joiner (B +${lateDelayMs} ms): B start until both exited`, samples: late, target: '≤ 150 ms', targetMs: 150, netpunch: '27.6 s' },
  ];
  console.log(`bench:connect — port-restricted ↔ port-restricted in the NAT lab, ${runs} runs each, Node ${process.version}, ${availableParallelism()} CPUs`);
  console.log('(times are medians and p95 over successful runs, Node start-up included; target = median)');
  const width = Math.max(...metrics.map((m) => m.label.length));
  console.log(`${'metric'.padEnd(width)}  ${'n'.padStart(3)}  ${'median'.padStart(8)}  ${'p95'.padStart(8)}  ${'target'.padEnd(9)}  ${'netpunch'.padStart(8)}  verdict`);
  for (const m of metrics) {
    const median = percentile(m.samples, 50);
    const verdict = m.samples.length === 0 ? 'no data' : median <= m.targetMs ? 'met' : 'MISSED';
    console.log(
      `${m.label.padEnd(width)}  ${String(m.samples.length).padStart(3)}  ${ms(median).padStart(8)}  ${ms(percentile(m.samples, 95)).padStart(8)}  ${m.target.padEnd(9)}  ${m.netpunch.padStart(8)}  ${verdict}`,
    );
  }
  if (failures > 0) {
    console.log(`${failures} of ${2 * runs} runs did not connect (see stderr).`);
    return 1;
  }
  return 0;
}

process.exitCode = await main();
