/**
 * Checks Burrow's handoff contract from one side: after `burrow punch` exited 0, a new UDP socket bound to the printed
 * local port can exchange datagrams with the printed remote address.
 *
 *   node handoff.js --port LOCAL_PORT --remote-address ADDR --remote-port PORT [--timeout-ms 3000] [--interval-ms 50]
 *                   [--hold-ms N [--path PATH] [--hold-path relay]]
 *
 * Binds 0.0.0.0:LOCAL_PORT (or [::] for an IPv6 remote) and sends a datagram to the remote every interval. It succeeds
 * when a datagram from exactly ADDR:PORT arrives. Each datagram says whether its sender has heard the other side, so the
 * program lingers until the other side has heard it too (or the time is up) and both ends of a test can succeed.
 * Prints one JSON line, `{"ok",…}`, and exits 0 on success, 1 on failure, 2 on bad usage. Bounded: at most
 * timeout/interval + 1 datagrams.
 *
 * `--hold-ms N` keeps the socket open N ms after success before exiting, so that Burrow (which stays on as the proxy of
 * a relayed path while the program runs) has time to move to a direct path; with `--path "$BURROW_PATH" --hold-path
 * relay` it holds only on a relayed path. Nothing is sent while holding.
 */

import { createSocket } from 'node:dgram';
import { isIP, isIPv6 } from 'node:net';
import { parseArgs } from 'node:util';

const MAGIC = 'burrow-handoff';

/** What the program prints as its last line (parsed by scenario.ts). */
export interface HandoffReport {
  readonly ok: boolean;
  /** A datagram from the remote arrived. */
  readonly heard: boolean;
  /** The remote said it had heard us. */
  readonly peerHeard: boolean;
  readonly sent: number;
  readonly received: number;
  /** Datagrams from any other source (ignored). */
  readonly strangers: number;
  readonly firstHeardMs: number | null;
  readonly elapsedMs: number;
  readonly error?: string;
}

function finish(report: HandoffReport): void {
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exitCode = report.ok ? 0 : 1;
}

function usage(message: string): void {
  process.stderr.write(`handoff: ${message}\nusage: handoff --port N --remote-address ADDR --remote-port N [--timeout-ms N] [--interval-ms N]\n`);
  process.exitCode = 2;
}

function integer(text: string | undefined, fallback: number | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return fallback;
  const value = Number(text);
  return Number.isInteger(value) && value >= min && value <= max ? value : undefined;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      'remote-address': { type: 'string' },
      'remote-port': { type: 'string' },
      'timeout-ms': { type: 'string' },
      'interval-ms': { type: 'string' },
      'hold-ms': { type: 'string' },
      path: { type: 'string' },
      'hold-path': { type: 'string' },
    },
    strict: true,
  });
  const port = integer(values.port, undefined, 1, 65535);
  const remotePort = integer(values['remote-port'], undefined, 1, 65535);
  const timeoutMs = integer(values['timeout-ms'], 3_000, 1, 60_000);
  const intervalMs = integer(values['interval-ms'], 50, 1, 10_000);
  const remoteAddress = values['remote-address'];
  const holdMs = integer(values['hold-ms'], 0, 0, 60_000);
  if (port === undefined || remotePort === undefined || timeoutMs === undefined || intervalMs === undefined || holdMs === undefined) {
    usage('--port and --remote-port must be ports, --timeout-ms and --interval-ms positive integers, --hold-ms 0-60000');
    return;
  }
  if (remoteAddress === undefined || isIP(remoteAddress) === 0) {
    usage('--remote-address must be an IP address');
    return;
  }

  const v6 = isIPv6(remoteAddress);
  const socket = createSocket({ type: v6 ? 'udp6' : 'udp4' });
  const started = performance.now();
  let heard = false;
  let peerHeard = false;
  let sent = 0;
  let received = 0;
  let strangers = 0;
  let firstHeardMs: number | null = null;
  let done = false;
  let ticker: NodeJS.Timeout | undefined;

  const hold = values['hold-path'] === undefined || values['hold-path'] === values.path ? holdMs : 0;
  const stop = (error?: string): void => {
    if (done) return;
    done = true;
    clearInterval(ticker);
    clearTimeout(deadline);
    const elapsedMs = Math.round(performance.now() - started);
    const close = (): void => {
      socket.close();
      finish({ ok: heard, heard, peerHeard, sent, received, strangers, firstHeardMs, elapsedMs, ...(error === undefined ? {} : { error }) });
    };
    if (!heard || error !== undefined) {
      close();
      return;
    }
    // A last "heard" for the other side, which may still be waiting for it; the socket closes once it is out, as
    // closing at once could discard it.
    sent++;
    socket.send(`${MAGIC} heard=1`, remotePort, remoteAddress, () => {
      if (hold > 0) setTimeout(close, hold);
      else close();
    });
  };
  const send = (): void => {
    if (done) return;
    sent++;
    // With a callback, send errors (an ICMP-unreachable remote) come here instead of ending the check early; the
    // outcome is judged by what arrives.
    socket.send(`${MAGIC} heard=${heard ? 1 : 0}`, remotePort, remoteAddress, () => undefined);
  };

  socket.on('error', (err) => {
    stop(err.message);
  });
  socket.on('message', (data, rinfo) => {
    if (done) return;
    const text = data.toString('utf8');
    if (rinfo.address !== remoteAddress || rinfo.port !== remotePort || !text.startsWith(MAGIC)) {
      strangers++;
      return;
    }
    received++;
    if (!heard) {
      heard = true;
      firstHeardMs = Math.round(performance.now() - started);
      send(); // tell the other side at once
    }
    if (text.endsWith('heard=1')) peerHeard = true;
    if (peerHeard) stop();
  });
  const deadline = setTimeout(stop, timeoutMs);
  // Sending before the bind completes would bind a random port instead of the punched one.
  socket.bind({ port, address: v6 ? '::' : '0.0.0.0', exclusive: true }, () => {
    send();
    ticker = setInterval(send, intervalMs);
  });
}

try {
  main();
} catch (err) {
  usage(err instanceof Error ? err.message : String(err));
}
