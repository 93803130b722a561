/**
 * STUN interoperability with coturn (Debian package `coturn`): its client reads its mapped address from
 * `burrow serve`, and `burrow stun` reads ours from its `turnserver --stun-only`.
 * CI installs coturn and must run these; elsewhere they are skipped with a message if it is missing.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { coturnGate } from '../support/coturn.js';
import { describe, it } from 'node:test';
import { runCli, startServe } from '../support/cli.js';

const { available, skip } = coturnGate('turnserver', 'turnutils_stunclient');

describe('STUN interop with coturn', { skip }, () => {
  it('turnutils_stunclient reads the right mapped address from burrow serve', async () => {
    assert.ok(available, 'coturn must be installed in CI');
    const server = await startServe('interop');
    try {
      const port = server.address.split(':')[1]!;
      const out = await new Promise<string>((resolve, reject) => {
        execFile('turnutils_stunclient', ['-p', port, '-L', '127.0.0.1', '127.0.0.1'], { timeout: 10_000 }, (err, stdout, stderr) => {
          if (err) reject(new Error(`${err.message}\n${stdout}\n${stderr}`));
          else resolve(stdout + stderr);
        });
      });
      // coturn prints e.g. "UDP reflexive addr: 127.0.0.1:54321"
      assert.match(out, /UDP reflexive addr: 127\.0\.0\.1:\d+/);
    } finally {
      await server.stop();
    }
  });

  it('burrow stun reads the right mapped address from coturn’s turnserver', async () => {
    assert.ok(available, 'coturn must be installed in CI');
    const port = 20000 + Math.floor(Math.random() * 20000);
    const turn = spawn('turnserver', ['--stun-only', '--listening-ip', '127.0.0.1', '--listening-port', String(port), '--no-cli', '--log-file', 'stdout', '--simple-log', '--no-tls', '--no-dtls'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let log = '';
      turn.stdout.on('data', (d: Buffer) => (log += d.toString()));
      // Retry until coturn listens (it prints nothing reliable to wait for across versions).
      let result = await runCli(['stun', `127.0.0.1:${port}`, '--local', '127.0.0.1:0', '--format', 'json', '--timeout', '1']);
      for (let i = 0; i < 10 && result.code !== 0; i++) {
        await new Promise((r) => setTimeout(r, 200));
        result = await runCli(['stun', `127.0.0.1:${port}`, '--local', '127.0.0.1:0', '--format', 'json', '--timeout', '1']);
      }
      assert.equal(result.code, 0, `${result.stderr}\n${log}`);
      const v = JSON.parse(result.stdout) as { address: string; port: number };
      assert.equal(v.address, '127.0.0.1');
      assert.ok(v.port > 0);
    } finally {
      turn.kill('SIGTERM');
      await new Promise((r) => turn.once('close', r));
    }
  });
});
