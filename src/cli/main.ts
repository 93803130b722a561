#!/usr/bin/env node
/**
 * The `burrow` command: parses the command line against the schema (src/cli/schema.ts), runs the command,
 * and turns errors into the documented exit codes (src/cli/exit-codes.ts) and messages (src/cli/errors.ts).
 * Commands are loaded lazily so each starts only what it needs. The installed binary is this file
 * bundled with the punch, pipe, send, receive, stun, wg and keygen paths into one CommonJS file
 * (dist/src/cli/burrow.cjs, `npm run bundle`): Node's ESM loader costs several milliseconds per module on a
 * slow machine, and a punch should not wait for it. serve, demo and lab stay ES modules, imported on demand.
 */
import { readFileSync } from 'node:fs';
import type { Io } from './common.js';
import { describeError, formatErrorJson, formatErrorText, Interrupt, type ErrorContext } from './errors.js';
import { EXIT } from './exit-codes.js';
import { helpOf, overview } from './help.js';
import { parseCommand, usageError } from './parse.js';
import { COMMANDS, isCommandName, type CommandName, type Parsed } from './schema.js';

/** The CLI's streams; stdin is only read by commands that forward it. */
export interface MainIo extends Io {
  readonly stdin?: NodeJS.ReadableStream;
}

/** The version in package.json (read only when asked for). */
export function version(): string {
  const text = readFileSync(new URL('../../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

/** Words that ask for help or the version instead of a command. */
const HELP = new Set(['--help', '-h']);
const VERSION = new Set(['--version', '-V']);

function closest(word: string, names: readonly string[]): string | undefined {
  const distance = (a: string, b: string): number => {
    const d = Array.from({ length: b.length + 1 }, (_, i) => i);
    for (let i = 1; i <= a.length; i++) {
      let prev = d[0] ?? 0;
      d[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const tmp = d[j] ?? 0;
        d[j] = Math.min((d[j] ?? 0) + 1, (d[j - 1] ?? 0) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
        prev = tmp;
      }
    }
    return d[b.length] ?? Infinity;
  };
  const best = names.map((n) => [n, distance(word, n)] as const).sort((x, y) => x[1] - y[1])[0];
  return best !== undefined && best[1] <= 2 ? best[0] : undefined;
}

/** Resolves `lab punch` and `lab matrix` and checks the command name. */
function commandOf(first: string, rest: readonly string[]): { name: CommandName; args: readonly string[] } | { help: 'lab' } {
  if (first === 'lab') {
    const [sub, ...more] = rest;
    if (sub === undefined || HELP.has(sub)) return { help: 'lab' };
    if (sub !== 'punch' && sub !== 'matrix') throw usageError(`unknown lab command "${sub}"`, 'the lab has two commands: `burrow lab punch --help`, `burrow lab matrix --help`');
    return { name: sub === 'punch' ? 'lab punch' : 'lab matrix', args: more };
  }
  if (!isCommandName(first) || first.startsWith('lab ')) {
    const guess = closest(first, Object.keys(COMMANDS).map((n) => n.split(' ')[0] ?? n));
    throw usageError(`unknown command "${first}"`, guess !== undefined ? `did you mean \`burrow ${guess}\`? \`burrow help\` lists the commands` : '`burrow help` lists the commands');
  }
  return { name: first, args: rest };
}

/** `--format json` on the command line, looked for before parsing so that even a usage error comes as JSON. */
function wantsJson(argv: readonly string[]): boolean {
  const dash = argv.indexOf('--');
  const own = dash >= 0 ? argv.slice(0, dash) : argv;
  return own.some((a, i) => a === '--format=json' || (a === '--format' && own[i + 1] === 'json'));
}

export async function main(argv: readonly string[], io: MainIo): Promise<number> {
  const ctx: { command?: string; values?: Readonly<Record<string, unknown>>; json: boolean } = { json: false };
  try {
    const [first, ...rest] = argv;
    if (first === undefined) {
      io.stderr.write(overview(version()));
      return EXIT.USAGE;
    }
    if (HELP.has(first)) {
      io.stdout.write(overview(version()));
      return EXIT.OK;
    }
    if (VERSION.has(first) && rest.length === 0) {
      io.stdout.write(`burrow ${version()}\n`);
      return EXIT.OK;
    }
    const which = commandOf(first, rest);
    if ('help' in which) {
      io.stdout.write(
        `burrow lab: the NAT lab (root; checkout only)\n\nCommands:\n  lab punch   ${COMMANDS['lab punch'].summary}\n  lab matrix  ${COMMANDS['lab matrix'].summary}\n\n` +
          'Run `burrow lab punch --help` or `burrow lab matrix --help` for their flags.\n',
      );
      return rest.length === 0 ? EXIT.USAGE : EXIT.OK;
    }
    const { name, args } = which;
    ctx.command = name;
    ctx.json = 'format' in COMMANDS[name].flags && wantsJson(args);
    const parsed = parseCommand(name, args, io.env);
    if (parsed.help) {
      io.stdout.write(helpOf(name));
      return EXIT.OK;
    }
    ctx.values = parsed.values;
    ctx.json = (parsed.values as { format?: unknown }).format === 'json';
    const code = await run(parsed, { ...io, quiet: parsed.values.quiet });
    // A command cut short by a signal ends with 128+N, unless it stops that way by design (serve, wg --continuous)
    // or handed over to a command whose own status it passes on.
    const reason: unknown = io.signal.aborted ? io.signal.reason : undefined;
    if (code !== 0 && reason instanceof Interrupt && name !== 'serve' && name !== 'wg' && parsed.handoff === undefined) {
      return reason.signal === 'SIGINT' ? EXIT.SIGINT : EXIT.SIGTERM;
    }
    return code;
  } catch (err) {
    const reason: unknown = io.signal.aborted ? io.signal.reason : undefined;
    const errorCtx: ErrorContext = {
      ...(ctx.command !== undefined ? { command: ctx.command } : {}),
      ...(ctx.values !== undefined ? { values: ctx.values } : {}),
      ...(reason instanceof Interrupt ? { interrupted: reason.signal } : {}),
    };
    const e = describeError(err, errorCtx);
    // People read stderr; with --format json, scripts also get the error as one object on stdout (pipe: on
    // stderr, as its stdout carries the peer's bytes).
    io.stderr.write(formatErrorText(e));
    if (ctx.json) (ctx.command === 'pipe' ? io.stderr : io.stdout).write(formatErrorJson(e));
    return e.exitCode;
  }
}

async function run(parsed: Parsed<CommandName>, io: MainIo): Promise<number> {
  // Each command module is loaded only when it runs. `as` narrows the parsed values to the command's own.
  switch (parsed.command) {
    case 'help': {
      const [topic, sub] = parsed.positionals;
      if (topic === undefined) {
        io.stdout.write(overview(version()));
        return EXIT.OK;
      }
      const which = commandOf(topic, sub !== undefined ? [sub] : []);
      io.stdout.write('help' in which ? helpOf('lab punch') : helpOf(which.name));
      return EXIT.OK;
    }
    case 'version':
      io.stdout.write(`burrow ${version()}\n`);
      return EXIT.OK;
    case 'punch':
      return (await import('./punch.js')).punchCommand(parsed as Parsed<'punch'>, io);
    case 'pipe':
      return (await import('./pipe.js')).pipeCommand(parsed as Parsed<'pipe'>, { ...io, stdin: io.stdin ?? process.stdin });
    case 'send':
      return (await import('./send.js')).sendCommand(parsed as Parsed<'send'>, { ...io, stdin: io.stdin ?? process.stdin });
    case 'receive':
      return (await import('./receive.js')).receiveCommand(parsed as Parsed<'receive'>, { ...io, stdin: io.stdin ?? process.stdin });
    case 'wg':
      return (await import('./wg.js')).wgCommand(parsed as Parsed<'wg'>, io);
    case 'stun':
      return (await import('./stun.js')).stunCommand(parsed as Parsed<'stun'>, io);
    case 'netcheck':
      return (await import('./netcheck.js')).netcheckCommand(parsed as Parsed<'netcheck'>, io);
    case 'keygen':
      return (await import('./keygen.js')).keygenCommand(parsed as Parsed<'keygen'>, io);
    case 'serve':
      return (await import('./serve.js')).serveCommand(parsed as Parsed<'serve'>, io);
    case 'demo':
      return (await import('./demo.js')).demoCommand(parsed as Parsed<'demo'>, io);
    case 'lab punch':
      return (await (await import('./lab-loader.js')).loadLab()).labPunchCommand(parsed as Parsed<'lab punch'>, io);
    case 'lab matrix':
      return (await (await import('./lab-loader.js')).loadLab()).labMatrixCommand(parsed as Parsed<'lab matrix'>, io);
  }
}

// Run when executed as the `burrow` binary (not when imported by tests).
const invoked = process.argv[1] ?? '';
if (/(?:^|[\\/])(?:main\.js|burrow(?:\.cjs)?)$/.test(invoked)) {
  // Until main() returns, a drained event loop means something never finished: that is not success.
  process.exitCode = 1;
  const controller = new AbortController();
  const onSigint = (): void => {
    controller.abort(new Interrupt('SIGINT'));
  };
  const onSigterm = (): void => {
    controller.abort(new Interrupt('SIGTERM'));
  };
  process.once('SIGINT', onSigint);
  process.once('SIGTERM', onSigterm);
  void main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env, signal: controller.signal }).then((code) => {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    process.exitCode = code;
  });
}
