/**
 * `npm run bench:birthday`: birthday-paradox probing in the NAT lab (needs root, nftables, conntrack, tcpdump).
 *
 *   node dist/bench/birthday.js [--runs N] [--relay never|auto] [--easy port-restricted|firewall|...] [--first both|easy|hard]
 *
 * Runs N pairs (default 20) with the port-restricted side first and N with the symmetric side first, each pair a
 * fresh `burrow punch` on both sides with `--relay never` (each side hands its path to a program that must exchange
 * datagrams through $BURROW_LOCAL_PORT), and prints per order: how many connected directly by birthday probing, how
 * many within 5 s of the second start, the median / p90 / max time to connect, the easy side's probes per hit, and the
 * datagrams toward the symmetric side's IP (total and most in any second) counted with tcpdump on its router.
 * Baseline in the same run: the theoretical hit probability for the probes used (hitProbability).
 */
import { parseArgs } from 'node:util';
import { DEFAULT_BIRTHDAY, hitProbability } from '../src/core/punch/birthday.js';
import { runBirthdayRuns, type BirthdayRun } from '../src/lab/birthday.js';
import { isNatKind } from '../src/lab/nat-rules.js';
import { labAvailable } from '../src/lab/topology.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '20' }, relay: { type: 'string', default: 'never' }, easy: { type: 'string', default: 'port-restricted' }, first: { type: 'string', default: 'both' } } });
const runs = Number(values.runs);
const relay = values.relay === 'auto' ? 'auto' : 'never';
const easy = values.easy;
if (!Number.isInteger(runs) || runs < 1 || runs > 200 || !isNatKind(easy)) {
  process.stderr.write('usage: bench/birthday.js [--runs 1-200] [--relay never|auto] [--easy KIND]\n');
  process.exit(2);
}
const availability = labAvailable();
if (!availability.ok) {
  process.stderr.write(`bench:birthday: ${availability.reason}\n`);
  process.exit(1);
}

function pct(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function summary(label: string, rs: readonly BirthdayRun[]): void {
  const direct = rs.filter((r) => r.direct);
  const times = direct.map((r) => r.connectMs ?? Infinity);
  const within5 = times.filter((t) => t <= 5000).length;
  const probes = direct.map((r) => r.probes ?? 0);
  const toward = rs.map((r) => r.towardHard?.total ?? 0);
  const peak = rs.map((r) => r.towardHard?.maxPerSecond ?? 0);
  const meanProbes = probes.reduce((a, b) => a + b, 0) / Math.max(1, probes.length);
  process.stdout.write(
    `${label}: direct ${direct.length}/${rs.length}, within 5 s ${within5}/${rs.length}; ` +
      `time to connect median ${pct(times, 50).toFixed(0)} ms, p90 ${pct(times, 90).toFixed(0)} ms, max ${Math.max(...times, 0).toFixed(0)} ms; ` +
      `probes per hit median ${pct(probes, 50)}, mean ${meanProbes.toFixed(0)}, max ${Math.max(...probes, 0)} ` +
      `(theory for ${DEFAULT_BIRTHDAY.sockets} sockets: 50% by ${[...Array(1000).keys()].find((k) => hitProbability(DEFAULT_BIRTHDAY.sockets, k) >= 0.5) ?? '?'} probes); ` +
      `datagrams toward the symmetric side's IP per run: max ${Math.max(...toward)}, most in any 1 s: ${Math.max(...peak)}\n`,
  );
}

const all: BirthdayRun[] = [];
const orders = values.first === 'easy' ? (['a'] as const) : values.first === 'hard' ? (['b'] as const) : (['a', 'b'] as const);
for (const first of orders) {
  const label = `${easy} ↔ symmetric, ${first === 'a' ? easy : 'symmetric'} side first, --relay ${relay}`;
  const rs = await runBirthdayRuns({
    a: easy,
    b: 'symmetric',
    first,
    runs,
    relay,
    onRun: (r, i) => {
      process.stderr.write(`  run ${i + 1}: ${r.direct ? 'direct' : `NOT direct (alice ${r.a.finalPath ?? `exit ${r.a.exit}`}, bob ${r.b.finalPath ?? `exit ${r.b.exit}`})`} ${r.connectMs?.toFixed(0) ?? '-'} ms, ${r.probes ?? '-'} probes, toward hard ${r.towardHard?.total} (peak ${r.towardHard?.maxPerSecond}/s)\n`);
      if (!r.direct) process.stderr.write(`    alice: ${r.a.stderr.split('\n').slice(-6).join('\n    ')}\n    bob: ${r.b.stderr.split('\n').slice(-6).join('\n    ')}\n`);
    },
  });
  all.push(...rs);
  summary(label, rs);
}
summary('all', all);
