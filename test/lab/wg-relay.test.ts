/**
 * WireGuard over the relay across emulated NATs (issue 10, item 8): two wireguard-go peers whose NATs no direct path
 * crosses complete a handshake and carry UDP through the tunnel under `burrow wg --continuous`. Each peer's endpoint
 * becomes the loopback proxy inside its `burrow wg` (127.0.0.1:P), which forwards through the relay the server offers:
 * symmetric ↔ symmetric through coturn (`serve --turn`), port-restricted ↔ symmetric through the built-in relay.
 * (One-shot `burrow wg` for such a pair exits 5 saying the relay needs --continuous: test/lab/wireguard.test.ts.)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, describe, it } from 'node:test';
import type { Lab, LabOptions } from '../../src/lab/index.js';
import type { LabProcess } from '../../src/lab/process.js';
import { createLab } from '../../src/lab/topology.js';
import { hasProgram } from '../support/coturn.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';
import { addPeer, assertNoWgLeft, burrowWg, startServer, startWg, stopWg, tunnelCarries, wgAvailable, wgPeers, type WgHost } from './wg-lab.js';

const TURN_IP = '203.0.113.9';
const skip: string | false =
  labSkip !== false
    ? labSkip
    : process.env.CI === 'true'
      ? false
      : !wgAvailable()
        ? 'skipped: wireguard-go or wg is not installed'
        : !hasProgram('turnserver')
          ? 'skipped: coturn is not installed (apt-get install coturn)'
          : false;

async function startCoturn(lab: Lab, secret: string): Promise<LabProcess> {
  const add = await lab.exec('pub', 'ip', ['addr', 'add', `${TURN_IP}/32`, 'dev', 'lo']);
  assert.equal(add.code, 0, add.stderr);
  const turn = lab.spawn('pub', 'turnserver', [
    '-n', '-L', TURN_IP, '-E', TURN_IP, '-p', '3478', '--min-port', '49152', '--max-port', '49251', '-r', 'burrow.test',
    '--use-auth-secret', '--static-auth-secret', secret, '-f', '--no-tls', '--no-dtls', '--no-tcp-relay', '--no-cli',
    '--no-multicast-peers', '--log-file', 'stdout', '--simple-log',
  ]);
  turn.endInput();
  for (let i = 0; i < 40; i++) {
    const ss = await lab.exec('pub', 'ss', ['-Hlun', 'sport = :3478']);
    if (ss.stdout.includes(`${TURN_IP}:3478`)) return turn;
    await sleep(50);
  }
  throw new Error(`turnserver did not listen: ${turn.stdout.slice(-2000)}`);
}

describe('burrow wg --continuous: WireGuard through the relay across emulated NATs (lab)', { skip }, () => {
  before(() => {
    assertLabAvailable();
    assert.ok(wgAvailable(), 'wireguard-go and wg must be installed for the WireGuard lab tests');
  });

  const cases: { a: LabOptions['a']; b: LabOptions['b']; relay: 'coturn' | 'builtin' }[] = [
    { a: 'symmetric', b: 'symmetric', relay: 'coturn' },
    { a: 'port-restricted', b: 'symmetric', relay: 'builtin' },
  ];
  for (const c of cases) {
    const via = c.relay === 'coturn' ? 'coturn (serve --turn)' : 'the built-in relay';
    it(`${c.a} ↔ ${c.b}: a handshake and UDP both ways through the tunnel, relayed by ${via}`, async () => {
      const lab = await createLab({ a: c.a, b: c.b });
      const dir = mkdtempSync(join(tmpdir(), 'burrow-wg-relay-lab-'));
      const hosts: WgHost[] = [];
      const watchers: LabProcess[] = [];
      try {
        let serverExtra: string[] = [];
        let turn: LabProcess | undefined;
        if (c.relay === 'coturn') {
          const secret = randomBytes(16).toString('hex');
          writeFileSync(join(dir, 'turn-secret'), `${secret}\n`, { mode: 0o600 });
          turn = await startCoturn(lab, secret);
          serverExtra = ['--turn', `turn:${TURN_IP}:3478`, '--turn-secret-file', join(dir, 'turn-secret')];
        }
        const server = await startServer(lab, '203.0.113.1:3478', serverExtra);
        const hA = await startWg(lab, 'hA', 51820);
        const hB = await startWg(lab, 'hB', 51820);
        hosts.push(hA, hB);
        await addPeer(lab, hA, hB);
        await addPeer(lab, hB, hA);
        const started = Date.now();
        for (const h of hosts) watchers.push(burrowWg(lab, h, ['--continuous', '--interval', '1', '--format', 'json']));
        const context = (): string => `${watchers.map((w) => `--- ${w.commandLine.split(' ').slice(-6).join(' ')}\n${w.stderr.slice(-3000)}`).join('\n')}\n--- serve\n${server.stderr.slice(-1500)}\n--- turn\n${turn?.stdout.slice(-1500) ?? ''}`;
        // Each side logs the move of its peer to the relay (its endpoint becomes the proxy).
        try {
          await Promise.all(watchers.map((w) => w.waitForOutput('stderr', (text) => /path relay, endpoint 127\.0\.0\.1:\d+/.test(text), 40_000)));
        } catch (err) {
          assert.fail(`${String(err)}\n${context()}`);
        }
        const relayedMs = Date.now() - started;
        const relayServer = c.relay === 'coturn' ? `${TURN_IP}:3478` : '203.0.113.1:3478';
        for (const w of watchers) assert.match(w.stderr, new RegExp(`relay session ready: ${c.relay === 'coturn' ? 'TURN' : 'built-in relay'} ${relayServer.replace(/\./g, '\\.')}`), context());
        // Data through the tunnel both ways: WireGuard handshakes through the proxies and the relay.
        try {
          await tunnelCarries(lab, hA, hB, 'relayed-a-to-b', 40);
          await tunnelCarries(lab, hB, hA, 'relayed-b-to-a', 20);
        } catch (err) {
          assert.fail(`${String(err)}\n${context()}`);
        }
        const carriedMs = Date.now() - started;
        for (const [h, p] of [[hA, hB], [hB, hA]] as const) {
          const row = (await wgPeers(lab, h)).find((r) => r.key === p.publicKey);
          assert.match(row?.endpoint ?? '', /^127\.0\.0\.1:\d+$/, `${h.node}'s endpoint for its peer is its burrow proxy`);
          assert.ok((row?.latestHandshake ?? 0) > 0, 'handshaken');
        }
        // Each side has seen the handshake (`wg show`, once a second) before it is stopped.
        await Promise.all(watchers.map((w) => w.waitForOutput('stderr', (text) => /peer \S+: connected/.test(text), 5000)));
        for (const w of watchers) w.kill('SIGTERM');
        const exits = await Promise.all(watchers.map((w) => w.exited));
        for (const [i, e] of exits.entries()) assert.equal(e.code, 0, watchers[i]?.stderr);
        // The final report names the path and the relay.
        for (const w of watchers) {
          const result = JSON.parse(w.stdout.trim().split('\n').pop() ?? '{}') as { peers: ({ path: string; status: string; relay?: { server: string } } | undefined)[] };
          const [only] = result.peers;
          assert.ok(only, w.stdout);
          assert.equal(only.path, 'relay', w.stdout);
          assert.equal(only.status, 'connected', w.stdout);
          assert.equal(only.relay?.server, relayServer, w.stdout);
        }
        process.stdout.write(`# wg relay ${c.a} ↔ ${c.b} via ${c.relay}: both relayed ${relayedMs} ms after the start, data both ways by ${carriedMs} ms\n`);
      } finally {
        for (const w of watchers) if (w.exitStatus === null) w.kill('SIGKILL');
        for (const h of hosts) await stopWg(h).catch(() => undefined);
        await lab.destroy();
        rmSync(dir, { recursive: true, force: true });
        await assertNothingLeft(lab.runId);
        assertNoWgLeft(lab.runId);
      }
    });
  }
});
