/**
 * Process-wide safety net: every live lab is registered here, and while any is, handlers for `exit`, SIGINT, SIGTERM
 * and SIGHUP tear them all down synchronously. This is the lab's only global state, and it exists because the machine
 * is shared: a namespace must not outlive the process that made it, whatever way that process ends (short of SIGKILL).
 */

import { teardownSync } from './netns.js';

export interface LiveLab {
  readonly namespaces: readonly string[];
  /** PIDs of processes the lab started that have not exited yet. */
  livePids(): number[];
}

const live = new Map<string, LiveLab>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function teardownAll(): void {
  for (const lab of live.values()) teardownSync(lab.namespaces, lab.livePids());
  live.clear();
}

function onExit(): void {
  teardownAll();
}

function onSignal(signal: NodeJS.Signals): void {
  teardownAll();
  uninstall();
  // We replaced the signal's default action (terminate). If nobody else handles it, restore that action and re-raise,
  // so the process ends as it would have without us.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', onExit);
  for (const signal of SIGNALS) process.on(signal, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.removeListener('exit', onExit);
  for (const signal of SIGNALS) process.removeListener(signal, onSignal);
}

/** Registers a lab before its first namespace is created. */
export function registerLab(runId: string, lab: LiveLab): void {
  live.set(runId, lab);
  install();
}

/** Unregisters a lab once its teardown is complete. */
export function unregisterLab(runId: string): void {
  live.delete(runId);
  if (live.size === 0) uninstall();
}

/** Run ids of the labs currently alive in this process. */
export function liveLabIds(): string[] {
  return [...live.keys()];
}
