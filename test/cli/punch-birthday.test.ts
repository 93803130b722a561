/**
 * `burrow punch` and birthday probing: the flags are checked (usage errors, exit 2), and the JSON contract other
 * tools read (`burrow lab matrix`): the result and the later {"event":"path"} line carry
 * `"birthday":{"role","probes"}` when birthday probing found the path, and nothing otherwise.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { birthdayOption, formatPathChange, formatResult, humanLine } from '../../src/cli/punch.js';
import type { PathResult } from '../../src/node/punch.js';
import { runCli } from '../support/cli.js';

const base: PathResult = { localAddress: '0.0.0.0', localPort: 47388, remoteAddress: '198.51.100.2', remotePort: 42870, path: 'direct', elapsedMs: 1053, peer: 'alice', transport: 'bd1.17' };

void describe('burrow punch: birthday probing', () => {
  void it('puts the birthday object in the JSON result and the path event, and says it for people', () => {
    const hard: PathResult = { ...base, birthday: { role: 'hard', probes: 512 } };
    assert.deepEqual(JSON.parse(formatResult(hard, 'json')), { localAddress: '0.0.0.0', localPort: 47388, remoteAddress: '198.51.100.2', remotePort: 42870, path: 'direct', elapsedMs: 1053, birthday: { role: 'hard', probes: 512 } });
    assert.equal('birthday' in (JSON.parse(formatResult(base, 'json')) as object), false);
    const move = JSON.parse(formatPathChange({ path: 'direct', upstream: '198.51.100.6:9000', reason: 'upgrade', elapsedMs: 2000, birthday: { role: 'easy', probes: 131 } }, 'json')) as Record<string, unknown>;
    assert.deepEqual(move, { event: 'path', path: 'direct', upstream: '198.51.100.6:9000', reason: 'upgrade', elapsedMs: 2000, birthday: { role: 'easy', probes: 131 } });
    assert.match(humanLine(hard), /found by birthday probing on one of 512 sockets/);
    assert.match(formatPathChange({ path: 'direct', upstream: 'x:1', reason: 'upgrade', elapsedMs: 1, birthday: { role: 'easy', probes: 131 } }, 'text'), /after 131 probes/);
  });

  void it('checks --birthday-sockets and --birthday-ttl', async () => {
    assert.equal(birthdayOption(0, 2), false);
    assert.deepEqual(birthdayOption(512, 2), { sockets: 512, ttl: 2 });
    for (const [sockets, ttl] of [[10, 2], [2000, 2], [512, 0], [512, 65], [1.5, 2]] as const) assert.throws(() => birthdayOption(sockets, ttl));
    const r = await runCli(['punch', '--server', '127.0.0.1:3478', '--secret', 'x', '--as', 'a', '--to', 'b', '--birthday-sockets', '10']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--birthday-sockets 10 is out of range/);
    assert.match(r.stderr, /0 \(no birthday probing\) or 64-1024/);
  });
});
