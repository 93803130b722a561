/** Runs the real `burrow` binary as a child process, for end-to-end tests of the CLI. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The binary users run: the bundled CLI entry (package.json `bin`). */
export const BURROW = fileURLToPath(new URL('../../src/cli/burrow.cjs', import.meta.url));

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  stdoutBytes: Buffer;
}

export interface Cli {
  readonly child: ChildProcess;
  readonly done: Promise<CliRun>;
  /** Resolves when stderr contains `text`. */
  waitFor(text: string | RegExp, timeoutMs?: number): Promise<string>;
}

export function startCli(args: string[], env: NodeJS.ProcessEnv = {}, stdin?: Buffer): Cli {
  const started = Date.now();
  const base = { ...process.env };
  delete base.NODE_EXTRA_CA_CERTS; // irrelevant to burrow and slows Node's start-up
  delete base.BURROW_SECRET;
  delete base.BURROW_SECRET_FILE;
  delete base.BURROW_SERVER;
  const child = spawn(process.execPath, [BURROW, ...args], { env: { ...base, ...env }, stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  if (stdin && child.stdin) {
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
  }
  let stdout = '';
  let stderr = '';
  const waiters: { test: string | RegExp; resolve: (s: string) => void }[] = [];
  const chunks: Buffer[] = [];
  child.stdout?.on('data', (d: Buffer) => {
    chunks.push(d);
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
    for (const w of [...waiters]) {
      if (typeof w.test === 'string' ? stderr.includes(w.test) : w.test.test(stderr)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(stderr);
      }
    }
  });
  const done = new Promise<CliRun>((resolve) => {
    child.on('close', (code, signal) => {
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, stdoutBytes: Buffer.concat(chunks) });
    });
  });
  return {
    child,
    done,
    waitFor(test, timeoutMs = 5000) {
      if (typeof test === 'string' ? stderr.includes(test) : test.test(stderr)) return Promise.resolve(stderr);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`timed out waiting for ${String(test)}; stderr so far:\n${stderr}`));
        }, timeoutMs);
        waiters.push({ test, resolve: (s) => { clearTimeout(timer); resolve(s); } });
        void done.then(() => {
          clearTimeout(timer);
          reject(new Error(`exited before ${String(test)}; stderr:\n${stderr}`));
        });
      });
    },
  };
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, stdin?: Buffer): Promise<CliRun> {
  return startCli(args, env, stdin).done;
}

/** Starts `burrow serve` on 127.0.0.1 with a free port and returns its address once it listens. */
export async function startServe(secret: string, extra: string[] = []): Promise<{ cli: Cli; address: string; stop: () => Promise<CliRun> }> {
  const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--log-format', 'json', ...extra], { BURROW_SECRET: secret });
  const text = await cli.waitFor('"listening"');
  const m = /"udp":"([^"]+)"/.exec(text);
  if (!m?.[1]) throw new Error(`no address in ${text}`);
  return {
    cli,
    address: m[1],
    stop: async () => {
      cli.child.kill('SIGTERM');
      return cli.done;
    },
  };
}
