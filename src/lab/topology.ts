/**
 * Builds a lab from its plan (plan.ts), runs processes inside it, and tears it down on every outcome.
 *
 * Bring-up costs seven process spawns: one `ip -batch` in the root namespace creates the six namespaces and the links
 * directly inside them (nothing is ever created in the root namespace), then one `sh` per namespace, all in parallel,
 * sets sysctls, addresses, routes and (routers) the nftables ruleset.
 */

import { randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { registerLab, unregisterLab } from './cleanup.js';
import { LabError } from './errors.js';
import { runChecked } from './exec.js';
import { lossRuleset, natStateFlushRuleset } from './nat-rules.js';
import {
  deleteNamespaces,
  emptyNamespaces,
  inNamespace,
  listNamespaces,
  listNamespacesSync,
  teardownSync,
} from './netns.js';
import {
  LAB_NODES,
  namespacePrefix,
  planLab,
  type LabAddresses,
  type LabNode,
  type LabOptions,
  type LabPlan,
  type RouterNode,
} from './plan.js';
import { LabProcess, type ProcessExit, type SpawnOptions } from './process.js';

export type LabAvailability = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** Programs the lab runs; all are in Debian's base system plus iproute2, nftables and conntrack. */
const REQUIRED_PROGRAMS = ['ip', 'nft', 'nsenter', 'sysctl', 'conntrack'] as const;

function onPath(program: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, program), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** Whether this process can build labs: Linux, root, and the programs above on PATH. */
export function labAvailable(): LabAvailability {
  if (process.platform !== 'linux') return { ok: false, reason: `the NAT lab needs Linux network namespaces, not ${process.platform}` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'the NAT lab needs root (it creates network namespaces and nftables rules)' };
  const missing = REQUIRED_PROGRAMS.filter((program) => !onPath(program));
  if (missing.length > 0) {
    return { ok: false, reason: `the NAT lab needs ${missing.join(', ')} on PATH (Debian: iproute2, nftables, conntrack, util-linux, procps)` };
  }
  return { ok: true };
}

export interface ExecOptions {
  /** Written to stdin, which is then closed. */
  readonly input?: string;
  /** Default 10 s; the process is killed after it. */
  readonly timeoutMs?: number;
}

export interface ExecResult extends ProcessExit {
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

export interface Lab {
  readonly runId: string;
  readonly options: Required<LabOptions>;
  /** The actual namespace names, for `ip netns exec` by hand. */
  readonly namespaces: Readonly<Record<LabNode, string>>;
  readonly addresses: LabAddresses;
  /** Milliseconds bring-up took. */
  readonly setupMs: number;
  /** Starts `cmd args` inside `node`. The process is killed by `destroy()` if still running. */
  spawn(node: LabNode, cmd: string, args: readonly string[], options?: SpawnOptions): LabProcess;
  /** Runs a short command inside `node` and collects its outcome; killed after the time limit. */
  exec(node: LabNode, cmd: string, args: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  /** Forgets all NAT and connection state of the router (conntrack and the learnt cone mappings). */
  flushConntrack(router: RouterNode): Promise<void>;
  /** Drops `percent`% of the UDP and TCP packets the router forwards, in both directions; 0 turns loss off. */
  setLoss(router: RouterNode, percent: number): Promise<void>;
  /**
   * Kills every process in the lab (tracked ones by PID, then whatever `ip netns pids` lists), deletes the namespaces
   * and verifies that none is left. Idempotent; rejects with LAB_TEARDOWN_INCOMPLETE if a namespace survived.
   */
  destroy(): Promise<void>;
}

/** Six random hex digits not used by any namespace on the machine. */
function newRunId(): string {
  const existing = listNamespacesSync();
  for (;;) {
    const runId = randomBytes(3).toString('hex');
    if (!existing.some((ns) => ns.startsWith(namespacePrefix(runId)))) return runId;
  }
}

/** Removes variables that would change how spawned programs behave: Burrow's secret and node:test's reporter hook. */
export function labEnvironment(overrides: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.BURROW_SECRET;
  delete env.NODE_TEST_CONTEXT;
  return { ...env, ...overrides };
}

class NetnsLab implements Lab {
  readonly runId: string;
  readonly options: Required<LabOptions>;
  readonly namespaces: Readonly<Record<LabNode, string>>;
  readonly addresses: LabAddresses;
  setupMs = 0;

  readonly #plan: LabPlan;
  readonly #processes = new Set<LabProcess>();
  #destroying: Promise<void> | null = null;

  constructor(plan: LabPlan) {
    this.#plan = plan;
    this.runId = plan.runId;
    this.options = plan.options;
    this.namespaces = plan.namespaces;
    this.addresses = plan.addresses;
  }

  livePids(): number[] {
    return [...this.#processes].filter((p) => p.exitStatus === null).map((p) => p.pid);
  }

  async build(): Promise<void> {
    const started = performance.now();
    await runChecked('creating the lab namespaces and links', 'ip', ['-batch', '-'], { input: this.#plan.rootBatch });
    await Promise.all(
      LAB_NODES.map((node) => {
        const [cmd, args] = inNamespace(this.namespaces[node], 'sh', ['-ec', this.#plan.scripts[node]]);
        return runChecked(`configuring ${node}`, cmd, args);
      }),
    );
    this.setupMs = performance.now() - started;
  }

  #checkAlive(): void {
    if (this.#destroying !== null) throw new LabError('LAB_DESTROYED', `lab ${this.runId} has been destroyed; create a new one`);
  }

  spawn(node: LabNode, cmd: string, args: readonly string[], options: SpawnOptions = {}): LabProcess {
    this.#checkAlive();
    const [wrapper, wrapped] = inNamespace(this.namespaces[node], cmd, args);
    const child = new LabProcess(wrapper, wrapped, { env: labEnvironment(), ...options });
    this.#processes.add(child);
    void child.exited.then(() => this.#processes.delete(child));
    return child;
  }

  async exec(node: LabNode, cmd: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const child = this.spawn(node, cmd, args);
    if (options.input !== undefined) child.write(options.input);
    child.endInput();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 10_000);
    const exit = await child.exited;
    clearTimeout(timer);
    return { ...exit, stdout: child.stdout, stderr: child.stderr, timedOut };
  }

  async #execChecked(what: string, node: LabNode, cmd: string, args: readonly string[], input?: string): Promise<void> {
    const result = await this.exec(node, cmd, args, input === undefined ? {} : { input });
    if (result.code !== 0) {
      throw new LabError('LAB_COMMAND_FAILED', `${what} in ${this.namespaces[node]} failed: ${cmd} ${args.join(' ')}: ${result.stderr.trim()}`);
    }
  }

  async flushConntrack(router: RouterNode): Promise<void> {
    const flushMaps = natStateFlushRuleset(this.#plan.routers[router].kind);
    if (flushMaps !== '') await this.#execChecked('flushing NAT mappings', router, 'nft', ['-f', '-'], flushMaps);
    await this.#execChecked('flushing conntrack', router, 'conntrack', ['-F']);
  }

  async setLoss(router: RouterNode, percent: number): Promise<void> {
    await this.#execChecked(`setting ${percent}% loss`, router, 'nft', ['-f', '-'], lossRuleset(percent));
  }

  destroy(): Promise<void> {
    this.#destroying ??= this.#teardown();
    return this.#destroying;
  }

  async #teardown(): Promise<void> {
    const namespaces = LAB_NODES.map((node) => this.namespaces[node]);
    try {
      const tracked = [...this.#processes];
      for (const child of tracked) child.kill('SIGKILL');
      // Untracked descendants next: they may hold a tracked process's output pipes open, delaying its `exited`.
      await emptyNamespaces(namespaces);
      await Promise.all(tracked.map((child) => child.exited));
      await deleteNamespaces(namespaces);
    } catch {
      // Asynchronous teardown failed half way; finish the synchronous way, then verify below.
      teardownSync(namespaces, this.livePids());
    }
    const left = (await listNamespaces()).filter((ns) => ns.startsWith(namespacePrefix(this.runId)));
    if (left.length > 0) {
      throw new LabError(
        'LAB_TEARDOWN_INCOMPLETE',
        `lab ${this.runId} left namespaces behind: ${left.join(', ')}; remove them with: ${left.map((ns) => `ip netns del ${ns}`).join('; ')}`,
      );
    }
    unregisterLab(this.runId);
  }
}

/**
 * Builds a lab: the internet core `pub` with the servers' addresses, routers natA and natB of the given kinds, host hA
 * and hA2 on one LAN behind natA, and hB behind natB. If bring-up fails, whatever was built is torn down before the
 * error is thrown. The caller must `destroy()` the lab; a process-wide handler also tears it down on exit and on
 * SIGINT/SIGTERM/SIGHUP.
 */
export async function createLab(options: LabOptions): Promise<Lab> {
  const availability = labAvailable();
  if (!availability.ok) throw new LabError('LAB_UNAVAILABLE', availability.reason);
  const lab = new NetnsLab(planLab(newRunId(), options));
  // Registered before the first namespace exists, so that a signal during bring-up still tears down.
  registerLab(lab.runId, { namespaces: LAB_NODES.map((node) => lab.namespaces[node]), livePids: () => lab.livePids() });
  try {
    await lab.build();
  } catch (err) {
    await lab.destroy();
    throw err;
  }
  return lab;
}
