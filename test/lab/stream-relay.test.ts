/**
 * Relayed streams across emulated NATs (issue 10, item 7, "Files"): where TCP simultaneous open cannot work, `burrow
 * send` / `receive` and `burrow pipe` fall back by themselves (`--relay auto`, the default) to the stream relay of
 * the `burrow serve` that introduced them.
 * - a 100 MiB random file arrives byte-identical between two symmetric NATs, both sides reporting path relay;
 * - pipe symmetric ↔ port-restricted carries each side's bytes, EOF included, over the relay;
 * - with `serve --no-relay`, symmetric ↔ symmetric exits 5 and says the server offers no relay.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLab } from '../../src/lab/topology.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';
import { CLI, peerEnv, randomFile, sha256 } from './peers.js';

const SIZE = 100 * 1024 * 1024;
const LISTEN = '203.0.113.1:3478';
let dir = '';
let source = '';
let sourceHash = '';

const env = (): NodeJS.ProcessEnv => peerEnv('stream relay lab secret');

describe('relayed streams across emulated NATs (lab)', { skip: labSkip }, () => {
  before(async () => {
    assertLabAvailable();
    dir = await mkdtemp(join(tmpdir(), 'burrow-srelay-lab-'));
    source = join(dir, 'random.bin');
    sourceHash = await randomFile(source, SIZE);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a 100 MiB send between two symmetric NATs arrives byte-identical over the relay', async (t) => {
    const lab = await createLab({ a: 'symmetric', b: 'symmetric' });
    const out = join(dir, `out-${lab.runId}`);
    await mkdir(out);
    try {
      const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', LISTEN, '--log-format', 'json'], { env: env() });
      await server.waitForOutput('stderr', '"listening"', 5000);
      const common = ['--server', LISTEN, '--timeout', '30', '--format', 'json'];
      const sender = lab.spawn('hA', process.execPath, [CLI, 'send', source, ...common, '--as', 'alice', '--to', 'bob'], { env: env() });
      const receiver = lab.spawn('hB', process.execPath, [CLI, 'receive', ...common, '--as', 'bob', '--to', 'alice', '--out', out, '--yes'], { env: env() });
      const [es, er] = await Promise.all([sender.exited, receiver.exited]);
      assert.equal(es.code, 0, `sender: ${sender.stderr}`);
      assert.equal(er.code, 0, `receiver: ${receiver.stderr}`);
      for (const [who, p] of [['sender', sender], ['receiver', receiver]] as const) {
        const j = JSON.parse(p.stdout) as { path?: string; relay?: unknown; elapsedMs?: number };
        assert.equal(j.path, 'relay', `${who}: ${p.stdout}`);
        assert.deepEqual(j.relay, { kind: 'builtin', server: LISTEN });
      }
      assert.match(receiver.stderr, /through the stream relay at 203\.0\.113\.1:3478/);
      assert.deepEqual(await readdir(out), ['random.bin'], 'exactly the file, no temporary leftovers');
      assert.equal(await sha256(join(out, 'random.bin')), sourceHash);
      const s = JSON.parse(sender.stdout) as { elapsedMs: number };
      t.diagnostic(`100 MiB over the stream relay in ${(s.elapsedMs / 1000).toFixed(1)} s (${(100_000 / s.elapsedMs).toFixed(1)} MiB/s)`);
    } finally {
      await rm(out, { recursive: true, force: true });
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });

  it('serve --no-relay: pipe symmetric ↔ symmetric exits 5, naming the missing relay', async () => {
    const lab = await createLab({ a: 'symmetric', b: 'symmetric' });
    try {
      const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', LISTEN, '--log-format', 'json', '--no-relay'], { env: env() });
      await server.waitForOutput('stderr', '"listening"', 5000);
      // 5 s: longer than the 3 s overlap after which a partner's give-up is a diagnosis (NO_PATH), not PEER_LEFT.
      const cmd = (as: string, to: string) => [CLI, 'pipe', '--server', LISTEN, '--as', as, '--to', to, '--timeout', '5'];
      const a = lab.spawn('hA', process.execPath, cmd('alice', 'bob'), { env: env() });
      const b = lab.spawn('hB', process.execPath, cmd('bob', 'alice'), { env: env() });
      const [ea, eb] = await Promise.all([a.exited, b.exited]);
      for (const [e, p] of [[ea, a], [eb, b]] as const) {
        assert.equal(e.code, 5, p.stderr);
        assert.match(p.stderr, /TCP connection attempts failed .* No relay either: the server at 203\.0\.113\.1:3478 offers no relay \(it runs with relaying turned off\)/);
        assert.match(p.stderr, /hint: streams are relayed by the server's built-in relay only/);
      }
    } finally {
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });

  it('pipe symmetric ↔ port-restricted: each side\'s bytes, EOF included, over the relay', async (t) => {
    const lab = await createLab({ a: 'symmetric', b: 'port-restricted' });
    try {
      const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', LISTEN, '--log-format', 'json'], { env: env() });
      await server.waitForOutput('stderr', '"listening"', 5000);
      const cmd = (as: string, to: string, text: string) => `printf '${text}' | "${process.execPath}" "${CLI}" pipe --server ${LISTEN} --as ${as} --to ${to} --timeout 20 --format json`;
      const a = lab.spawn('hA', 'sh', ['-c', cmd('alice', 'bob', 'from alice\\n')], { env: env() });
      const b = lab.spawn('hB', 'sh', ['-c', cmd('bob', 'alice', 'from bob, no newline')], { env: env() });
      const [ea, eb] = await Promise.all([a.exited, b.exited]);
      assert.equal(ea.code, 0, a.stderr);
      assert.equal(eb.code, 0, b.stderr);
      assert.equal(a.stdout, 'from bob, no newline');
      assert.equal(b.stdout, 'from alice\n');
      for (const p of [a, b]) {
        const line = p.stderr.split('\n').find((l) => l.startsWith('{'));
        assert.ok(line, p.stderr);
        const j = JSON.parse(line) as { path?: string; relay?: unknown; connectMs?: number };
        assert.equal(j.path, 'relay', p.stderr);
        assert.deepEqual(j.relay, { kind: 'builtin', server: LISTEN });
        t.diagnostic(`connected over the relay after ${String(j.connectMs)} ms (the relay opens 3 s after the introduction)`);
      }
    } finally {
      await lab.destroy();
      await assertNothingLeft(lab.runId);
    }
  });
});
