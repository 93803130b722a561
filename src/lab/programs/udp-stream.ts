/**
 * A steady datagram stream for lab tests of a handed-off path (issue 10's upgrade check): binds LOCAL_PORT, sends
 * numbered datagrams to the remote at a fixed rate for a fixed time, counts what arrives from exactly the remote, and
 * prints one JSON line `{"sent","received","duplicates","strangers","firstMs","lastMs","highest","missing"}` (`missing`: the
 * sequence numbers below the highest one received that never arrived, at most 200).
 *
 *   node udp-stream.js --port N --remote-address ADDR --remote-port N [--rate 20] [--duration-ms 10000] [--linger-ms 1500]
 *
 * Bounded: rate × duration datagrams at most (rate ≤ 1000, duration ≤ 120 s). Exits 0 once done (2 on bad usage).
 */

import { createSocket } from 'node:dgram';
import { isIP, isIPv6 } from 'node:net';
import { parseArgs } from 'node:util';

const MAGIC = 'burrow-stream ';

function int(text: string | undefined, fallback: number, min: number, max: number): number | undefined {
  if (text === undefined) return fallback;
  const v = Number(text);
  return Number.isInteger(v) && v >= min && v <= max ? v : undefined;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      'remote-address': { type: 'string' },
      'remote-port': { type: 'string' },
      rate: { type: 'string' },
      'duration-ms': { type: 'string' },
      'linger-ms': { type: 'string' },
    },
    strict: true,
  });
  const port = int(values.port, 0, 1, 65535);
  const remotePort = int(values['remote-port'], 0, 1, 65535);
  const rate = int(values.rate, 20, 1, 1000);
  const durationMs = int(values['duration-ms'], 10_000, 1, 120_000);
  const lingerMs = int(values['linger-ms'], 1500, 0, 10_000);
  const remote = values['remote-address'];
  if (!port || !remotePort || rate === undefined || durationMs === undefined || lingerMs === undefined || remote === undefined || isIP(remote) === 0) {
    process.stderr.write('usage: udp-stream --port N --remote-address ADDR --remote-port N [--rate R] [--duration-ms D] [--linger-ms L]\n');
    process.exitCode = 2;
    return;
  }
  const socket = createSocket({ type: isIPv6(remote) ? 'udp6' : 'udp4' });
  const started = performance.now();
  const seen = new Set<number>();
  let sent = 0;
  let duplicates = 0;
  let strangers = 0;
  let firstMs: number | null = null;
  let lastMs: number | null = null;
  const total = Math.floor((rate * durationMs) / 1000);
  socket.on('error', () => undefined);
  socket.on('message', (data, rinfo) => {
    const text = data.toString('utf8');
    if (rinfo.address !== remote || rinfo.port !== remotePort || !text.startsWith(MAGIC)) {
      strangers++;
      return;
    }
    const seq = Number(text.slice(MAGIC.length));
    const now = Math.round(performance.now() - started);
    firstMs ??= now;
    lastMs = now;
    if (seen.has(seq)) duplicates++;
    else seen.add(seq);
  });
  socket.bind({ port, address: isIPv6(remote) ? '::' : '0.0.0.0', exclusive: true }, () => {
    const ticker = setInterval(() => {
      if (sent >= total) {
        clearInterval(ticker);
        setTimeout(() => {
          const highest = seen.size > 0 ? Math.max(...seen) : -1;
          const missing: number[] = [];
          for (let i = 0; i < highest && missing.length < 200; i++) if (!seen.has(i)) missing.push(i);
          process.stdout.write(`${JSON.stringify({ sent, received: seen.size, duplicates, strangers, firstMs, lastMs, highest, missing })}\n`);
          socket.close();
        }, lingerMs);
        return;
      }
      socket.send(`${MAGIC}${sent}`, remotePort, remote, () => undefined);
      sent++;
    }, 1000 / rate);
  });
}

main();
