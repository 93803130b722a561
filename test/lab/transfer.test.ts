/**
 * `burrow send` / `burrow receive` across emulated NATs (issue 3, "Integrity through NATs"): a 200 MiB
 * random file arrives byte-identical between two port-restricted NATs, full-cone ↔ port-restricted,
 * firewall ↔ firewall over IPv4 and IPv6, and two hosts behind one NAT. Issue 9: a directory tree and
 * stdin arrive identical, and a 500 MiB send killed halfway resumes on the next run, moving well under
 * 60 % of the bytes again.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { NatKind } from '../../src/lab/nat-rules.js';
import { createLab } from '../../src/lab/topology.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';
import { CLI, peerEnv, randomFile, sha256 } from './peers.js';
import { partNameOf } from '../../src/transfer/receive.js';

const SIZE = 200 * 1024 * 1024;
let dir = '';
let source = '';
let sourceHash = '';

const env = (): NodeJS.ProcessEnv => peerEnv('transfer lab secret');


interface Case {
  readonly a: NatKind;
  readonly b: NatKind;
  readonly sameNat?: boolean;
  readonly v6?: boolean;
}

describe('burrow send / receive across emulated NATs (lab)', { skip: labSkip }, () => {
  before(async () => {
    assertLabAvailable();
    dir = await mkdtemp(join(tmpdir(), 'burrow-transfer-lab-'));
    source = join(dir, 'random.bin');
    sourceHash = await randomFile(source, SIZE);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const cases: Case[] = [
    { a: 'port-restricted', b: 'port-restricted' },
    { a: 'full-cone', b: 'port-restricted' },
    { a: 'firewall', b: 'firewall' },
    { a: 'firewall', b: 'firewall', v6: true },
    { a: 'port-restricted', b: 'port-restricted', sameNat: true },
  ];
  for (const c of cases) {
    const label = c.sameNat ? `two hosts behind one ${c.a} NAT` : `${c.a} ↔ ${c.b}${c.v6 ? ' over IPv6' : ''}`;
    it(`a 200 MiB random file arrives byte-identical: ${label}`, async () => {
      const lab = await createLab({ a: c.a, b: c.b, ipv6: c.v6 === true });
      const out = join(dir, `out-${lab.runId}`);
      await mkdir(out);
      try {
        const listen = c.v6 ? '[2001:db8::1]:3478' : '203.0.113.1:3478';
        const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', listen, '--log-format', 'json'], { env: env() });
        await server.waitForOutput('stderr', '"listening"', 5000);
        const sender = lab.spawn('hA', process.execPath, [CLI, 'send', source, '--server', listen, '--as', 'alice', '--to', 'bob', '--timeout', '30'], { env: env() });
        const receiver = lab.spawn(c.sameNat ? 'hA2' : 'hB', process.execPath, [CLI, 'receive', '--server', listen, '--as', 'bob', '--to', 'alice', '--out', out, '--timeout', '30', '--yes'], { env: env() });
        const [es, er] = await Promise.all([sender.exited, receiver.exited]);
        assert.equal(es.code, 0, `sender: ${sender.stderr}`);
        assert.equal(er.code, 0, `receiver: ${receiver.stderr}`);
        assert.deepEqual(await readdir(out), ['random.bin'], 'exactly the file, no temporary leftovers');
        assert.equal(await sha256(join(out, 'random.bin')), sourceHash);
      } finally {
        await rm(out, { recursive: true, force: true });
        await lab.destroy();
        await assertNothingLeft(lab.runId);
      }
    });
  }

  it('a directory tree (200 files, nested, modes, an empty folder) and stdin (send -) arrive identical through two port-restricted NATs', async () => {
    const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
    const src = join(dir, `tree-${lab.runId}`);
    const out = join(dir, `tree-out-${lab.runId}`);
    try {
      const root = join(src, 'site');
      for (const d of ['css', 'img/icons', 'img/photos/2024', 'empty']) await mkdir(join(root, d), { recursive: true });
      await chmod(join(root, 'empty'), 0o700);
      const where = ['', 'css', 'img', 'img/icons', 'img/photos', 'img/photos/2024'];
      for (let i = 0; i < 200; i++) {
        const path = join(root, where[i % where.length] ?? '', `f${i}.bin`);
        await writeFile(path, randomBytes(1000 + i * 97));
        await chmod(path, i % 3 === 0 ? 0o755 : 0o640);
      }
      const piped = randomBytes(2 * 1024 * 1024 + 1);
      await writeFile(join(src, 'piped.input'), piped);
      await mkdir(out);
      const listen = '203.0.113.1:3478';
      const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', listen, '--log-format', 'json'], { env: env() });
      await server.waitForOutput('stderr', '"listening"', 5000);
      for (const [send, what] of [[`"${root}"`, 'tree'], [`- --name piped.bin < "${join(src, 'piped.input')}"`, 'stdin']] as const) {
        const sender = lab.spawn('hA', 'sh', ['-c', `"${process.execPath}" "${CLI}" send ${send} --server ${listen} --as alice --to bob --timeout 30`], { env: env() });
        const receiver = lab.spawn('hB', process.execPath, [CLI, 'receive', '--server', listen, '--as', 'bob', '--to', 'alice', '--out', out, '--timeout', '30', '--yes'], { env: env() });
        const [es, er] = await Promise.all([sender.exited, receiver.exited]);
        assert.equal(es.code, 0, `${what} sender: ${sender.stderr}`);
        assert.equal(er.code, 0, `${what} receiver: ${receiver.stderr}`);
      }
      const listing = async (base: string): Promise<string[]> => {
        const names = (await readdir(base, { recursive: true })).sort();
        return Promise.all(names.map(async (n) => {
          const info = await stat(join(base, n));
          return `${n} ${(info.mode & 0o777).toString(8)} ${info.isDirectory() ? 'dir' : await sha256(join(base, n))}`;
        }));
      };
      assert.deepEqual(await listing(join(out, 'site')), await listing(root));
      assert.deepEqual((await readdir(out)).sort(), ['piped.bin', 'site']);
      assert.ok((await readFile(join(out, 'piped.bin'))).equals(piped));
    } finally {
      await rm(src, { recursive: true, force: true });
      await rm(out, { recursive: true, force: true });
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });

  it('a 500 MiB send killed halfway resumes on the next run, moves under 60 % of the bytes again, and arrives verified', async (t) => {
    const lab = await createLab({ a: 'port-restricted', b: 'port-restricted' });
    const big = join(dir, `resume-${lab.runId}.bin`);
    const out = join(dir, `resume-out-${lab.runId}`);
    const SIZE500 = 500 * 1024 * 1024;
    try {
      const bigHash = await randomFile(big, SIZE500);
      await mkdir(out);
      const listen = '203.0.113.1:3478';
      const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', listen, '--log-format', 'json'], { env: env() });
      await server.waitForOutput('stderr', '"listening"', 5000);
      const run = (): { sender: ReturnType<typeof lab.spawn>; receiver: ReturnType<typeof lab.spawn> } => ({
        sender: lab.spawn('hA', process.execPath, [CLI, 'send', big, '--server', listen, '--as', 'alice', '--to', 'bob', '--timeout', '30'], { env: env() }),
        receiver: lab.spawn('hB', process.execPath, [CLI, 'receive', '--server', listen, '--as', 'bob', '--to', 'alice', '--out', out, '--timeout', '30', '--yes'], { env: env() }),
      });
      const part = join(out, partNameOf(`resume-${lab.runId}.bin`));

      // First run: SIGKILL the sender once about half the file is on the receiver's disk.
      const first = run();
      let kept = 0;
      for (let i = 0; i < 3000 && first.sender.exitStatus === null; i++) {
        kept = await stat(part).then((s) => s.size, () => 0);
        if (kept >= SIZE500 / 2) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      first.sender.kill('SIGKILL');
      const [, r1] = await Promise.all([first.sender.exited, first.receiver.exited]);
      assert.notEqual(r1.code, 0, 'the receiver must not report success');
      assert.match(first.receiver.stderr, /broke before everything was delivered/);
      kept = (await stat(part)).size;
      assert.ok(kept >= SIZE500 * 0.45 && kept < SIZE500, `kept ${kept} bytes`);
      assert.deepEqual((await readdir(out)).sort(), [partNameOf(`resume-${lab.runId}.bin`)], 'nothing under the final name');

      // Second run: the same command on both sides.
      const second = run();
      const [es, er] = await Promise.all([second.sender.exited, second.receiver.exited]);
      assert.equal(es.code, 0, second.sender.stderr);
      assert.equal(er.code, 0, second.receiver.stderr);
      const resumed = /([\d.]+) MiB were already there from an interrupted run and were not sent again/.exec(second.sender.stderr);
      assert.ok(resumed, second.sender.stderr);
      const movedAgain = SIZE500 - Number(resumed[1]) * 1024 * 1024;
      t.diagnostic(`killed with ${(kept / 1024 / 1024).toFixed(0)} MiB on disk; the second run moved ${(movedAgain / 1024 / 1024).toFixed(0)} MiB (${((100 * movedAgain) / SIZE500).toFixed(0)} % of the file)`);
      assert.ok(movedAgain < 0.6 * SIZE500, `moved ${movedAgain} bytes again`);
      assert.deepEqual(await readdir(out), [`resume-${lab.runId}.bin`]);
      assert.equal(await sha256(join(out, `resume-${lab.runId}.bin`)), bigHash);
    } finally {
      await rm(big, { force: true });
      await rm(out, { recursive: true, force: true });
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });
});
