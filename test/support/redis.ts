/**
 * A real redis-server for tests: on 127.0.0.1, on a port of its own, keeping nothing on disk (`--save ''
 * --appendonly no`), so that a restart comes back empty. Stopped by its PID only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, Socket } from 'node:net';

export interface RedisProcess {
  readonly port: number;
  readonly url: string;
  readonly pid: number;
  /** Stops it (SIGKILL by PID: a crash, nothing saved). */
  kill(): Promise<void>;
  /** Starts it again on the same port, empty. */
  restart(): Promise<void>;
}

/** A port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => { resolve(); }));
  if (!address || typeof address === 'string') throw new Error('no port');
  return address.port;
}

function launch(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => { reject(new Error(`redis-server did not start on port ${port}: ${out}`)); }, 10_000);
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`redis-server exited (${String(code)}): ${out}`)); });
    const poll = setInterval(() => {
      // Ready when it accepts a connection.
      const s = new Socket();
      s.once('connect', () => {
        s.destroy();
        clearInterval(poll);
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve(child);
      });
      s.once('error', () => { s.destroy(); });
      s.connect(port, '127.0.0.1');
    }, 50);
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    child.once('exit', () => { clearInterval(poll); });
  });
}

export async function startRedis(): Promise<RedisProcess> {
  const port = await freePort();
  let child = await launch(port);
  const kill = async (): Promise<void> => {
    const c = child;
    if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => { resolve(); }));
    process.kill(c.pid, 'SIGKILL');
    await exited;
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return child.pid ?? 0;
    },
    kill,
    async restart() {
      await kill();
      child = await launch(port);
    },
  };
}
