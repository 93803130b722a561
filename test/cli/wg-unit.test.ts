/** deploy/burrow-wg@.service: hardened, its ExecStart is accepted by the real CLI, and systemd-analyze finds nothing wrong. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BURROW, runCli } from '../support/cli.js';

const UNIT = fileURLToPath(new URL('../../../deploy/burrow-wg@.service', import.meta.url));

function keys(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header?.[1]) {
      section = header[1];
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(eq > 0, `not Key=value: ${line}`);
    out.set(`${section}.${line.slice(0, eq)}`, line.slice(eq + 1));
  }
  return out;
}

describe('deploy/burrow-wg@.service', () => {
  it('keeps only CAP_NET_ADMIN and runs burrow wg --continuous for the instance interface', async () => {
    const text = await readFile(UNIT, 'utf8');
    const unit = keys(text);
    assert.equal(unit.get('Service.CapabilityBoundingSet'), 'CAP_NET_ADMIN');
    assert.equal(unit.get('Service.AmbientCapabilities'), 'CAP_NET_ADMIN');
    assert.equal(unit.get('Service.NoNewPrivileges'), 'yes');
    assert.equal(unit.get('Service.ProtectSystem'), 'strict');
    assert.equal(unit.get('Service.Restart'), 'on-failure');
    const exec = unit.get('Service.ExecStart') ?? '';
    const [binary, ...args] = exec.split(/\s+/);
    assert.equal(binary, '/usr/local/bin/burrow');
    assert.deepEqual(args.slice(0, 3), ['wg', '--interface', '%i']);
    assert.ok(args.includes('--continuous'));
    // The real CLI accepts these flags: with `wg` pointed at a missing binary it gets as far as running it (exit 11).
    // The server is replaced by loopback so that nothing is looked up or sent anywhere else.
    const dir = await mkdtemp(join(tmpdir(), 'burrow-wg-unit-'));
    try {
      await writeFile(join(dir, 'secret'), 'unit test secret\n', { mode: 0o600 });
      const argv = args.map((a) => a.replace('${CREDENTIALS_DIRECTORY}', dir).replace('%i', 'wg0').replace(/^rendezvous\.example\.net:/, '127.0.0.1:'));
      const r = await runCli(argv, { BURROW_WG: join(dir, 'no-wg-here') });
      assert.equal(r.code, 11, r.stderr);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('passes systemd-analyze verify', async (t) => {
    if (spawnSync('systemd-analyze', ['--version']).error) {
      t.skip('systemd-analyze is not installed (it comes with the systemd package)');
      return;
    }
    const dir = await mkdtemp(join(tmpdir(), 'burrow-wg-unit-'));
    try {
      const text = await readFile(UNIT, 'utf8');
      const copy = join(dir, 'burrow-wg@wg0.service');
      await writeFile(copy, text.replace(/^ExecStart=\/usr\/local\/bin\/burrow /m, `ExecStart=${BURROW} `));
      const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr.replace(/^.*wg-quick@wg0\.service.*$/gm, '').trim(), '', r.stderr);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
