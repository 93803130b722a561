/**
 * `burrow receive`: files from a peer into a directory. Each file appears under its name only once it
 * is complete and its SHA-256 matches the sender's; existing files are kept unless --force.
 */
import { access, constants, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { BurrowError } from '../errors.js';
import { connectStream } from '../node/tcp-punch.js';
import { ProgressReporter } from '../transfer/progress.js';
import { receiveFiles } from '../transfer/receive.js';
import type { TransferSummary } from '../transfer/driver.js';
import { say, type Io } from './common.js';
import { checkConnectFlags, CONNECT_FLAGS } from './common.js';
import { connectPeer, describeSummary, type Connect } from './send.js';

export const RECEIVE_USAGE = 'burrow receive --server HOST:PORT --secret-file FILE --as NAME --to NAME [--out DIR] [--force] [--timeout SECONDS]';

async function checkOutDir(dir: string): Promise<string> {
  const path = resolve(dir);
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(path)).isDirectory();
  } catch {
    throw BurrowError.usage(`--out "${dir}" does not exist`, 'create it first, or pass an existing directory.');
  }
  if (!isDirectory) throw BurrowError.usage(`--out "${dir}" is not a directory`, 'pass the directory to receive into.');
  try {
    await access(path, constants.W_OK | constants.X_OK);
  } catch {
    throw BurrowError.usage(`cannot write into --out "${dir}": permission denied`, 'pass a directory you may write to.');
  }
  return path;
}

export async function runReceive(argv: string[], io: Io, connect: Connect = connectStream): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { ...CONNECT_FLAGS, out: { type: 'string' }, force: { type: 'boolean' } },
    strict: true,
  });
  const { peer } = checkConnectFlags(values);
  const outDir = await checkOutDir(values.out ?? '.');
  const { stream } = await connectPeer(values, io, connect);
  const progress = new ProgressReporter({ stream: io.stderr, verb: 'received' });
  let summary: TransferSummary;
  try {
    summary = await receiveFiles(stream, { outDir, peer, force: values.force === true, signal: io.signal, onEvent: progress.handle });
  } finally {
    progress.stop();
  }
  const { what, how } = describeSummary(summary);
  say(io, `received ${what} from ${peer} into ${outDir} ${how}, each verified (SHA-256)`);
  return 0;
}
