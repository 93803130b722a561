/**
 * Relaying through coturn on loopback, end to end with the real binary: two `burrow punch --relay only --turn ...`
 * peers connect through their TURN allocations, print the JSON result first (path "relay" and the relay object), and
 * stay on as loopback proxies while a handoff program on each side exchanges datagrams both ways through
 * $BURROW_LOCAL_PORT; each exits with its program's status. A stopped TURN server and wrong credentials end in exit 5
 * naming the relay failure. CI installs coturn and must run these.
 */
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { startCli, startServe, type CliRun } from '../support/cli.js';
import { coturnGate, startCoturn, type Coturn } from '../support/coturn.js';

const { available, skip } = coturnGate('turnserver');
const HANDOFF = fileURLToPath(new URL('../../src/lab/programs/handoff.js', import.meta.url));
const SECRET = 'relay-interop-secret-0123456789';

interface Side {
  readonly name: string;
  readonly peer: string;
}

describe('relaying through coturn (loopback)', { skip }, () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'burrow-relay-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function passwordFile(name: string, password: string): string {
    const f = join(dir, `${name}.pass`);
    writeFileSync(f, `${password}\n`, { mode: 0o600 });
    return f;
  }

  function punch(server: string, turn: Coturn | { url: string; credentials: (n: string) => { username: string; password: string } }, side: Side, extra: string[], wrongPassword = false): ReturnType<typeof startCli> {
    const c = turn.credentials(side.name);
    const file = passwordFile(side.name, wrongPassword ? 'not-the-password' : c.password);
    return startCli([
      'punch', '--server', server, '--as', side.name, '--to', side.peer, '--relay', 'only', '--turn', turn.url,
      '--turn-user', c.username, '--turn-password-file', file, '--format', 'json', '--timeout', '8', ...extra,
    ], { BURROW_SECRET: SECRET });
  }

  it('two peers connect through coturn and a program on each side exchanges datagrams through its proxy', async () => {
    assert.ok(available, 'coturn must be installed in CI');
    const turn = await startCoturn();
    const server = await startServe(SECRET);
    try {
      const program = ['--', process.execPath, HANDOFF, '--port', '$BURROW_LOCAL_PORT', '--remote-address', '$BURROW_REMOTE_ADDRESS', '--remote-port', '$BURROW_REMOTE_PORT', '--timeout-ms', '6000'];
      const a = punch(server.address, turn, { name: 'alice', peer: 'bob' }, program);
      const b = punch(server.address, turn, { name: 'bob', peer: 'alice' }, program);
      const [ra, rb] = await Promise.all([a.done, b.done]);
      for (const [who, r] of [['alice', ra], ['bob', rb]] as const) {
        assert.equal(r.code, 0, `${who}: exit ${String(r.code)}\n${r.stdout}\n${r.stderr}\n${turn.log().slice(-2000)}`);
        const lines = r.stdout.trim().split('\n');
        const first = JSON.parse(lines[0]!) as { path: string; localAddress: string; localPort: number; remoteAddress: string; remotePort: number; relay: { kind: string; server: string; relayed: string } };
        assert.equal(first.path, 'relay');
        assert.equal(first.relay.kind, 'turn');
        assert.equal(first.relay.server, `127.0.0.1:${turn.port}`);
        assert.match(first.relay.relayed, /^127\.0\.0\.1:\d+$/);
        assert.equal(first.localAddress, '127.0.0.1');
        assert.equal(first.remoteAddress, '127.0.0.1');
        // The program's own report is the last line: it heard the other side and the other side heard it.
        const report = JSON.parse(lines.at(-1)!) as { ok: boolean; heard: boolean; peerHeard: boolean; received: number };
        assert.ok(report.ok && report.heard && report.peerHeard, `${who}'s program: ${lines.at(-1) ?? ''}`);
      }
    } finally {
      await server.stop();
      await turn.stop();
    }
  });

  it('without a command the proxy stays in the foreground until SIGTERM, then exits 0', async () => {
    assert.ok(available, 'coturn must be installed in CI');
    const turn = await startCoturn();
    const server = await startServe(SECRET);
    try {
      const a = punch(server.address, turn, { name: 'carol', peer: 'dave' }, []);
      const b = punch(server.address, turn, { name: 'dave', peer: 'carol' }, []);
      await Promise.all([a.waitFor('staying on as the proxy', 8000), b.waitFor('staying on as the proxy', 8000)]);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(a.child.exitCode, null, 'alice left before SIGTERM');
      a.child.kill('SIGTERM');
      const ra: CliRun = await a.done;
      assert.equal(ra.code, 0, ra.stderr);
      assert.equal((JSON.parse(ra.stdout.split('\n')[0]!) as { path: string }).path, 'relay');
      // The partner's CLOSE ends the other side's session too.
      const rb = await b.done;
      assert.equal(rb.code, 0, rb.stderr);
      assert.match(rb.stderr, /relayed session with carol ended/);
    } finally {
      await server.stop();
      await turn.stop();
    }
  });

  it('a TURN server that does not answer, and wrong credentials, end in exit 5 naming the relay failure', async () => {
    assert.ok(available, 'coturn must be installed in CI');
    const turn = await startCoturn();
    const server = await startServe(SECRET);
    try {
      const wrong = punch(server.address, turn, { name: 'erin', peer: 'frank' }, [], true);
      const other = punch(server.address, turn, { name: 'frank', peer: 'erin' }, [], true);
      const [rw] = await Promise.all([wrong.done, other.done]);
      assert.equal(rw.code, 5, rw.stderr);
      assert.match(rw.stderr, /there is no relay: the relay at turn:127\.0\.0\.1:\d+ refused the allocation: 401 Unauthorized/);
      await turn.stop();
      const gone = { url: turn.url, credentials: turn.credentials.bind(turn) };
      const x = punch(server.address, gone, { name: 'gina', peer: 'hank' }, []);
      const y = punch(server.address, gone, { name: 'hank', peer: 'gina' }, []);
      const [rx] = await Promise.all([x.done, y.done]);
      assert.equal(rx.code, 5, rx.stderr);
      assert.match(rx.stderr, /the relay at turn:127\.0\.0\.1:\d+ did not answer/);
      const json = JSON.parse(rx.stdout) as { error: { code: string; details: { relay: { state: string; code: number } } } };
      assert.equal(json.error.code, 'NO_PATH');
      assert.deepEqual([json.error.details.relay.state, json.error.details.relay.code], ['failed', 0]);
    } finally {
      await server.stop();
      await turn.stop();
    }
  });
  const PROGRAM = ['--', process.execPath, HANDOFF, '--port', '$BURROW_LOCAL_PORT', '--remote-address', '$BURROW_REMOTE_ADDRESS', '--remote-port', '$BURROW_REMOTE_PORT', '--timeout-ms', '6000'];

  function plainPunch(server: string, side: Side, extra: string[]): ReturnType<typeof startCli> {
    return startCli(['punch', '--server', server, '--as', side.name, '--to', side.peer, '--relay', 'only', '--format', 'json', '--timeout', '8', ...extra], { BURROW_SECRET: SECRET });
  }

  async function bothRelayed(server: string, kind: 'builtin' | 'turn', relayServer: string): Promise<void> {
    const [ra, rb] = await Promise.all([plainPunch(server, { name: 'ivy', peer: 'jon' }, PROGRAM).done, plainPunch(server, { name: 'jon', peer: 'ivy' }, PROGRAM).done]);
    for (const r of [ra, rb]) {
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      const lines = r.stdout.trim().split('\n');
      const first = JSON.parse(lines[0]!) as { path: string; relay: { kind: string; server: string } };
      assert.deepEqual([first.path, first.relay.kind, first.relay.server], ['relay', kind, relayServer]);
      assert.ok((JSON.parse(lines.at(-1)!) as { ok: boolean }).ok, lines.at(-1));
    }
  }

  it('the relay the server offers: its built-in relay, and coturn with serve --turn (REST credentials in the introduction)', async () => {
    assert.ok(available, 'coturn must be installed in CI');
    const builtin = await startServe(SECRET);
    try {
      await bothRelayed(builtin.address, 'builtin', builtin.address);
    } finally {
      await builtin.stop();
    }
    const turn = await startCoturn();
    const secretFile = join(dir, 'turn-secret');
    writeFileSync(secretFile, `${turn.secret}\n`, { mode: 0o600 });
    const fleet = await startServe(SECRET, ['--turn', turn.url, '--turn-secret-file', secretFile]);
    try {
      await bothRelayed(fleet.address, 'turn', `127.0.0.1:${turn.port}`);
    } finally {
      await fleet.stop();
      await turn.stop();
    }
  });

  it('serve --no-relay: relay-only peers exit 5 saying the server offers no relay', async () => {
    const server = await startServe(SECRET, ['--no-relay']);
    try {
      const [ra] = await Promise.all([plainPunch(server.address, { name: 'kim', peer: 'lou' }, []).done, plainPunch(server.address, { name: 'lou', peer: 'kim' }, []).done]);
      assert.equal(ra.code, 5, ra.stderr);
      assert.match(ra.stderr, /offers no relay/);
    } finally {
      await server.stop();
    }
  });
});
