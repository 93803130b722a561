/**
 * `burrow receive`: files and directory trees from a peer into a directory. It shows what is offered
 * and asks before accepting (`--yes` accepts without asking, and is required when stdin is not a
 * terminal). Each file appears under its name only once it is complete and its SHA-256 matches the
 * sender's; existing files are kept unless --force; an interrupted transfer resumes on the next run.
 * The logic is in src/transfer; this is the command-line glue.
 */
import { access, constants, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { connectStream } from '../node/tcp-punch.js';
import type { TransferSummary } from '../transfer/driver.js';
import { receiveFiles, type Incoming } from '../transfer/receive.js';
import { say, type Io } from './common.js';
import { parseCommand, usageError } from './parse.js';
import { formatBytes } from './progress.js';
import type { Parsed } from './schema.js';
import { connectPeer, describeSummary, pathJson, progressFor, summaryJson, type Connect } from './send.js';

/** The prompt reads its answer here; without a terminal, --yes is required. */
export interface ReceiveIo extends Io {
  readonly stdin?: NodeJS.ReadableStream & { isTTY?: boolean };
}

/** How many entries the offer lists before "… and N more". */
const LISTED = 20;

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

/** The offer as lines: each entry with its size, then the total. */
export function describeOffer(peer: string, outDir: string, incoming: Incoming): string[] {
  const lines = [`${peer} offers:`];
  for (const e of incoming.entries.slice(0, LISTED)) {
    const size = e.kind === 'file' ? formatBytes(e.size) : e.kind === 'stream' ? 'stream, size unknown' : 'directory';
    lines.push(`  ${e.kind === 'directory' ? `${e.path}/` : e.path}  (${size})`);
  }
  if (incoming.entries.length > LISTED) lines.push(`  … and ${incoming.entries.length - LISTED} more`);
  const files = incoming.entries.filter((e) => e.kind !== 'directory').length;
  const total = incoming.totalBytes === undefined ? 'size unknown (a stream)' : formatBytes(incoming.totalBytes);
  lines.push(`${files} file${files === 1 ? '' : 's'}, ${total}, into ${outDir}`);
  const complete = incoming.resumable.filter((r) => r.complete);
  if (complete.length > 0) lines.push(`${complete.length} file${complete.length === 1 ? ' is' : 's are'} already here in full (${formatBytes(complete.reduce((n, r) => n + r.bytes, 0))}); not sent again if identical`);
  for (const r of incoming.resumable) if (!r.complete) lines.push(`${r.path}: ${formatBytes(r.bytes)} already here from an interrupted run; resumes if it matches`);
  return lines;
}

export async function receiveCommand(parsed: Parsed<'receive'>, io: ReceiveIo, connect: Connect = connectStream): Promise<number> {
  const { values } = parsed;
  const peer = values.to;
  const yes = values.yes;
  const stdin = io.stdin;
  if (!yes && stdin?.isTTY !== true) {
    throw usageError('burrow receive asks before accepting files, but stdin is not a terminal', 'pass --yes to accept what the sender offers without asking');
  }
  const outDir = await checkOutDir(values.out);
  const { stream, result } = await connectPeer(parsed, io, connect);
  const progress = progressFor(io, 'received');
  const confirm = async (incoming: Incoming): Promise<boolean> => {
    for (const line of describeOffer(peer, outDir, incoming)) say(io, line);
    if (yes || stdin === undefined) return true;
    const rl = createInterface({ input: stdin, output: io.stderr, terminal: true });
    try {
      const answer = await rl.question('burrow: accept? [y/N] ', { signal: io.signal });
      return /^\s*y(es)?\s*$/i.test(answer);
    } catch {
      return false; // interrupted at the prompt: the abort signal ends the transfer
    } finally {
      rl.close();
    }
  };
  let summary: TransferSummary;
  try {
    summary = await receiveFiles(stream, { outDir, peer, force: values.force, confirm, signal: io.signal, onEvent: progress?.handle ?? (() => undefined) });
  } finally {
    progress?.stop();
  }
  const { what, how } = describeSummary(summary);
  if (values.format === 'json') io.stdout.write(summaryJson(summary, peer, { outDir, ...pathJson(result) }));
  say(io, `received ${what} from ${peer} into ${outDir} ${how}, each verified (SHA-256)`);
  return 0;
}

/** `burrow receive` from its words (for tests and embedders): parse, then run. */
export async function runReceive(argv: readonly string[], io: ReceiveIo, connect: Connect = connectStream): Promise<number> {
  const parsed = parseCommand('receive', argv, io.env);
  return parsed.help ? 0 : receiveCommand(parsed, io, connect);
}
