/**
 * `burrow punch` relay flags and output on loopback: the JSON result is the first line on stdout before COMMAND runs
 * (for a direct path too), `--relay never` keeps the one-shot handoff, and the --turn flags are checked as a set.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { runCli, startCli, startServe } from '../support/cli.js';

const HANDOFF = fileURLToPath(new URL('../../src/lab/programs/handoff.js', import.meta.url));
const SECRET = 'punch-relay-cli-secret-0123456789';
const PROGRAM = ['--', process.execPath, HANDOFF, '--port', '$BURROW_LOCAL_PORT', '--remote-address', '$BURROW_REMOTE_ADDRESS', '--remote-port', '$BURROW_REMOTE_PORT', '--timeout-ms', '4000'];

describe('burrow punch: relay flags and output', () => {
  it('with --format json and -- COMMAND, the result is the first line on stdout, then COMMAND’s own output (direct path, --relay never)', async () => {
    const server = await startServe(SECRET);
    try {
      const common = ['--server', server.address, '--format', 'json', '--timeout', '8', '--relay', 'never'];
      const a = startCli(['punch', ...common, '--as', 'ann', '--to', 'ben', ...PROGRAM], { BURROW_SECRET: SECRET });
      const b = startCli(['punch', ...common, '--as', 'ben', '--to', 'ann', ...PROGRAM], { BURROW_SECRET: SECRET });
      const [ra, rb] = await Promise.all([a.done, b.done]);
      for (const r of [ra, rb]) {
        assert.equal(r.code, 0, r.stderr);
        const lines = r.stdout.trim().split('\n');
        assert.equal(lines.length, 2, r.stdout);
        const result = JSON.parse(lines[0]!) as { path: string; relay?: unknown };
        assert.ok(result.path === 'lan' || result.path === 'direct', lines[0]);
        assert.equal(result.relay, undefined);
        assert.equal((JSON.parse(lines[1]!) as { ok: boolean }).ok, true, lines[1]);
      }
    } finally {
      await server.stop();
    }
  });

  it('--turn needs --turn-user and --turn-password-file, they need --turn, and --turn contradicts --relay never (exit 2)', async () => {
    const base = ['punch', '--server', '127.0.0.1:9', '--as', 'a1', '--to', 'b1', '--timeout', '1'];
    const cases: [string[], RegExp][] = [
      [['--turn', 'turn:127.0.0.1:3478'], /--turn needs --turn-user NAME and --turn-password-file FILE/],
      [['--turn-user', 'u'], /need --turn URL/],
      [['--turn', 'turn:127.0.0.1:3478', '--turn-user', 'u', '--turn-password-file', '/dev/null', '--relay', 'never'], /contradict/],
      [['--relay', 'sometimes'], /sometimes/],
    ];
    for (const [extra, message] of cases) {
      const r = await runCli([...base, ...extra], { BURROW_SECRET: SECRET });
      assert.equal(r.code, 2, `${extra.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });
});
