/**
 * `burrow send FILE...`: files to a peer over a punched, encrypted TCP stream. Exits 0 only once the
 * receiver has verified (SHA-256) every file and renamed it into place.
 */
import { connectStream, type StreamConnection, type StreamConnectOptions } from '../node/tcp-punch.js';
import type { TransferSummary } from '../transfer/driver.js';
import { formatBytes, formatDuration, formatRate, ProgressReporter } from '../transfer/progress.js';
import { prepareFiles, sendFiles } from '../transfer/send.js';
import { ms, resolveSecrets, say, watchServer, type Io } from './common.js';
import { parseCommand } from './parse.js';
import { humanLine } from './punch.js';
import type { Parsed } from './schema.js';

/** How a command gets its stream: connectStream, or a loopback pair in tests. */
export type Connect = (options: StreamConnectOptions) => Promise<StreamConnection>;

/** The values `send` and `receive` share with `punch`. */
type ConnectParsed = Parsed<'send'> | Parsed<'receive'>;

/** Resolves the secret, connects to the peer and says how. */
export async function connectPeer(parsed: ConnectParsed, io: Io, connect: Connect): Promise<StreamConnection> {
  const { values } = parsed;
  const [secret] = await resolveSecrets(io, values, parsed.sources['secret-file'] === 'env');
  const timeoutMs = ms(values.timeout);
  say(io, `waiting for "${values.to}" through ${values.server} (up to ${formatDuration(timeoutMs / 1000)})`);
  const watch = watchServer(io, values.server, timeoutMs, 'TCP');
  let connection: StreamConnection;
  try {
    connection = await connect({
      server: values.server,
      secret: secret ?? '',
      name: values.as,
      peer: values.to,
      timeoutMs,
      signal: io.signal,
      onEvent: (e) => {
        if (e.type === 'registered') watch.answered();
      },
    });
  } finally {
    watch.stop();
  }
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

/** `--format json`: the summary as one object on stdout. */
export function summaryJson(s: TransferSummary, peer: string, extra: Record<string, string> = {}): string {
  return `${JSON.stringify({ peer, ...extra, files: s.files, bytes: s.bytes, elapsedMs: s.elapsedMs })}\n`;
}

/** A progress reporter, or none with --quiet. */
export function progressFor(io: Io, verb: 'sent' | 'received'): ProgressReporter | undefined {
  return io.quiet === true ? undefined : new ProgressReporter({ stream: io.stderr, verb });
}

export async function sendCommand(parsed: Parsed<'send'>, io: Io, connect: Connect = connectStream): Promise<number> {
  const peer = parsed.values.to;
  const files = await prepareFiles([...parsed.positionals]);
  const { stream } = await connectPeer(parsed, io, connect);
  const progress = progressFor(io, 'sent');
  let summary: TransferSummary;
  try {
    summary = await sendFiles(stream, { files, peer, signal: io.signal, onEvent: progress?.handle ?? (() => undefined) });
  } finally {
    progress?.stop();
  }
  const { what, how } = describeSummary(summary);
  if (parsed.values.format === 'json') io.stdout.write(summaryJson(summary, peer));
  say(io, `sent ${what} to ${peer} ${how}; ${peer} verified each (SHA-256) and has it in place`);
  return 0;
}

/** `burrow send` from its words (for tests and embedders): parse, then run. */
export async function runSend(argv: readonly string[], io: Io, connect: Connect = connectStream): Promise<number> {
  const parsed = parseCommand('send', argv, io.env);
  return parsed.help ? 0 : sendCommand(parsed, io, connect);
}
