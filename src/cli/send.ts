/**
 * `burrow send FILE|DIR|-...`: files, directory trees or stdin to a peer over a punched, encrypted TCP
 * stream. Exits 0 only once the receiver has verified (SHA-256) every file and has it in place. The
 * logic is in src/transfer; this is the command-line glue.
 */
import { parseArgs } from 'node:util';
import { BurrowError } from '../errors.js';
import { connectStream, type StreamConnection, type StreamConnectOptions } from '../node/tcp-punch.js';
import type { TransferSummary } from '../transfer/driver.js';
import { prepareSend, sendEntries } from '../transfer/send.js';
import { checkConnectFlags, CONNECT_FLAGS, resolveSecrets, say, type ConnectFlags, type Io } from './common.js';
import { formatBytes, formatDuration, formatRate, ProgressReporter } from './progress.js';
import { humanLine } from './punch.js';

export const SEND_USAGE = 'burrow send FILE|DIR|-... [--name NAME] --server HOST:PORT --secret-file FILE --as NAME --to NAME [--timeout SECONDS]';

/** How a command gets its stream: connectStream, or a loopback pair in tests. */
export type Connect = (options: StreamConnectOptions) => Promise<StreamConnection>;

/** `send -` reads this. */
export interface SendIo extends Io {
  readonly stdin?: NodeJS.ReadableStream;
}

/** Resolves the secret, connects to the peer and says how. */
export async function connectPeer(values: ConnectFlags, io: Io, connect: Connect): Promise<StreamConnection> {
  const { server, name, peer, timeoutMs } = checkConnectFlags(values);
  const [secret] = await resolveSecrets(io, values);
  say(io, `waiting for "${peer}" through ${server} (up to ${formatDuration(timeoutMs / 1000)})`);
  const connection = await connect({ server, secret: secret ?? '', name, peer, timeoutMs, signal: io.signal });
  say(io, humanLine(connection.result));
  return connection;
}

/** "3 files in 1 directory (1.0 GiB)" and "in 8.2 s (125.3 MiB/s)", plus what a resume saved. */
export function describeSummary(s: TransferSummary): { what: string; how: string } {
  const n = s.files.length;
  const dirs = s.directories > 0 ? ` in ${s.directories} director${s.directories === 1 ? 'y' : 'ies'}` : '';
  const rate = s.elapsedMs > 0 ? ` (${formatRate((s.sentBytes * 1000) / s.elapsedMs)})` : '';
  const resumed = s.resumedBytes > 0 ? `; ${formatBytes(s.resumedBytes)} were already there from an interrupted run and were not sent again` : '';
  return {
    what: `${n} file${n === 1 ? '' : 's'}${dirs} (${formatBytes(s.bytes)})`,
    how: `in ${formatDuration(s.elapsedMs / 1000)}${rate}${resumed}`,
  };
}

export async function runSend(argv: string[], io: SendIo, connect: Connect = connectStream): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { ...CONNECT_FLAGS, name: { type: 'string' } }, allowPositionals: true, strict: true });
  const { peer } = checkConnectFlags(values);
  if (values.name !== undefined && !positionals.includes('-')) throw BurrowError.usage('--name names what is read from stdin; give - among the files', 'e.g. tar cf - dir | burrow send - --name dir.tar ...');
  const prepared = await prepareSend(positionals, { ...(io.stdin !== undefined ? { stdin: io.stdin } : {}), ...(values.name !== undefined ? { stdinName: values.name } : {}) });
  for (const s of prepared.skipped) say(io, `skipping ${s.source}: ${s.why}`);
  const { stream } = await connectPeer(values, io, connect);
  const progress = new ProgressReporter({ stream: io.stderr, verb: 'sent' });
  let summary: TransferSummary;
  try {
    summary = await sendEntries(stream, { entries: prepared.entries, peer, signal: io.signal, onEvent: progress.handle });
  } finally {
    progress.stop();
  }
  const { what, how } = describeSummary(summary);
  say(io, `sent ${what} to ${peer} ${how}; ${peer} verified each (SHA-256) and has it in place`);
  return 0;
}
