/**
 * `burrow demo` is safe: it stays on loopback and creates no network namespace, even as root. Run with
 * /run/netns made read-only in a private mount namespace, so that any `ip netns add` would fail and the demo
 * with it (it exits 0 only if it never tried).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { BURROW } from '../support/cli.js';

describe('burrow demo', () => {
  it('punches on 127.0.0.1 and creates no network namespace, even as root', (t) => {
    if (process.getuid?.() !== 0 || spawnSync('unshare', ['--version']).error) {
      if (process.env.CI === 'true') assert.fail('CI runs as root with unshare: this test must run');
      t.skip('needs root and unshare (util-linux)');
      return;
    }
    mkdirSync('/run/netns', { recursive: true });
    const script = 'mount -t tmpfs -o ro,size=16k burrow-demo-test /run/netns && exec "$0" "$1" demo';
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, process.execPath, BURROW], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, BURROW_SERVER: '', BURROW_SECRET_FILE: '' },
    });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /--- alice \(exit 0\) ---[^]*--- bob \(exit 0\) ---/);
    assert.match(r.stderr, /demo 1: a rendezvous server and two peers, three processes on 127\.0\.0\.1/);
    assert.match(r.stderr, /the demo stayed on 127\.0\.0\.1/);
    assert.doesNotMatch(r.stderr, /demo 2|namespace/i);
  });
});
