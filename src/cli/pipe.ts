/**
 * `burrow pipe`: ncat semantics over an encrypted TCP stream punched through the NATs. stdin goes to
 * the peer, the peer's bytes go to stdout; EOF on stdin half-closes, and the process exits 0 only once
 * the peer has confirmed it wrote out every byte we sent and we wrote out every byte it sent.
 */
import { parseArgs } from 'node:util';
import { BurrowError } from '../errors.js';
import { connectStream } from '../node/tcp-punch.js';
import { humanLine } from './punch.js';
import { checkConnectFlags, CONNECT_FLAGS, resolveSecrets, say, type Io } from './common.js';

export const PIPE_USAGE = `burrow pipe --server HOST:PORT --secret-file FILE --as NAME --to NAME
            [--send-only | --recv-only] [--timeout SECONDS] [--local [ADDR:]PORT] [--quiet]`;

export interface PipeIo extends Io {
  readonly stdin: NodeJS.ReadableStream;
}

export async function runPipe(argv: string[], io: PipeIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...CONNECT_FLAGS,
      local: { type: 'string' },
      'send-only': { type: 'boolean' },
      'recv-only': { type: 'boolean' },
      quiet: { type: 'boolean', short: 'q' },
    },
    strict: true,
  });
  const { server, name, peer, timeoutMs } = checkConnectFlags(values);
  if (values['send-only'] === true && values['recv-only'] === true) throw BurrowError.usage('--send-only and --recv-only exclude each other');
  const [secret] = await resolveSecrets(io, values);
  const quiet = values.quiet === true;
  const { stream, result } = await connectStream({
    server,
    secret: secret ?? '',
    name,
    peer,
    timeoutMs,
    signal: io.signal,
    ...(values.local !== undefined ? { local: values.local } : {}),
    onEvent: (e) => {
      if (!quiet && e.type === 'introduced') say(io, `found ${e.peer}; connecting over TCP`);
    },
  });
  if (!quiet) say(io, `${humanLine(result)} (TCP, encrypted with ${stream.cipher})`);

  const sendDone = new Promise<void>((resolve, reject) => {
    stream.once('finish', resolve);
    stream.once('error', reject);
  });
  const receiveDone = new Promise<void>((resolve, reject) => {
    stream.once('error', reject);
    stream.on('data', (chunk: Buffer) => {
      if (values['send-only'] !== true && !io.stdout.write(chunk)) {
        stream.pause();
        io.stdout.once('drain', () => stream.resume());
      }
    });
    stream.once('end', () => {
      // An empty write completes after everything written before it: then confirm delivery.
      io.stdout.write(Buffer.alloc(0), () => {
        stream.acknowledgeEnd();
        resolve();
      });
    });
  });
  if (values['recv-only'] === true) stream.end();
  else io.stdin.pipe(stream);
  const onAbort = (): void => {
    stream.destroy(BurrowError.aborted());
  };
  io.signal.addEventListener('abort', onAbort, { once: true });
  try {
    await Promise.all([sendDone, receiveDone]);
  } finally {
    io.signal.removeEventListener('abort', onAbort);
    io.stdin.unpipe(stream);
  }
  // Both directions are done: the stream closes itself once its transport has flushed.
  if (!stream.closed) await new Promise<void>((resolve) => stream.once('close', resolve));
  if (!quiet) say(io, `done: sent ${stream.bytesSent} bytes, received ${stream.bytesReceived} bytes, all confirmed`);
  return 0;
}
