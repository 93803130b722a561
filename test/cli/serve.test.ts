/**
 * `burrow serve` as a real process: the metrics endpoint, flag validation, and secret rotation by
 * SIGHUP (including reloads that fail and must keep the old secrets).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, startCli, startServe } from '../support/cli.js';
import { httpGet, scrape } from '../support/scrape.js';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'burrow-serve-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function metricsUrl(log: string): string {
  const m = /"metrics":"(http:[^"]+)"/.exec(log);
  assert.ok(m?.[1], `no metrics URL in ${log}`);
  return m[1];
}

/** A punch alone with `secret`: 4 (authenticated, the peer never came) or 3 (the server refused the secret). */
async function tryRegister(address: string, secret: string): Promise<number | null> {
  const r = await runCli(['punch', '--server', address, '--as', 'probe', '--to', 'nobody', '--local', '127.0.0.1:0', '--timeout', '0.5'], { BURROW_SECRET: secret });
  return r.code;
}

describe('burrow serve', () => {
  it('--metrics serves Burrow and process metrics over HTTP, and stops with the server', async () => {
    const server = await startServe('metrics cli secret', ['--metrics', '127.0.0.1:0']);
    let url = '';
    try {
      url = metricsUrl(await server.cli.waitFor('"listening"'));
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const m0 = await scrape(url);
      assert.equal(m0.get('burrow_networks'), 1);
      assert.equal(m0.get('burrow_stun_binding_requests_total'), 0);
      assert.ok((m0.get('burrow_process_cpu_seconds_total') ?? -1) > 0, 'process metrics, prefixed burrow_');
      assert.ok((m0.get('burrow_process_resident_memory_bytes') ?? -1) > 0);
      const stun = await runCli(['stun', server.address, '--local', '127.0.0.1:0']);
      assert.equal(stun.code, 0, stun.stderr);
      const m1 = await scrape(url);
      assert.equal(m1.get('burrow_stun_binding_requests_total'), 1);
    } finally {
      const done = await server.stop();
      assert.equal(done.code, 0, done.stderr);
    }
    await assert.rejects(httpGet(url), /ECONNREFUSED/);
  });

  it('refuses a bad --metrics address as a usage error (exit 2) that says what to do', async () => {
    const runs = await Promise.all(['localhost:9464', '9464', '127.0.0.1:99999'].map((v) => runCli(['serve', '--listen', '127.0.0.1:0', '--metrics', v], { BURROW_SECRET: 'x' })));
    for (const r of runs) {
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--metrics .*(not an IP address|no address|out of range)/);
      assert.match(r.stderr, /e\.g\. --metrics 127\.0\.0\.1:9464/);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  });

  it('rotates secrets on SIGHUP: new accepted, old refused once removed; a failed reload keeps the secrets', async () => {
    const file = join(dir, 'secret');
    await writeFile(file, 'old secret\n', { mode: 0o600 });
    const cli = startCli(['serve', '--listen', '127.0.0.1:0', '--secret-file', file, '--metrics', '127.0.0.1:0', '--log-format', 'json']);
    try {
      const log = await cli.waitFor('"listening"');
      const address = /"udp":"([^"]+)"/.exec(log)![1]!;
      const url = metricsUrl(log);
      let reloads = 0;
      const reload = async (expect: 'secret file reloaded' | 'secret reload failed'): Promise<void> => {
        reloads++;
        cli.child.kill('SIGHUP');
        // Every reload logs exactly one line, success or failure: wait for the n-th.
        const all = await cli.waitFor(new RegExp(`(?:"event":"reload"[^]*){${reloads}}`));
        const last = all.split('\n').filter((l) => l.includes('"event":"reload"')).at(-1) ?? '';
        assert.match(last, new RegExp(expect), last);
      };

      assert.equal(await tryRegister(address, 'old secret'), 4, 'the old secret registers');
      assert.equal(await tryRegister(address, 'new secret'), 3);

      // Step 1 of a rotation: both secrets, the new one first.
      await writeFile(file, 'new secret\nold secret\n');
      await reload('secret file reloaded');
      assert.equal((await scrape(url)).get('burrow_networks'), 2);
      assert.deepEqual(await Promise.all([tryRegister(address, 'new secret'), tryRegister(address, 'old secret')]), [4, 4]);

      // Step 2: the old one removed.
      await writeFile(file, 'new secret\n');
      await reload('secret file reloaded');
      assert.equal((await scrape(url)).get('burrow_networks'), 1);
      assert.deepEqual(await Promise.all([tryRegister(address, 'new secret'), tryRegister(address, 'old secret')]), [4, 3]);

      // A reload of an empty file, then of a missing one: an error in the log, the secrets unchanged.
      await writeFile(file, '');
      await reload('secret reload failed');
      await unlink(file);
      await reload('secret reload failed');
      const failures = (await cli.waitFor('secret reload failed')).split('\n').filter((l) => l.includes('secret reload failed'));
      assert.equal(failures.length, 2);
      assert.match(failures[0]!, /"level":50.*is empty/, 'logged as an error');
      assert.match(failures[1]!, /"level":50.*ENOENT/);
      assert.equal(cli.child.exitCode, null, 'still running');
      assert.equal((await scrape(url)).get('burrow_networks'), 1);
      assert.deepEqual(await Promise.all([tryRegister(address, 'new secret'), tryRegister(address, 'old secret')]), [4, 3]);
    } finally {
      cli.child.kill('SIGTERM');
    }
    const done = await cli.done;
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stderr, /"event":"stopped"/);
  });

  it('--check validates the options and the secret file without listening', async () => {
    const file = join(dir, 'check-secret');
    await writeFile(file, 'a\nb\n');
    const ok = await runCli(['serve', '--listen', '[::]:3478', '--secret-file', file, '--metrics', '127.0.0.1:9464', '--tstun', '--check']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /options and 2 secrets OK; not started/);
    const badListen = await runCli(['serve', '--listen', 'example.org:3478', '--secret-file', file, '--check']);
    assert.equal(badListen.code, 2);
    assert.match(badListen.stderr, /--listen host "example\.org" is not an IP address/);
    const missing = await runCli(['serve', '--secret-file', join(dir, 'absent'), '--check']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read the secret file/);
  });
});
