/**
 * `burrow pipe`: ncat semantics over an encrypted TCP stream punched through the NATs. stdin goes to
 * the peer, the peer's bytes go to stdout; EOF on stdin half-closes, and the process exits 0 only once
 * the peer has confirmed it wrote out every byte we sent and we wrote out every byte it sent.
 */
import type { Writable } from 'node:stream';
import { BurrowError } from '../errors.js';
import { connectStream } from '../node/tcp-punch.js';
import { pathJson, relayLine, streamLine } from './send.js';
import { failoverLine, ms, resolveSecrets, say, watchServer, type Io } from './common.js';
import type { Parsed } from './schema.js';

export interface PipeIo extends Io {
  readonly stdin: NodeJS.ReadableStream;
}

export async function pipeCommand(parsed: Parsed<'pipe'>, io: PipeIo): Promise<number> {
  const { values } = parsed;
  const [secret] = await resolveSecrets(io, values, parsed.sources['secret-file'] === 'env');
  const timeoutMs = ms(values.timeout);
  const watch = watchServer(io, values.server, timeoutMs, 'TCP');
  let connection;
  try {
    connection = await connectStream({
      server: values.server,
      secret: secret ?? '',
      name: values.as,
      peer: values.to,
      timeoutMs,
      signal: io.signal,
      purpose: 'pipe',
      relay: values.relay,
      onRelay: (at) => {
        say(io, relayLine(at, values.relay));
      },
      ...(values.local !== undefined ? { local: values.local } : {}),
      onEvent: (e) => {
        if (e.type === 'registered') watch.answered();
        if (e.type === 'introduced') say(io, `found ${e.peer}; connecting over TCP`);
        if (e.type === 'failover') say(io, failoverLine(e.from, e.to));
      },
    });
  } finally {
    watch.stop();
  }
  const { stream, result } = connection;
  const started = Date.now();
  say(io, `${streamLine(result)} (TCP, encrypted with ${stream.cipher})`);

  const sendDone = new Promise<void>((resolve, reject) => {
    stream.once('finish', resolve);
    stream.once('error', reject);
  });
  // The pieces of one record arrive in one tick: corked, they leave in one writev() (a pipe or a
  // file as stdout is written synchronously, so this is one system call per record instead of four).
  const out = io.stdout as NodeJS.WritableStream & Partial<Pick<Writable, 'cork' | 'uncork' | 'writableNeedDrain'>>;
  let corked = false;
  const flush = (): void => {
    corked = false;
    out.uncork?.();
    if (out.writableNeedDrain === true) {
      stream.pause();
      out.once('drain', () => stream.resume());
    }
  };
  const receiveDone = new Promise<void>((resolve, reject) => {
    stream.once('error', reject);
    stream.on('data', (chunk: Buffer) => {
      if (values['send-only']) return;
      if (out.cork === undefined) {
        if (!out.write(chunk)) {
          stream.pause();
          out.once('drain', () => stream.resume());
        }
        return;
      }
      if (!corked) {
        corked = true;
        out.cork();
        process.nextTick(flush);
      }
      out.write(chunk);
    });
    stream.once('end', () => {
      // An empty write completes after everything written before it: then confirm delivery.
      io.stdout.write(Buffer.alloc(0), () => {
        stream.acknowledgeEnd();
        resolve();
      });
    });
  });
  if (values['recv-only']) stream.end();
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
  if (values.format === 'json') {
    // stdout carries the peer's bytes: the summary goes to stderr, as one JSON object.
    io.stderr.write(`${JSON.stringify({ peer: result.peer, bytesSent: stream.bytesSent, bytesReceived: stream.bytesReceived, confirmed: true, ...pathJson(result), connectMs: result.elapsedMs, elapsedMs: Date.now() - started })}\n`);
  } else say(io, `done: sent ${stream.bytesSent} bytes, received ${stream.bytesReceived} bytes, all confirmed`);
  return 0;
}
