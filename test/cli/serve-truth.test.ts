/**
 * `burrow serve` tells the truth: a clash names the socket that really clashed (the alternate port is the
 * --listen port + 1), --check catches what a real start would (one port twice, addresses), and failed
 * authentications reach the default log level, one line per source and interval.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { describe, it } from 'node:test';
import { AuthFailureLog, isAuthFailure } from '../../src/cli/log.js';
import { runCli, startCli } from '../support/cli.js';

const SECRET = 'serve truth test secret';

/** Two free consecutive UDP ports on 127.0.0.1, the second held by a socket of ours. */
async function holdNextPort(): Promise<{ port: number; release: () => Promise<void> }> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const probe = createSocket('udp4');
    await new Promise<void>((resolve) => probe.bind(0, '127.0.0.1', resolve));
    const port = probe.address().port;
    await new Promise<void>((resolve) => probe.close(() => { resolve(); }));
    if (port >= 65535) continue;
    const holder = createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      holder.once('error', () => { resolve(false); });
      holder.bind(port + 1, '127.0.0.1', () => { resolve(true); });
    });
    if (ok) return { port, release: () => new Promise((resolve) => holder.close(() => { resolve(); })) };
  }
  throw new Error('no two free consecutive ports');
}

describe('burrow serve tells the truth', () => {
  it('a taken alternate port (PORT+1) is named as such, with the flags that fix it', async () => {
    const { port, release } = await holdNextPort();
    try {
      const r = await runCli(['serve', '--listen', `127.0.0.1:${port}`], { BURROW_SECRET: SECRET });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`cannot listen on UDP 127\\.0\\.0\\.1:${port + 1}, the alternate port \\(main port \\+ 1`));
      assert.match(r.stderr, new RegExp(`hint: the alternate port is the --listen port \\+ 1 \\(${port + 1}\\)[^\\n]*--alt-port PORT[^\\n]*--no-alt-port`));
      const json = await runCli(['serve', '--listen', `127.0.0.1:${port}`, '--no-alt-port', '--check'], { BURROW_SECRET: SECRET });
      assert.equal(json.code, 0, json.stderr);
    } finally {
      await release();
    }
  });

  it('--check refuses one port twice and bad addresses, as a start would', async () => {
    const env = { BURROW_SECRET: SECRET };
    const cases: [string[], RegExp][] = [
      [['--listen', '127.0.0.1:5000', '--alt-port', '5000'], /--alt-port and --listen \(UDP\) would both use UDP port 5000/],
      [['--listen', '127.0.0.1:5000', '--tstun', '127.0.0.1:5000'], /--tstun and --listen \(TCP rendezvous, the same port as UDP\) would both use TCP port 5000/],
      [['--listen', '[::]:5000', '--metrics', '127.0.0.1:5000'], /--metrics and --listen \(TCP rendezvous[^)]*\) would both use TCP port 5000/],
      [['--listen', '127.0.0.1:5000', '--tstun', '--metrics', '127.0.0.1:3477'], /--metrics and --tstun would both use TCP port 3477/],
      [['--listen', '127.0.0.1:65535'], /alternate port would be 65536/],
      [['--listen', '::1:3478'], /hint: write \[::1\]:3478/],
      [['--listen', 'example.org:3478'], /--listen host "example\.org" is not an IP address/],
      [['--metrics', '9464'], /--metrics "9464" has no address/],
    ];
    const runs = await Promise.all(cases.map(([args]) => runCli(['serve', ...args, '--check'], env)));
    runs.forEach((r, i) => {
      assert.equal(r.code, 2, `${cases[i]![0].join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, cases[i]![1]);
    });
    const ok = await runCli(['serve', '--listen', '127.0.0.1:5000', '--alt-port', '5002', '--tstun', '127.0.0.1:5000', '--no-alt-port', '--check'], env);
    assert.equal(ok.code, 2, 'tstun on the TCP rendezvous port still clashes');
    const fine = await runCli(['serve', '--listen', '127.0.0.1:5000', '--tstun', '--metrics', '127.0.0.1:9464', '--check'], env);
    assert.equal(fine.code, 0, fine.stderr);
    assert.match(fine.stdout, /would open: UDP 127\.0\.0\.1:5000 \(--listen \(UDP\)\), TCP 127\.0\.0\.1:5000 [^\n]*UDP 127\.0\.0\.1:5001 \(the alternate port/);
  });

  it('failed authentications appear at the default level, counted per source', async () => {
    const cli = startCli(['serve', '--listen', '127.0.0.1:0'], { BURROW_SECRET: SECRET });
    const text = await cli.waitFor(/listening[^\n]*udp=\S+/);
    const address = /udp=(\S+)/.exec(text)![1]!;
    const wrong = await Promise.all([1, 2, 3].map((i) => runCli(['punch', '--server', address, '--as', `p${i}`, '--to', 'x', '--timeout', '5'], { BURROW_SECRET: 'not the server secret at all' })));
    for (const r of wrong) assert.equal(r.code, 3, r.stderr);
    cli.child.kill('SIGTERM');
    const done = await cli.done;
    assert.equal(done.code, 0);
    const lines = done.stderr.split('\n').filter((l) => l.includes('authentication failed'));
    assert.ok(lines.length >= 1 && lines.length <= 2, `one line per interval: ${lines.join('\n')}`);
    const total = lines.reduce((n, l) => n + Number(/count=(\d+)/.exec(l)?.[1] ?? 0), 0);
    assert.ok(total >= 3, `three failures counted: ${lines.join('\n')}`);
    for (const l of lines) assert.match(l, /WARN authentication failed \d+ times? from 127\.0\.0\.1 .*event=auth-failures/);
    assert.doesNotMatch(done.stderr, /DEBUG/);
  });

  it('the aggregation is bounded: one entry per source, the rest counted together', () => {
    const log = new AuthFailureLog(3);
    for (let i = 0; i < 100_000; i++) log.add(`198.51.100.${i % 250}`, 'bad MAC');
    const { sources, others } = log.flush();
    assert.equal(sources.length, 3);
    assert.equal(sources.reduce((n, s) => n + s.count, 0) + (others?.count ?? 0), 100_000);
    assert.equal(others?.sources, 247);
    assert.deepEqual(log.flush(), { sources: [], others: undefined });
    assert.ok(isAuthFailure('bad MAC') && isAuthFailure('unknown network (secret differs)') && !isAuthFailure('replayed message'));
  });
});
