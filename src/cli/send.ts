/**
 * `burrow send FILE|DIR|-...`: files, directory trees or stdin to a peer over a punched, encrypted TCP
 * stream. Exits 0 only once the receiver has verified (SHA-256) every file and has it in place. The
 * logic is in src/transfer; this is the command-line glue.
 */
import { endpointKey } from '../codec/address.js';
import { connectStream, type StreamConnection, type StreamConnectOptions, type StreamResult } from '../node/tcp-punch.js';
import type { TransferSummary } from '../transfer/driver.js';
import { prepareSend, sendEntries } from '../transfer/send.js';
import { failoverLine, ms, resolveSecrets, say, watchServer, type Io } from './common.js';
import { parseCommand, usageError } from './parse.js';
import { formatBytes, formatDuration, formatRate, ProgressReporter } from './progress.js';
import { humanLine } from './punch.js';
import type { Parsed } from './schema.js';

/** How a command gets its stream: connectStream, or a loopback pair in tests. */
export type Connect = (options: StreamConnectOptions) => Promise<StreamConnection>;

/** `send -` reads this. */
export interface SendIo extends Io {
  readonly stdin?: NodeJS.ReadableStream;
}

/** The values `send` and `receive` share with `punch`. */
type ConnectParsed = Parsed<'send'> | Parsed<'receive'>;

/** How a stream reached the peer, for people: directly (punch's line), or through the server's stream relay. */
export function streamLine(r: StreamResult): string {
  if (r.path !== 'relay') return humanLine({ localAddress: r.localAddress, localPort: r.localPort, remoteAddress: r.remoteAddress, remotePort: r.remotePort, path: r.path, elapsedMs: r.elapsedMs, peer: r.peer, transport: r.transport });
  return `connected to ${r.peer} through the stream relay at ${r.relay?.server ?? endpointKey({ address: r.remoteAddress, port: r.remotePort })} in ${r.elapsedMs} ms (it carries only ciphertext)`;
}

/** The progress line when the stream relay is opened. */
export function relayLine(server: string, mode: 'auto' | 'never' | 'only'): string {
  return mode === 'only' ? `connecting through the stream relay at ${server} (--relay only)`
    : `no direct TCP path yet; trying the stream relay at ${server} too`;
}

/** The path fields of a JSON result: `path`, and for a relayed stream the `relay` object (like punch's). */
export function pathJson(r: StreamResult): Record<string, unknown> {
  return { path: r.path, ...(r.path === 'relay' ? { relay: r.relay ?? null } : {}) };
}

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
      purpose: parsed.command,
      relay: values.relay,
      onRelay: (at) => {
        say(io, relayLine(at, values.relay));
      },
      onEvent: (e) => {
        if (e.type === 'registered') watch.answered();
        if (e.type === 'failover') say(io, failoverLine(e.from, e.to));
      },
    });
  } finally {
    watch.stop();
  }
  say(io, streamLine(connection.result));
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

/** `--format json`: the summary as one object on stdout. */
export function summaryJson(s: TransferSummary, peer: string, extra: Record<string, unknown> = {}): string {
  return `${JSON.stringify({ peer, ...extra, files: s.files, directories: s.directories, bytes: s.bytes, sentBytes: s.sentBytes, resumedBytes: s.resumedBytes, elapsedMs: s.elapsedMs })}\n`;
}

/** A progress reporter, or none with --quiet. */
export function progressFor(io: Io, verb: 'sent' | 'received'): ProgressReporter | undefined {
  return io.quiet === true ? undefined : new ProgressReporter({ stream: io.stderr, verb });
}

export async function sendCommand(parsed: Parsed<'send'>, io: SendIo, connect: Connect = connectStream): Promise<number> {
  const peer = parsed.values.to;
  const name = parsed.values.name;
  if (name !== undefined && !parsed.positionals.includes('-')) {
    throw usageError('--name names what is read from stdin; give - among the files', 'e.g. `tar cf - dir | burrow send - --name dir.tar ...`');
  }
  const prepared = await prepareSend([...parsed.positionals], { ...(io.stdin !== undefined ? { stdin: io.stdin } : {}), ...(name !== undefined ? { stdinName: name } : {}) });
  for (const s of prepared.skipped) say(io, `skipping ${s.source}: ${s.why}`);
  const { stream, result } = await connectPeer(parsed, io, connect);
  const progress = progressFor(io, 'sent');
  let summary: TransferSummary;
  try {
    summary = await sendEntries(stream, { entries: prepared.entries, peer, signal: io.signal, onEvent: progress?.handle ?? (() => undefined) });
  } finally {
    progress?.stop();
  }
  const { what, how } = describeSummary(summary);
  if (parsed.values.format === 'json') io.stdout.write(summaryJson(summary, peer, pathJson(result)));
  say(io, `sent ${what} to ${peer} ${how}; ${peer} verified each (SHA-256) and has it in place`);
  return 0;
}

/** `burrow send` from its words (for tests and embedders): parse, then run. */
export async function runSend(argv: readonly string[], io: SendIo, connect: Connect = connectStream): Promise<number> {
  const parsed = parseCommand('send', argv, io.env);
  return parsed.help ? 0 : sendCommand(parsed, io, connect);
}
