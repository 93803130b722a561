/**
 * Punching under loss (issue 5): with 30% random loss on both routers (nftables `numgen random`, so every packet
 * between a peer and the server or the other peer crosses one or two lossy hops), a punch between two port-restricted
 * NATs succeeds in at least 38 of 40 runs within a 10 s timeout. One lab serves all 40 runs (conntrack flushed
 * between runs); the distribution of time to connect goes to the test output. `npm run bench:loss` prints the same.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { distribution, runLossTrials } from '../support/lossy-punch.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';

const RUNS = 40;
const REQUIRED = 38;

describe('punch under 30% packet loss (lab)', { skip: labSkip }, () => {
  before(() => {
    assertLabAvailable();
  });

  it(`port-restricted ↔ port-restricted with 30% loss on both routers connects in ≥ ${REQUIRED} of ${RUNS} runs within 10 s`, async (t) => {
    const trials = await runLossTrials({ runs: RUNS, lossPercent: 30, timeoutSeconds: 10 });
    await assertNothingLeft(trials.runId);
    const times = trials.runs.flatMap((r) => (r.connectMs === undefined ? [] : [r.connectMs]));
    t.diagnostic(`connected in ${trials.connected} of ${RUNS} runs; time to connect (the later peer's elapsedMs): ${distribution(times)}`);
    for (const r of trials.runs.filter((x) => !x.connected)) t.diagnostic(`run ${r.index} failed: ${r.detail}`);
    assert.ok(trials.connected >= REQUIRED, `only ${trials.connected} of ${RUNS} runs connected`);
    assert.ok(times.every((ms) => ms <= 10_000));
  });
});
