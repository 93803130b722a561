/**
 * Birthday-paradox probing across kernel NATs (issue 11), `masquerade random` as the symmetric NAT. Datagrams are
 * counted per datagram on the routers with tcpdump (src/lab/birthday.ts):
 * - port-restricted ↔ symmetric with --relay never connects directly by birthday probing, either side first, and the
 *   handoff holds (a program bound to $BURROW_LOCAL_PORT on each side exchanges datagrams); at most 1,100 datagrams
 *   go toward the symmetric side's IP per attempt, at most 250 in any second;
 * - with the relay on, the path in use at the end (after the upgrade, if the relay came first) is direct;
 * - symmetric ↔ symmetric does not spray: each side sends at most 50 datagrams to the other's public IP, and the relay
 *   carries the pair.
 * The 20-run figures come from `npm run bench:birthday`.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { runBirthdayRuns, type BirthdayRun } from '../../src/lab/birthday.js';
import { assertLabAvailable, labSkip } from './gate.js';

function context(r: BirthdayRun): string {
  return `alice: ${JSON.stringify({ ...r.a, stderr: undefined })}\n${r.a.stderr.slice(-2500)}\nbob: ${JSON.stringify({ ...r.b, stderr: undefined })}\n${r.b.stderr.slice(-2500)}`;
}

void describe('birthday probing across kernel NATs', { skip: labSkip }, () => {
  before(assertLabAvailable);

  void it('port-restricted ↔ symmetric with --relay never: direct by birthday probing, either side first; the handoff holds; the probe budget holds on the router', async (t) => {
    const runs = await runBirthdayRuns({ a: 'port-restricted', b: 'symmetric', first: 'alternate', runs: 2, relay: 'never', timeoutSeconds: 10 });
    for (const r of runs) {
      const c = context(r);
      assert.ok(r.direct, `not direct by birthday probing (${r.first} first)\n${c}`);
      assert.equal(r.a.result?.birthday?.role, 'easy', c);
      assert.equal(r.b.result?.birthday?.role, 'hard', c);
      assert.equal(r.b.result.birthday.probes, 512, c);
      assert.ok(r.probes !== undefined && r.probes >= 1 && r.probes <= 1000, c);
      assert.ok(r.towardHard && r.towardHard.total <= 1100, `${r.towardHard?.total} datagrams toward the symmetric side\n${c}`);
      assert.ok(r.towardHard.maxPerSecond <= 250, `${r.towardHard.maxPerSecond} in one second\n${c}`);
      assert.ok(r.towardHard.total >= r.probes, `the router saw fewer datagrams (${r.towardHard.total}) than the probes reported (${r.probes})\n${c}`);
      t.diagnostic(`${r.first === 'a' ? 'port-restricted' : 'symmetric'} first: direct after ${r.connectMs} ms, ${r.probes} probes, ${r.towardHard.total} datagrams toward the symmetric side (${r.towardHard.maxPerSecond} in the busiest second)`);
    }
  });

  void it('port-restricted ↔ symmetric with the relay on: the path in use at the end is direct (found by birthday probing), and a stream through $BURROW_LOCAL_PORT flows to the end', async (t) => {
    const stream = { rate: 20, durationMs: 6000 };
    const [r] = await runBirthdayRuns({ a: 'port-restricted', b: 'symmetric', first: 'b', runs: 1, relay: 'auto', timeoutSeconds: 20, stream });
    assert.ok(r);
    const c = context(r);
    assert.ok(r.direct, c);
    assert.equal(r.a.exit, 0, c);
    assert.equal(r.b.exit, 0, c);
    for (const [sender, receiver] of [[r.a, r.b], [r.b, r.a]] as const) {
      assert.ok(sender.stream && receiver.stream, c);
      assert.equal(sender.stream.sent, (stream.rate * stream.durationMs) / 1000, c);
      // The last datagrams (sent seconds after the move to the birthday path) arrived: data flows on it. The first
      // second is left out (the two programs start some hundred ms apart).
      assert.equal(receiver.stream.highest, sender.stream.sent - 1, c);
      const lost = receiver.stream.missing.filter((seq) => seq >= stream.rate).length;
      assert.ok(lost <= 3, `${lost} lost after the first second\n${c}`);
    }
    assert.ok(r.towardHard && r.towardHard.total <= 1100 && r.towardHard.maxPerSecond <= 250, c);
    t.diagnostic(`first result: alice ${r.a.result?.path}, bob ${r.b.result?.path}; direct after ${r.connectMs} ms; received ${r.a.stream?.received}/${r.b.stream?.sent} and ${r.b.stream?.received}/${r.a.stream?.sent}`);
  });

  void it('symmetric ↔ symmetric: no spraying (≤ 50 datagrams to the other side\'s public IP each), the relay carries the pair', async (t) => {
    const [r] = await runBirthdayRuns({ a: 'symmetric', b: 'symmetric', first: 'a', runs: 1, relay: 'auto', timeoutSeconds: 10, settleMs: 5000 });
    assert.ok(r);
    const c = context(r);
    assert.equal(r.a.result?.path, 'relay', c);
    assert.equal(r.b.result?.path, 'relay', c);
    assert.ok(r.sprayed && r.sprayed.a <= 50 && r.sprayed.b <= 50, `sent ${JSON.stringify(r.sprayed)}\n${c}`);
    assert.doesNotMatch(r.a.stderr + r.b.stderr, /birthday attempt/, c);
    t.diagnostic(`datagrams to the other side's public IP: alice ${r.sprayed.a}, bob ${r.sprayed.b}`);
  });
});
