/**
 * The real rendezvous server (the library's `startServer`, real UDP and TCP sockets) in a process of its own, so that
 * tests can flood it, read its memory from /proc/PID/status and restart it. It prints one JSON line when listening
 * (`{"ready":true,"port":…,"alternatePort":…,"pid":…}`), then answers each `stats` line on stdin with one JSON line
 * of counters, table sizes and its own memory figures (after a collection, with --expose-gc), and each `count` line
 * with the number of datagrams it has handled (cheap, for pacing a flood). It stops on `quit`, on stdin EOF and on SIGTERM.
 *
 *   node server-process.js --listen 127.0.0.1:0 --secret TEXT [--limits JSON]
 */
import { createInterface } from 'node:readline';
import v8 from 'node:v8';
import { parseArgs } from 'node:util';
import { startServer } from '../../src/node/server.js';

const { values } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:0' },
    secret: { type: 'string' },
    limits: { type: 'string', default: '{}' },
  },
});
/** Exceptions the driver's guard caught: the core must never throw, so any is a bug. */
let internalErrors = 0;
const server = await startServer({
  onEvent: (e) => {
    if (e.type === 'rejected' && e.reason.startsWith('internal error')) internalErrors++;
  },
  listen: values.listen,
  secrets: [values.secret ?? ''],
  alternatePort: 0,
  limits: JSON.parse(values.limits) as Record<string, number>,
});
process.stdout.write(`${JSON.stringify({ ready: true, port: server.address.port, alternatePort: server.alternateAddress?.port ?? 0, pid: process.pid })}\n`);

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  lines.close();
  process.stdin.destroy();
  void server.close().then(() => {
    process.exitCode = 0;
  });
};
const lines = createInterface({ input: process.stdin });
process.on('SIGTERM', stop);
lines.on('line', (line) => {
  if (line === 'quit') {
    lines.close();
    return;
  }
  if (line === 'count') {
    process.stdout.write(`${JSON.stringify({ datagramsIn: server.stats.datagramsIn })}\n`);
    return;
  }
  if (line === 'stats') {
    // With --expose-gc, collect first, so that memory figures show what is live rather than what awaits collection.
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const m = process.memoryUsage();
    // The young generation: a nursery V8 grows with the allocation rate (up to 3 × --max-semi-space-size), not with state.
    const newSpace = v8.getHeapSpaceStatistics().filter((sp) => sp.space_name.startsWith('new')).reduce((n, sp) => n + sp.physical_space_size, 0);
    process.stdout.write(`${JSON.stringify({ stats: server.stats, state: server.state, internalErrors, rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, newSpace })}\n`);
  }
});
lines.on('close', stop);
