/**
 * `burrow send` / `burrow receive` across emulated NATs (issue 3, "Integrity through NATs"): a 200 MiB
 * random file arrives byte-identical between two port-restricted NATs, full-cone ↔ port-restricted,
 * firewall ↔ firewall over IPv4 and IPv6, and two hosts behind one NAT.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { NatKind } from '../../src/lab/nat-rules.js';
import { createLab } from '../../src/lab/topology.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';
import { CLI, peerEnv, randomFile, sha256 } from './peers.js';

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
        const receiver = lab.spawn(c.sameNat ? 'hA2' : 'hB', process.execPath, [CLI, 'receive', '--server', listen, '--as', 'bob', '--to', 'alice', '--out', out, '--timeout', '30'], { env: env() });
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
});
