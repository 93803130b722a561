/**
 * Installing as the README says: `npm pack`, then `npm install -g --prefix DIR TARBALL` into a fresh prefix,
 * and the installed `burrow` runs from another directory. Offline-friendly: the dependencies come from npm's
 * cache, which `npm ci` filled. The package ships no lab, no tests and no benchmarks.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
let dir = '';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-install-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function npm(args: string[], cwd: string): { stdout: string; stderr: string } {
  const env = { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };
  const r = spawnSync('npm', args, { cwd, encoding: 'utf8', env, timeout: 300_000 });
  assert.equal(r.status, 0, `npm ${args.join(' ')}: ${r.stderr}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

describe('installing the package', () => {
  it('packs, installs into a fresh prefix and runs `burrow --version` from another directory', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; bin: Record<string, string> };
    assert.notEqual(pkg.name, 'burrow', 'the npm name `burrow` belongs to another project');
    assert.deepEqual(Object.keys(pkg.bin), ['burrow']);
    // dist/ is built already (npm test builds first): pack it as it is.
    const packed = npm(['pack', '--ignore-scripts', '--json', '--pack-destination', dir], ROOT);
    const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
    assert.ok(info);
    const files = info.files.map((f) => f.path);
    assert.ok(files.includes('dist/src/cli/burrow.cjs'));
    assert.ok(files.includes('dist/src/index.js'));
    assert.ok(files.includes('README.md'));
    assert.deepEqual(files.filter((f) => /^dist\/(test|bench)\/|^dist\/src\/lab\/|^dist\/src\/cli\/lab\.|^src\/|^test\//.test(f)), [], 'no lab, sources or tests');

    const prefix = join(dir, 'prefix');
    npm(['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(dir, info.filename)], dir);
    const bin = join(prefix, 'bin', 'burrow');
    assert.ok(existsSync(bin), `${bin} installed`);
    const elsewhere = await mkdtemp(join(dir, 'elsewhere-'));
    const env = { ...process.env, PATH: `${join(prefix, 'bin')}:${process.env.PATH ?? ''}` };
    const version = spawnSync('burrow', ['--version'], { cwd: elsewhere, encoding: 'utf8', env });
    assert.equal(version.status, 0, version.stderr);
    assert.equal(version.stdout, `burrow ${pkg.version}\n`);
    const help = spawnSync('burrow', ['serve', '--help'], { cwd: elsewhere, encoding: 'utf8', env });
    assert.equal(help.status, 0, help.stderr);
    // The lab is not shipped: it says so, as a usage error.
    const lab = spawnSync('burrow', ['lab', 'punch', '--a', 'full-cone', '--b', 'full-cone'], { cwd: elsewhere, encoding: 'utf8', env });
    assert.equal(lab.status, 2, lab.stderr);
    assert.match(lab.stderr, /the NAT lab is not part of the installed package[^]*source checkout/);
  });
});
