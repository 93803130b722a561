/**
 * `burrow receive`: files from a peer into a directory. Each file appears under its name only once it
 * is complete and its SHA-256 matches the sender's; existing files are kept unless --force.
 */
import { access, constants, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { connectStream } from '../node/tcp-punch.js';
import { receiveFiles } from '../transfer/receive.js';
import type { TransferSummary } from '../transfer/driver.js';
import { say, type Io } from './common.js';
import { parseCommand, usageError } from './parse.js';
import type { Parsed } from './schema.js';
import { connectPeer, describeSummary, progressFor, summaryJson, type Connect } from './send.js';

async function checkOutDir(dir: string): Promise<string> {
  const path = resolve(dir);
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(path)).isDirectory();
  } catch {
    throw usageError(`--out "${dir}" does not exist`, 'create it first, or pass an existing directory');
  }
  if (!isDirectory) throw usageError(`--out "${dir}" is not a directory`, 'pass the directory to receive into');
  try {
    await access(path, constants.W_OK | constants.X_OK);
  } catch {
    throw usageError(`cannot write into --out "${dir}": permission denied`, 'pass a directory you may write to');
  }
  return path;
}

export async function receiveCommand(parsed: Parsed<'receive'>, io: Io, connect: Connect = connectStream): Promise<number> {
  const { values } = parsed;
  const peer = values.to;
  const outDir = await checkOutDir(values.out);
  const { stream } = await connectPeer(parsed, io, connect);
  const progress = progressFor(io, 'received');
  let summary: TransferSummary;
  try {
    summary = await receiveFiles(stream, { outDir, peer, force: values.force, signal: io.signal, onEvent: progress?.handle ?? (() => undefined) });
  } finally {
    progress?.stop();
  }
  const { what, how } = describeSummary(summary);
  if (values.format === 'json') io.stdout.write(summaryJson(summary, peer, { outDir }));
  say(io, `received ${what} from ${peer} into ${outDir} ${how}, each verified (SHA-256)`);
  return 0;
}

/** `burrow receive` from its words (for tests and embedders): parse, then run. */
export async function runReceive(argv: readonly string[], io: Io, connect: Connect = connectStream): Promise<number> {
  const parsed = parseCommand('receive', argv, io.env);
  return parsed.help ? 0 : receiveCommand(parsed, io, connect);
}
