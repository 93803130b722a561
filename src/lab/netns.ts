/**
 * Named network namespaces: entering, listing, emptying and deleting them. Everything here acts on namespaces by
 * name and on processes by PID; nothing matches processes by name.
 */

import { readFileSync, readdirSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCommand, runSync } from './exec.js';

/** Where `ip netns` keeps named namespaces. */
export const NETNS_DIR = '/run/netns';

/**
 * `cmd args` wrapped to run inside namespace `ns`. nsenter joins only the network namespace and then execs `cmd`, so the
 * PID the caller sees is the command's own. (`ip netns exec` would also unshare a mount namespace to remount /sys,
 * which none of our programs need.)
 */
export function inNamespace(ns: string, cmd: string, args: readonly string[]): [string, string[]] {
  return ['nsenter', [`--net=${NETNS_DIR}/${ns}`, '--', cmd, ...args]];
}

function isMissing(err: unknown): boolean {
  return err instanceof Error && 'code' in err && err.code === 'ENOENT';
}

/** Names of all named namespaces on the machine. */
export async function listNamespaces(): Promise<string[]> {
  try {
    return await readdir(NETNS_DIR);
  } catch (err) {
    if (isMissing(err)) return [];
    throw err;
  }
}

export function listNamespacesSync(): string[] {
  try {
    return readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

/** Sends `signal` to `pid`; a process that is already gone is not an error. */
export function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // ESRCH: already gone.
  }
}

/**
 * Whether `pid` still runs. A zombie counts as gone: it holds no namespace any more, and in a container whose PID 1
 * does not reap, an orphaned grandchild may stay a zombie for good.
 */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may itself contain ')': state is the first.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function parsePids(text: string): number[] {
  return text
    .split('\n')
    .map((line) => Number.parseInt(line, 10))
    .filter((pid) => Number.isInteger(pid) && pid > 1 && pid !== process.pid);
}

/** PIDs of the processes inside `ns`. They are necessarily ours: nobody else starts processes in our namespaces. */
export async function namespacePids(ns: string): Promise<number[]> {
  const result = await runCommand('ip', ['netns', 'pids', ns], { timeoutMs: 5_000 });
  return result.code === 0 ? parsePids(result.stdout) : [];
}

/**
 * Kills every process inside the namespaces (SIGKILL: this is teardown), repeating for processes that were forked
 * meanwhile, and waits for them to be gone, at most ~2 s. `ip netns del` alone would leave them running and keep the
 * namespace alive (nat-lab.md, pitfall 6).
 */
export async function emptyNamespaces(namespaces: readonly string[]): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const pids = (await Promise.all(namespaces.map(namespacePids))).flat();
    if (pids.length === 0) return;
    for (const pid of pids) signalPid(pid, 'SIGKILL');
    for (let wait = 0; wait < 40 && pids.some(isRunning); wait++) await sleep(10);
  }
}

/** Deletes those of `namespaces` that exist. */
export async function deleteNamespaces(namespaces: readonly string[]): Promise<void> {
  const existing = new Set(await listNamespaces());
  const batch = namespaces.filter((ns) => existing.has(ns)).map((ns) => `netns del ${ns}\n`);
  if (batch.length > 0) await runCommand('ip', ['-force', '-batch', '-'], { input: batch.join(''), timeoutMs: 5_000 });
}

/**
 * Synchronous teardown for `exit` and signal handlers: kill `pids` and everything inside the namespaces, then delete
 * them. Never throws.
 */
export function teardownSync(namespaces: readonly string[], pids: readonly number[]): void {
  for (const pid of pids) signalPid(pid, 'SIGKILL');
  const existing = new Set(listNamespacesSync());
  const present = namespaces.filter((ns) => existing.has(ns));
  for (const ns of present) {
    for (const pid of parsePids(runSync('ip', ['netns', 'pids', ns]).stdout)) signalPid(pid, 'SIGKILL');
  }
  if (present.length > 0) runSync('ip', ['-force', '-batch', '-'], present.map((ns) => `netns del ${ns}\n`).join(''));
}
