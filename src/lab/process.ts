/** A process the lab started: its output collected as text, its exit as a promise, killable by PID only. */

import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { Readable, Writable } from 'node:stream';
import { LabError } from './errors.js';
import { describeExit } from './exec.js';

export interface ProcessExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** Environment of the process; default: this process's environment. */
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
}

export type OutputStream = 'stdout' | 'stderr';

/** Output kept per stream; beyond it the text is cut (and says so), so a chatty process cannot exhaust memory. */
const MAX_OUTPUT_CHARS = 4 * 1024 * 1024;

/**
 * After `exit`, how long to wait for the output pipes to close. A grandchild that inherited them can hold them open
 * indefinitely; the exit status must not wait for it.
 */
const CLOSE_GRACE_MS = 1_000;

export class LabProcess {
  readonly pid: number;
  /** `cmd args…` as started, for messages. */
  readonly commandLine: string;
  /** `performance.now()` just before the process was spawned. */
  readonly startedAt: number;
  /** Resolves once the process has exited and its output is complete (or the output grace period has passed). */
  readonly exited: Promise<ProcessExit>;

  readonly #child: ChildProcessByStdio<Writable, Readable, Readable>;
  readonly #output: Record<OutputStream, string> = { stdout: '', stderr: '' };
  readonly #listeners = new Set<() => void>();
  #exit: ProcessExit | null = null;
  #exitedAt: number | null = null;
  /** Exited and output complete: nothing more will arrive. */
  #finished = false;

  constructor(cmd: string, args: readonly string[], options: SpawnOptions = {}) {
    this.commandLine = [cmd, ...args].join(' ');
    this.startedAt = performance.now();
    const child = spawn(cmd, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    });
    this.#child = child;
    let spawnError: Error | undefined;
    child.on('error', (err) => {
      spawnError = err;
    });
    if (child.pid === undefined) {
      throw new LabError('LAB_COMMAND_FAILED', `could not start ${this.commandLine}`);
    }
    this.pid = child.pid;
    child.stdin.on('error', () => undefined);
    for (const stream of ['stdout', 'stderr'] as const) {
      child[stream].setEncoding('utf8').on('data', (chunk: string) => {
        this.#append(stream, chunk);
      });
    }
    this.exited = new Promise((resolve) => {
      let grace: NodeJS.Timeout | undefined;
      const finish = (): void => {
        clearTimeout(grace);
        this.#finished = true;
        this.#notify();
        resolve(this.#exit ?? { code: null, signal: null });
      };
      child.on('exit', (code, signal) => {
        this.#exit = { code, signal };
        this.#exitedAt = performance.now();
        this.#notify();
        grace = setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
          finish();
        }, CLOSE_GRACE_MS);
      });
      child.on('close', finish);
      child.on('error', () => {
        if (this.#exit === null) {
          this.#exit = { code: null, signal: null };
          this.#exitedAt = performance.now();
          this.#append('stderr', `lab: ${spawnError?.message ?? 'process error'}\n`);
          finish();
        }
      });
    });
  }

  get stdout(): string {
    return this.#output.stdout;
  }

  get stderr(): string {
    return this.#output.stderr;
  }

  /** The exit status once the process has exited, else null. */
  get exitStatus(): ProcessExit | null {
    return this.#exit;
  }

  /** `performance.now()` when the process exited, else null. */
  get exitedAt(): number | null {
    return this.#exitedAt;
  }

  /** Milliseconds from spawn to exit, or null while it runs. */
  get wallMs(): number | null {
    return this.#exitedAt === null ? null : this.#exitedAt - this.startedAt;
  }

  write(text: string): void {
    if (this.#exit === null && this.#child.stdin.writable) this.#child.stdin.write(text);
  }

  endInput(): void {
    this.#child.stdin.end();
  }

  /** Signals the process by its PID, unless it has already exited. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.#exit !== null) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // ESRCH: it exited between the check and the signal.
    }
  }

  /**
   * Resolves with the stream's text once `test` accepts it (a string: once the text contains it). Rejects when the
   * process exits first or after `timeoutMs`.
   */
  waitForOutput(stream: OutputStream, test: string | ((text: string) => boolean), timeoutMs: number): Promise<string> {
    const accepts = typeof test === 'string' ? (text: string) => text.includes(test) : test;
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const text = this.#output[stream];
        if (accepts(text)) {
          resolve(text);
          return true;
        }
        if (this.#finished) {
          reject(
            new LabError(
              'LAB_COMMAND_FAILED',
              `${this.commandLine} exited (${describeExit(this.#exit ?? { code: null, signal: null })}) before the expected ${stream} appeared; ${stream}: ${tail(text)}`,
            ),
          );
          return true;
        }
        return false;
      };
      if (check()) return;
      const listener = (): void => {
        if (check()) done();
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new LabError(
            'LAB_TIMEOUT',
            `${this.commandLine}: expected ${stream} did not appear within ${timeoutMs} ms; ${stream}: ${tail(this.#output[stream])}`,
          ),
        );
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.#listeners.delete(listener);
      };
      this.#listeners.add(listener);
    });
  }

  #append(stream: OutputStream, chunk: string): void {
    const current = this.#output[stream];
    if (current.length < MAX_OUTPUT_CHARS) {
      const room = MAX_OUTPUT_CHARS - current.length;
      this.#output[stream] = chunk.length <= room ? current + chunk : `${current}${chunk.slice(0, room)}\n[lab: output cut]\n`;
    }
    this.#notify();
  }

  #notify(): void {
    for (const listener of [...this.#listeners]) listener();
  }
}

/** The last part of a process's output, for error messages. */
export function tail(text: string, maxChars = 2_000): string {
  const trimmed = text.trim();
  if (trimmed === '') return '(empty)';
  return trimmed.length <= maxChars ? trimmed : `…${trimmed.slice(-maxChars)}`;
}
