/**
 * TCP across emulated NATs (issue 3): simultaneous open through each pairing, IPv6 through stateful
 * firewalls, the LAN path behind one NAT, byte-exact integrity of 200 MiB of random data, pipe
 * semantics, tampering on the path, and a lone peer.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { NatKind } from '../../src/lab/nat-rules.js';
import { createLab, type Lab } from '../../src/lab/topology.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';
import { CLI, peerEnv, randomFile, sha256 } from './peers.js';

const SIZE = 200 * 1024 * 1024;
let dir = '';
let source = '';
let sourceHash = '';

const env = (): NodeJS.ProcessEnv => peerEnv('tcp lab secret');


async function withServer<T>(lab: Lab, v6: boolean, body: (server: string) => Promise<T>): Promise<T> {
  const listen = v6 ? '[2001:db8::1]:3478' : '203.0.113.1:3478';
  const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', listen, '--log-format', 'json'], { env: env() });
  await server.waitForOutput('stderr', '"listening"', 5000);
  return body(listen);
}

interface Case {
  readonly a: NatKind;
  readonly b: NatKind;
  readonly sameNat?: boolean;
  readonly v6?: boolean;
  readonly path: 'lan' | 'direct';
}

describe('TCP across emulated NATs (lab)', { skip: labSkip }, () => {
  before(async () => {
    assertLabAvailable();
    dir = await mkdtemp(join(tmpdir(), 'burrow-tcp-lab-'));
    source = join(dir, 'random.bin');
    sourceHash = await randomFile(source, SIZE);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const cases: Case[] = [
    { a: 'port-restricted', b: 'port-restricted', path: 'direct' },
    { a: 'full-cone', b: 'port-restricted', path: 'direct' },
    { a: 'firewall', b: 'firewall', path: 'direct' },
    { a: 'firewall', b: 'firewall', v6: true, path: 'direct' },
    { a: 'port-restricted', b: 'port-restricted', sameNat: true, path: 'lan' },
  ];
  for (const c of cases) {
    const label = c.sameNat ? `two hosts behind one ${c.a} NAT` : `${c.a} ↔ ${c.b}${c.v6 ? ' over IPv6' : ''}`;
    it(`200 MiB of random data arrive byte-identical: ${label}`, async () => {
      const lab = await createLab({ a: c.a, b: c.b, ipv6: c.v6 === true });
      const out = join(dir, `out-${lab.runId}.bin`);
      try {
        await withServer(lab, c.v6 === true, async (server) => {
          const common = ['pipe', '--server', server, '--timeout', '20'];
          const a = lab.spawn('hA', 'sh', ['-c', `"${process.execPath}" "${CLI}" ${common.join(' ')} --as alice --to bob --send-only < "${source}"`], { env: env() });
          const b = lab.spawn(c.sameNat ? 'hA2' : 'hB', 'sh', ['-c', `"${process.execPath}" "${CLI}" ${common.join(' ')} --as bob --to alice --recv-only > "${out}"`], { env: env() });
          const [ea, eb] = await Promise.all([a.exited, b.exited]);
          assert.equal(ea.code, 0, `alice: ${a.stderr}`);
          assert.equal(eb.code, 0, `bob: ${b.stderr}`);
          assert.match(b.stderr, c.path === 'lan' ? /over the LAN/ : /directly/);
          if (c.v6) assert.match(b.stderr, /at \[2001:db8:a::/);
          assert.equal(await sha256(out), sourceHash);
        });
      } finally {
        await rm(out, { force: true });
        await lab.destroy();
        await assertNothingLeft(lab.runId);
      }
    });
  }

  it('pipe delivers exactly the bytes of each side, EOF included, through two port-restricted NATs', async () => {
    const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
    try {
      await withServer(lab, false, async (server) => {
        const cmd = (as: string, to: string, text: string) => `printf '${text}' | "${process.execPath}" "${CLI}" pipe --server ${server} --as ${as} --to ${to} --timeout 10`;
        const a = lab.spawn('hA', 'sh', ['-c', cmd('alice', 'bob', 'from alice\\n')], { env: env() });
        const b = lab.spawn('hB', 'sh', ['-c', cmd('bob', 'alice', 'from bob, no newline')], { env: env() });
        const [ea, eb] = await Promise.all([a.exited, b.exited]);
        assert.equal(ea.code, 0, a.stderr);
        assert.equal(eb.code, 0, b.stderr);
        assert.equal(a.stdout, 'from bob, no newline');
        assert.equal(b.stdout, 'from alice\n');
      });
    } finally {
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });

  it('a byte flipped on the path makes the receiver abort with exit 7, and its output holds none of it', async () => {
    const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
    try {
      // Router A rewrites one payload byte of every large TCP segment it forwards (checksums fixed by nft).
      const rule = 'table inet burrow_tamper {\n chain mangler {\n  type filter hook forward priority mangle;\n  meta l4proto tcp ip length > 1200 @th,1024,8 set 0x5a\n }\n}\n';
      const nft = await lab.exec('natA', 'nft', ['-f', '-'], { input: rule });
      assert.equal(nft.code, 0, nft.stderr);
      await withServer(lab, false, async (server) => {
        const out = join(dir, `tampered-${lab.runId}.bin`);
        const a = lab.spawn('hA', 'sh', ['-c', `head -c 4000000 /dev/zero | "${process.execPath}" "${CLI}" pipe --server ${server} --as alice --to bob --send-only --timeout 10`], { env: env() });
        const b = lab.spawn('hB', 'sh', ['-c', `"${process.execPath}" "${CLI}" pipe --server ${server} --as bob --to alice --recv-only --timeout 10 > "${out}"; echo "exit=$?" >&2`], { env: env() });
        await Promise.all([a.exited, b.exited]);
        assert.match(b.stderr, /exit=7/);
        assert.match(b.stderr, /failed authentication: data was altered/);
        const { readFile } = await import('node:fs/promises');
        const written = await readFile(out);
        assert.ok(written.every((x) => x === 0), 'the output holds altered data');
        assert.ok(written.length < 4_000_000);
        const aCode = (await a.exited).code;
        assert.notEqual(aCode, 0, 'the sender must not report success');
        await rm(out, { force: true });
      });
    } finally {
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });

  it('a lone peer exits 4 at its timeout', async () => {
    const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
    try {
      await withServer(lab, false, async (server) => {
        const a = lab.spawn('hA', 'sh', ['-c', `"${process.execPath}" "${CLI}" pipe --server ${server} --as alice --to bob --timeout 2 < /dev/null`], { env: env() });
        const ea = await a.exited;
        assert.equal(ea.code, 4, a.stderr);
        assert.match(a.stderr, /never registered with the server/);
        assert.doesNotMatch(a.stderr, /\n\s+at /);
      });
    } finally {
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });
});
