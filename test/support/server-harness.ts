/**
 * Starts test/support/server-process.ts (the real server in its own process) and talks to it: counters and table
 * sizes over its stdin/stdout, memory from /proc/PID/status, stop by SIGTERM, kill by SIGKILL. Every process it starts
 * is ended by its PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ServerLimits, ServerState, ServerStats } from '../../src/server/core.js';

const PROGRAM = fileURLToPath(new URL('./server-process.js', import.meta.url));

export interface ServerSnapshot {
  readonly stats: ServerStats;
  readonly state: ServerState;
  /** Exceptions the driver's guard caught (the core must never throw). */
  readonly internalErrors: number;
  /** process.memoryUsage() after a forced collection. */
  readonly rss: number;
  readonly heapUsed: number;
  readonly external: number;
  readonly arrayBuffers: number;
  /** Physical size of V8's young generation (a nursery sized by the allocation rate, not by state). */
  readonly newSpace: number;
}

export interface ServerProcess {
  readonly pid: number;
  readonly port: number;
  readonly alternatePort: number;
  readonly child: ChildProcess;
  /** Counters and table sizes, read from the running server. */
  snapshot(): Promise<ServerSnapshot>;
  /** Datagrams handled so far (cheap: no collection). */
  handled(): Promise<number>;
  /** VmRSS from /proc/PID/status, in bytes. */
  vmRss(): number;
  /** Whether it is still running. */
  alive(): boolean;
  readonly stderr: () => string;
  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL at once (a crash), resolves when gone. */
  kill(): Promise<void>;
}

export function vmRssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

export async function startServerProcess(options: { secret: string; listen?: string; limits?: Partial<ServerLimits> }): Promise<ServerProcess> {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  delete env.NODE_TEST_CONTEXT;
  const child = spawn(process.execPath, ['--expose-gc', PROGRAM, '--listen', options.listen ?? '127.0.0.1:0', '--secret', options.secret, '--limits', JSON.stringify(options.limits ?? {})], {
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      resolve({ code, signal });
    });
  });
  let running = true;
  void exited.then(() => (running = false));
  const waiting: ((line: string) => void)[] = [];
  const lines = createInterface({ input: child.stdout });
  lines.on('line', (line) => waiting.shift()?.(line));
  const nextLine = (timeoutMs: number): Promise<string> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`server process ${String(child.pid)} did not answer in ${timeoutMs} ms; stderr: ${stderr}`));
      }, timeoutMs);
      waiting.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
      void exited.then((e) => {
        clearTimeout(timer);
        reject(new Error(`server process exited (${String(e.code)} ${String(e.signal)}): ${stderr}`));
      });
    });
  const ready = JSON.parse(await nextLine(10_000)) as { port: number; alternatePort: number; pid: number };
  const pid = child.pid!;
  return {
    pid,
    port: ready.port,
    alternatePort: ready.alternatePort,
    child,
    stderr: () => stderr,
    alive: () => running,
    async snapshot() {
      const line = nextLine(30_000);
      child.stdin.write('stats\n');
      return JSON.parse(await line) as ServerSnapshot;
    },
    async handled() {
      const line = nextLine(30_000);
      child.stdin.write('count\n');
      return (JSON.parse(await line) as { datagramsIn: number }).datagramsIn;
    },
    vmRss: () => vmRssOf(pid),
    async stop() {
      if (running) process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => {
        if (running) process.kill(pid, 'SIGKILL');
      }, 5000);
      const e = await exited;
      clearTimeout(timer);
      return e;
    },
    async kill() {
      if (running) process.kill(pid, 'SIGKILL');
      await exited;
    },
  };
}
