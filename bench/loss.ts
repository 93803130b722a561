/**
 * `npm run bench:loss`: how two peers behind port-restricted NATs connect under random packet loss, in the NAT lab
 * (root only). The same trials as test/lab/loss.test.ts: one lab, loss on both routers, real `burrow punch` processes,
 * conntrack flushed between runs.
 *
 *   node dist/bench/loss.js [--runs N] [--loss PERCENT] [--timeout SECONDS]
 */
import { parseArgs } from 'node:util';
import { labAvailable } from '../src/lab/topology.js';
import { distribution, runLossTrials } from '../test/support/lossy-punch.js';

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, loss: { type: 'string' }, timeout: { type: 'string' } } });
  const runs = Number(values.runs ?? '40');
  const loss = Number(values.loss ?? '30');
  const timeoutSeconds = Number(values.timeout ?? '10');
  if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(loss) || loss < 0 || loss > 100 || !(timeoutSeconds > 0)) {
    console.error('usage: node dist/bench/loss.js [--runs N] [--loss PERCENT] [--timeout SECONDS]');
    return 2;
  }
  const availability = labAvailable();
  if (!availability.ok) {
    console.error(`bench:loss runs in the NAT lab and cannot run here: ${availability.reason}. Run it as root on Linux.`);
    return 1;
  }
  console.log(`port-restricted ↔ port-restricted, ${loss}% loss on both routers, ${runs} runs, --timeout ${timeoutSeconds}`);
  const trials = await runLossTrials({
    runs,
    lossPercent: loss,
    timeoutSeconds,
    onRun: (r) => {
      console.log(`run ${String(r.index + 1).padStart(3)}: ${r.connected ? `connected in ${String(r.connectMs)} ms` : `failed: ${r.detail}`}`);
    },
  });
  const times = trials.runs.flatMap((r) => (r.connectMs === undefined ? [] : [r.connectMs]));
  console.log(`\nconnected: ${trials.connected}/${runs} (${((100 * trials.connected) / runs).toFixed(1)} %)`);
  console.log(`time to connect (the later peer's elapsedMs): ${distribution(times)}`);
  return 0;
}

process.exitCode = await main();
