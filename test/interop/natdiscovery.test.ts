/**
 * RFC 5780 interop with coturn (Debian package `coturn`), both ways, on loopback with two IPs (127.0.0.1 and
 * 127.0.0.2):
 *  - coturn's `turnutils_natdiscovery -m -f` (plain, unpadded requests) against `burrow serve --alt-address` classifies
 *    the path as `burrow netcheck` does against the same server;
 *  - `burrow netcheck` against coturn's `turnserver` with two listening IPs gets OTHER-ADDRESS and every test answered.
 * There is no NAT on loopback; the lab test (test/lab/netcheck.test.ts) covers real NATs. CI installs coturn and must run
 * these; elsewhere they are skipped with a message if it is missing.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { coturnGate } from '../support/coturn.js';
import { describe, it } from 'node:test';
import { runCli, startServe } from '../support/cli.js';

const { available, skip } = coturnGate('turnserver', 'turnutils_natdiscovery');

interface Report {
  mapping: string;
  filtering: string;
  otherAddress?: { address: string; port: number };
  tests: { name: string; from: string | null }[];
}

/** coturn's verdicts, e.g. "NAT with Endpoint Independent Mapping!" → 'endpoint-independent'. */
function coturnVerdicts(out: string): { mapping: string | undefined; filtering: string | undefined } {
  const word = (kind: 'Mapping' | 'Filtering'): string | undefined => {
    const m = new RegExp(`NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) ${kind}`).exec(out);
    return m?.[1]?.toLowerCase().replace(/ and /, '-and-').replace(/ /g, '-');
  };
  return { mapping: word('Mapping'), filtering: word('Filtering') };
}

describe('RFC 5780 interop with coturn', { skip }, () => {
  it('turnutils_natdiscovery -m -f against burrow serve --alt-address agrees with burrow netcheck', async () => {
    assert.ok(available, 'coturn must be installed in CI');
    const server = await startServe('interop', ['--alt-address', '127.0.0.2']);
    try {
      const port = server.address.split(':')[1] ?? '';
      const out = await new Promise<string>((resolve, reject) => {
        execFile('turnutils_natdiscovery', ['-m', '-f', '-p', port, '127.0.0.1'], { timeout: 20_000 }, (err, stdout, stderr) => {
          if (err) reject(new Error(`${err.message}\n${stdout}\n${stderr}`));
          else resolve(stdout + stderr);
        });
      });
      const coturn = coturnVerdicts(out);
      assert.equal(coturn.mapping, 'endpoint-independent', out);
      assert.equal(coturn.filtering, 'endpoint-independent', out);
      const ours = await runCli(['netcheck', '--server', server.address, '--format', 'json']);
      assert.equal(ours.code, 0, ours.stderr);
      const r = JSON.parse(ours.stdout) as Report;
      // coturn cannot tell "no NAT" (it never compares with the local address): no NAT maps endpoint-independently.
      assert.equal(r.mapping === 'no-nat' ? 'endpoint-independent' : r.mapping, coturn.mapping);
      assert.equal(r.filtering, coturn.filtering);
    } finally {
      await server.stop();
    }
  });

  it('burrow netcheck against turnserver with two listening IPs', async () => {
    assert.ok(available, 'coturn must be installed in CI');
    const port = 20000 + 2 * Math.floor(Math.random() * 10000);
    // -c /dev/null: Debian's /etc/turnserver.conf says no-rfc5780.
    const turn = spawn('turnserver', ['-c', '/dev/null', '--stun-only', '--listening-ip', '127.0.0.1', '--listening-ip', '127.0.0.2', '--listening-port', String(port), '--no-cli', '--log-file', 'stdout', '--simple-log', '--no-tls', '--no-dtls'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let log = '';
      turn.stdout.on('data', (d: Buffer) => (log += d.toString()));
      let result = await runCli(['stun', `127.0.0.1:${port}`, '--local', '127.0.0.1:0', '--timeout', '1']);
      for (let i = 0; i < 10 && result.code !== 0; i++) {
        await new Promise((r) => setTimeout(r, 200));
        result = await runCli(['stun', `127.0.0.1:${port}`, '--local', '127.0.0.1:0', '--timeout', '1']);
      }
      const ours = await runCli(['netcheck', '--server', `127.0.0.1:${port}`, '--format', 'json']);
      assert.equal(ours.code, 0, `${ours.stderr}\n${log}`);
      const r = JSON.parse(ours.stdout) as Report;
      assert.deepEqual(r.otherAddress, { address: '127.0.0.2', port: port + 1 }, log);
      assert.equal(r.mapping, 'no-nat');
      assert.equal(r.filtering, 'endpoint-independent');
      const from = Object.fromEntries(r.tests.map((t) => [t.name, t.from]));
      assert.equal(from.III, `127.0.0.2:${port + 1}`);
      assert.equal(from['filter-ip-port'], `127.0.0.2:${port + 1}`);
    } finally {
      turn.kill('SIGTERM');
      await new Promise((r) => turn.once('close', r));
    }
  });
});
