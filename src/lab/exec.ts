/** Running the short administrative commands (ip, nft, sysctl) the lab is built with: bounded in time, never a shell. */

import { execFileSync, spawn } from 'node:child_process';
import { LabError } from './errors.js';

export interface CommandResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The command was killed because it ran longer than its time limit. */
  readonly timedOut: boolean;
}

export interface CommandOptions {
  /** Written to the command's stdin, which is then closed. */
  readonly input?: string;
  /** Default 10 s. */
  readonly timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** Runs `cmd args`; resolves with its outcome whatever it is, rejects only if it cannot be started. */
export function runCommand(cmd: string, args: readonly string[], options: CommandOptions = {}): Promise<CommandResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new LabError('LAB_COMMAND_FAILED', `could not start ${cmd}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
    // A command that exits without reading its input would otherwise raise EPIPE here.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** As `runCommand`, but a non-zero exit is a `LabError` naming `what` failed and quoting the command's stderr. */
export async function runChecked(
  what: string,
  cmd: string,
  args: readonly string[],
  options: CommandOptions = {},
): Promise<CommandResult> {
  const result = await runCommand(cmd, args, options);
  if (result.code !== 0) {
    const how = result.timedOut ? 'timed out' : `exited with ${describeExit(result)}`;
    const commandLine = [cmd, ...args].join(' ').replace(/\s+/g, ' ');
    const shown = commandLine.length > 160 ? `${commandLine.slice(0, 160)}…` : commandLine;
    throw new LabError('LAB_COMMAND_FAILED', `${what} failed (${how}): ${result.stderr.trim() || '(no stderr)'} [command: ${shown}]`);
  }
  return result;
}

export function describeExit(exit: { readonly code: number | null; readonly signal: NodeJS.Signals | null }): string {
  return exit.code === null ? `signal ${exit.signal ?? 'unknown'}` : `code ${exit.code}`;
}

/**
 * Synchronous variant for teardown from `exit` and signal handlers, where nothing asynchronous runs any more.
 * Never throws: teardown must go on past a failing step.
 */
export function runSync(cmd: string, args: readonly string[], input = ''): { ok: boolean; stdout: string } {
  try {
    const stdout = execFileSync(cmd, args, { input, timeout: 5_000, stdio: ['pipe', 'pipe', 'ignore'], encoding: 'utf8' });
    return { ok: true, stdout };
  } catch {
    return { ok: false, stdout: '' };
  }
}
