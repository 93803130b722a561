/**
 * `burrow demo`: a real punch between two peers through a real server, as three separate processes on
 * loopback. It changes nothing on this machine: no namespaces, no firewall rules, whoever runs it. With
 * --lab (root, a source checkout) it also punches across two emulated port-restricted NATs.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { generateSecret } from '../node/secret.js';
import { say, type Io } from './common.js';
import type { Parsed } from './schema.js';

// The CLI that is running (the bundled binary), or the ES module entry when imported directly.
const MAIN = process.argv[1]?.match(/(?:main\.js|burrow(?:\.cjs)?)$/) ? process.argv[1] : fileURLToPath(new URL('./main.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: NodeJS.ProcessEnv, signal: AbortSignal): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], signal, killSignal: 'SIGTERM' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', () => undefined);
    child.on('close', (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}

export async function demoCommand(parsed: Parsed<'demo'>, io: Io): Promise<number> {
  // The peers use the demo's own secret and server, whatever this shell's environment says.
  const env: NodeJS.ProcessEnv = { ...io.env, BURROW_SECRET: generateSecret() };
  delete env.BURROW_SECRET_FILE;
  delete env.BURROW_SERVER;
  const controller = new AbortController();
  const stopAll = (): void => {
    controller.abort();
  };
  io.signal.addEventListener('abort', stopAll, { once: true });
  try {
    say(io, 'demo 1: a rendezvous server and two peers, three processes on 127.0.0.1');
    const server = spawn(process.execPath, [MAIN, 'serve', '--listen', '127.0.0.1:0', '--log-format', 'json'], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
      signal: controller.signal,
    });
    server.on('error', () => undefined);
    const address = await new Promise<string | undefined>((resolve) => {
      let buffered = '';
      const timer = setTimeout(() => {
        resolve(undefined);
      }, 5000);
      server.stderr.on('data', (d: Buffer) => {
        buffered += d.toString();
        const m = /"udp":"([^"]+)"/.exec(buffered);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
    });
    if (address === undefined) {
      say(io, 'the demo server did not start');
      return 1;
    }
    say(io, `server listening on ${address}`);
    const peer = (as: string, to: string): Promise<Run> =>
      run(['punch', '--server', address, '--as', as, '--to', to, '--local', '127.0.0.1:0', '--timeout', '10', '--format', 'text'], env, controller.signal);
    const started = Date.now();
    const [alice, bob] = await Promise.all([peer('alice', 'bob'), peer('bob', 'alice')]);
    const wall = Date.now() - started;
    server.kill('SIGTERM');
    for (const [name, r] of [['alice', alice], ['bob', bob]] as const) {
      io.stdout.write(`--- ${name} (exit ${String(r.code)}) ---\n${r.stderr}${r.stdout}`);
    }
    io.stdout.write(`both peers done in ${wall} ms (wall time, including Node start-up)\n`);
    if (alice.code !== 0 || bob.code !== 0) return 1;

    if (!parsed.values.lab) {
      say(io, 'done: the demo stayed on 127.0.0.1; `burrow demo --lab` (root, source checkout) adds a punch across emulated NATs');
      return 0;
    }
    const { loadLab } = await import('./lab-loader.js');
    return await (await loadLab()).labDemo(io, controller.signal);
  } finally {
    io.signal.removeEventListener('abort', stopAll);
    controller.abort();
  }
}
