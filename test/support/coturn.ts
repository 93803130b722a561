/**
 * coturn's `turnserver` for tests: started on 127.0.0.1 with its own port and relay-port range, TURN REST credentials
 * (`--use-auth-secret --static-auth-secret`), stopped by its PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { accessSync, constants } from 'node:fs';

export function hasProgram(program: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    try {
      accessSync(`${dir}/${program}`, constants.X_OK);
      return true;
    } catch {
      // keep looking
    }
  }
  return false;
}

/**
 * Whether every named coturn program is installed, and the `skip` option for a suite that needs them: skipped with a
 * message outside CI, never skipped in CI (where the suite then fails on `assert.ok(available)`).
 */
export function coturnGate(...programs: string[]): { readonly available: boolean; readonly skip: string | false } {
  const available = programs.every(hasProgram);
  const skip = available || process.env.CI === 'true' ? false : 'coturn is not installed (apt-get install coturn); CI runs this test';
  return { available, skip };
}

/** Whether a UDP port on 127.0.0.1 can be bound (no one holds it). */
function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.once('error', () => {
      s.close();
      resolve(false);
    });
    s.bind(port, '127.0.0.1', () => {
      s.close(() => {
        resolve(true);
      });
    });
  });
}

export interface Coturn {
  readonly child: ChildProcess;
  readonly port: number;
  readonly url: string;
  readonly secret: string;
  /** TURN REST credentials for `name`, valid for an hour. */
  credentials(name: string): { username: string; password: string };
  log(): string;
  stop(): Promise<void>;
}

export async function startCoturn(extra: readonly string[] = []): Promise<Coturn> {
  const secret = `coturn-test-${Math.random().toString(36).slice(2)}`;
  for (let attempt = 0; attempt < 10; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const relayLow = 40000 + Math.floor(Math.random() * 200) * 100;
    if (!(await udpFree(port))) continue;
    const child = spawn('turnserver', [
      '-n', '-L', '127.0.0.1', '-E', '127.0.0.1', '-p', String(port), '--min-port', String(relayLow), '--max-port', String(relayLow + 99),
      '-r', 'burrow.test', '--use-auth-secret', '--static-auth-secret', secret, '-f', '--no-tls', '--no-dtls', '--no-tcp-relay',
      '--no-cli', '--allow-loopback-peers', '--log-file', 'stdout', '--simple-log', ...extra,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => { resolve(); }));
    // Listening once the port is taken (coturn prints nothing reliable to wait for across versions).
    let up = false;
    for (let i = 0; i < 40 && !up; i++) {
      await new Promise((r) => setTimeout(r, 50));
      up = !(await udpFree(port)) && child.exitCode === null;
    }
    const stop = async (): Promise<void> => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    };
    if (!up || log.includes('Cannot bind')) {
      await stop();
      continue;
    }
    return {
      child,
      port,
      url: `turn:127.0.0.1:${port}`,
      secret,
      credentials(name) {
        const username = `${Math.floor(Date.now() / 1000) + 3600}:${name}`;
        return { username, password: createHmac('sha1', secret).update(username).digest('base64') };
      },
      log: () => log,
      stop,
    };
  }
  throw new Error('could not start turnserver on a free port');
}
