/**
 * `burrow send FILE...`: files to a peer over a punched, encrypted TCP stream. Exits 0 only once the
 * receiver has verified (SHA-256) every file and renamed it into place.
 */
import { parseArgs } from 'node:util';
import { connectStream, type StreamConnection, type StreamConnectOptions } from '../node/tcp-punch.js';
import type { TransferSummary } from '../transfer/driver.js';
import { formatBytes, formatDuration, formatRate, ProgressReporter } from '../transfer/progress.js';
import { prepareFiles, sendFiles } from '../transfer/send.js';
import { checkConnectFlags, CONNECT_FLAGS, resolveSecrets, say, type ConnectFlags, type Io } from './common.js';
import { humanLine } from './punch.js';

export const SEND_USAGE = 'burrow send FILE... --server HOST:PORT --secret-file FILE --as NAME --to NAME [--timeout SECONDS]';

/** How a command gets its stream: connectStream, or a loopback pair in tests. */
export type Connect = (options: StreamConnectOptions) => Promise<StreamConnection>;

/** The flags `send` and `receive` share with `punch`. */
/** Resolves the secret, connects to the peer and says how. */
export async function connectPeer(values: ConnectFlags, io: Io, connect: Connect): Promise<StreamConnection> {
  const { server, name, peer, timeoutMs } = checkConnectFlags(values);
  const [secret] = await resolveSecrets(io, values);
  say(io, `waiting for "${peer}" through ${server} (up to ${formatDuration(timeoutMs / 1000)})`);
  const connection = await connect({ server, secret: secret ?? '', name, peer, timeoutMs, signal: io.signal });
  say(io, humanLine(connection.result));
  return connection;
}

/** "3 files (1.0 GiB) ... in 8.2 s (125.3 MiB/s)" */
export function describeSummary(s: TransferSummary): { what: string; how: string } {
  const n = s.files.length;
  const rate = s.elapsedMs > 0 ? ` (${formatRate((s.bytes * 1000) / s.elapsedMs)})` : '';
  return {
    what: `${n} file${n === 1 ? '' : 's'} (${formatBytes(s.bytes)})`,
    how: `in ${formatDuration(s.elapsedMs / 1000)}${rate}`,
  };
}

export async function runSend(argv: string[], io: Io, connect: Connect = connectStream): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: CONNECT_FLAGS, allowPositionals: true, strict: true });
  const { peer } = checkConnectFlags(values);
  const files = await prepareFiles(positionals);
  const { stream } = await connectPeer(values, io, connect);
  const progress = new ProgressReporter({ stream: io.stderr, verb: 'sent' });
  let summary: TransferSummary;
  try {
    summary = await sendFiles(stream, { files, peer, signal: io.signal, onEvent: progress.handle });
  } finally {
    progress.stop();
  }
  const { what, how } = describeSummary(summary);
  say(io, `sent ${what} to ${peer} ${how}; ${peer} verified each (SHA-256) and has it in place`);
  return 0;
}
