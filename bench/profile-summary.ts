/**
 * Summarises V8 CPU profiles (`node --cpu-prof`, e.g. from BENCH_PIPE_PROFILE=DIR npm run bench:pipe):
 * for each file, the functions with the most self time, as a share of all samples, and the same grouped
 * by where the code lives (Node internals, this project, native code, idle, GC).
 *
 *   node dist/bench/profile-summary.js [--top N] FILE.cpuprofile...
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}
interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
  readonly startTime: number;
  readonly endTime: number;
}

/** Where a frame's code lives, for the grouped view. */
function area(url: string, name: string): string {
  if (name === '(idle)' || name === '(program)' || name === '(garbage collector)') return name;
  if (url === '') return '(native: crypto, fs, buffers, syscalls)';
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0] ?? ''}`;
  const m = /\/(src|dist\/src)\/(.+)$/.exec(url);
  if (m?.[2] !== undefined) return `burrow ${m[2].replace(/\.(c?js|ts)$/, '')}`;
  return basename(url);
}

async function summarise(file: string, top: number): Promise<string[]> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (const [i, id] of profile.samples.entries()) self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  let total = 0;
  const byFunction = new Map<string, number>();
  const byArea = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (n === undefined) continue;
    total += us;
    const { functionName, url, lineNumber } = n.callFrame;
    const where = url === '' ? '' : ` ${basename(url)}:${lineNumber + 1}`;
    const key = `${functionName === '' ? '(anonymous)' : functionName}${where}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    const a = area(url, functionName);
    byArea.set(a, (byArea.get(a) ?? 0) + us);
  }
  const busy = total - (byArea.get('(idle)') ?? 0);
  const pct = (us: number): string => `${((100 * us) / total).toFixed(1).padStart(5)} %`;
  const out = [`${basename(file)}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s not idle`];
  out.push('  by area:');
  for (const [k, us] of [...byArea].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`    ${pct(us)}  ${(us / 1e6).toFixed(2).padStart(6)} s  ${k}`);
  out.push('  by function (self time):');
  for (const [k, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`    ${pct(us)}  ${(us / 1e6).toFixed(2).padStart(6)} s  ${k}`);
  return out;
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '15' } } });
for (const file of positionals) process.stdout.write(`${(await summarise(file, Number(values.top))).join('\n')}\n\n`);
