/**
 * deploy/: the systemd unit's hardening is there, its ExecStart line is one the real CLI accepts, and
 * (where systemd-analyze exists) systemd itself finds nothing wrong with it; the nftables ruleset parses
 * (checked by nft in a throwaway network namespace, as root).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BURROW, runCli } from '../support/cli.js';

const UNIT = fileURLToPath(new URL('../../../deploy/burrow-serve.service', import.meta.url));
const NFT = fileURLToPath(new URL('../../../deploy/burrow.nft', import.meta.url));

/** systemd's unit syntax, as far as this unit uses it: sections, `Key=value`, comments, repeated keys. */
function parseUnit(text: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) {
      section = header[1]!;
      continue;
    }
    assert.ok(!line.endsWith('\\'), `no continuation lines expected: ${line}`);
    const eq = line.indexOf('=');
    assert.ok(eq > 0, `not Key=value: ${line}`);
    const key = `${section}.${line.slice(0, eq)}`;
    keys.set(key, [...(keys.get(key) ?? []), line.slice(eq + 1)]);
  }
  return keys;
}

let dir = '';
let text = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-unit-'));
  text = await readFile(UNIT, 'utf8');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('deploy/burrow-serve.service', () => {
  it('sandboxes the server', () => {
    const unit = parseUnit(text);
    const one = (key: string): string | undefined => {
      const v = unit.get(`Service.${key}`);
      assert.ok(!v || v.length === 1, `${key} set more than once`);
      return v?.[0];
    };
    const expected: Record<string, string> = {
      DynamicUser: 'yes',
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      PrivateDevices: 'yes',
      RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX',
      CapabilityBoundingSet: '',
      AmbientCapabilities: '',
      SystemCallFilter: '@system-service',
      Restart: 'on-failure',
      ExecReload: '/bin/kill -HUP $MAINPID',
      LoadCredential: 'secret:/etc/burrow/secret',
    };
    for (const [key, value] of Object.entries(expected)) assert.equal(one(key), value, key);
    // V8's JIT needs writable-then-executable memory: the setting must stay out (and its reason in).
    assert.equal(one('MemoryDenyWriteExecute'), undefined);
    assert.match(text, /MemoryDenyWriteExecute= is deliberately absent: V8's JIT/);
    // No state on disk, so nothing writable.
    assert.equal(one('ReadWritePaths'), undefined);
    assert.equal(unit.get('Install.WantedBy')?.[0], 'multi-user.target');
  });

  it('ExecStart is accepted by the real CLI (serve --check), on a high port, with metrics on loopback only', async () => {
    const unit = parseUnit(text);
    const exec = unit.get('Service.ExecStart')?.[0];
    assert.ok(exec);
    const [binary, ...args] = exec.split(/\s+/);
    assert.equal(binary, '/usr/local/bin/burrow');
    assert.equal(args[0], 'serve');
    const listen = args[args.indexOf('--listen') + 1] ?? '';
    assert.ok(Number(/:(\d+)$/.exec(listen)?.[1]) >= 1024, 'a port that needs no capability');
    assert.match(args[args.indexOf('--metrics') + 1] ?? '', /^127\.0\.0\.1:\d+$/);
    // systemd expands ${CREDENTIALS_DIRECTORY}; here it is a directory with the credential in it.
    await writeFile(join(dir, 'secret'), 'unit test secret\n', { mode: 0o600 });
    const expanded = args.map((a) => a.replace('${CREDENTIALS_DIRECTORY}', dir));
    assert.ok(expanded.some((a) => a === join(dir, 'secret')), 'the secret comes from the credential');
    const r = await runCli([...expanded, '--check']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /options and 1 secret OK; not started/);
  });

  it('passes systemd-analyze verify', async (t) => {
    const which = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (which.error) {
      t.skip('systemd-analyze is not installed (it comes with the systemd package)');
      return;
    }
    // verify checks that ExecStart's binary exists: point it at the built CLI.
    const copy = join(dir, 'burrow-serve.service');
    await writeFile(copy, text.replace(/^ExecStart=\/usr\/local\/bin\/burrow /m, `ExecStart=${BURROW} `));
    const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    // Unknown keys and bad values are only warnings (exit 0): none may appear.
    assert.equal(r.stderr.trim(), '', r.stderr);
  });

  it('deploy/burrow.nft passes nft --check and opens the documented ports only', async (t) => {
    const rules = await readFile(NFT, 'utf8');
    assert.match(rules, /udp dport \{ 3478, 3479 \} accept/);
    assert.match(rules, /tcp dport 3478 accept/);
    assert.doesNotMatch(rules.replace(/#.*$/gm, ''), /9464/, 'the metrics port is never opened');
    if (process.getuid?.() !== 0 || spawnSync('nft', ['--version']).error || spawnSync('unshare', ['--version']).error) {
      t.skip('needs root, nft and unshare');
      return;
    }
    // --check validates against the kernel without committing; in a network namespace of its own, which
    // disappears with the process, it cannot touch this machine's firewall either way.
    const r = spawnSync('unshare', ['--net', 'nft', '--check', '-f', NFT], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
  });
});
