/** `burrow help`: the overview and each command's help, generated from the schema and the exit-code table. */
import { EXIT_CODES, HANDOFF_NOTE } from './exit-codes.js';
import { commandHelp } from './parse.js';
import { COMMANDS, type CommandName, type CommandSpec } from './schema.js';

/** Where the secret comes from, in order: the same text in help and README. */
export const SECRET_PRECEDENCE =
  'The network secret comes from the first of: --secret-file FILE (its first non-empty line), --secret TEXT ' +
  '(discouraged: other users can read command lines), the file named by BURROW_SECRET_FILE, the secret in ' +
  'BURROW_SECRET. A flag beats the environment; whitespace around a secret is ignored; a secret shorter than ' +
  '16 bytes draws a warning. `serve` accepts every line of its file.';

export const ENVIRONMENT: readonly (readonly [string, string])[] = [
  ['BURROW_SERVER', 'the default for --server'],
  ['BURROW_SECRET_FILE', 'the default for --secret-file'],
  ['BURROW_SECRET', 'the secret itself, when neither flag nor BURROW_SECRET_FILE gives one'],
  ['BURROW_WG', 'the `wg` tool that `burrow wg` runs (default: wg on PATH)'],
];

/** The commands in the order help lists them. */
export const ORDER: readonly CommandName[] = ['punch', 'pipe', 'send', 'receive', 'wg', 'serve', 'stun', 'netcheck', 'keygen', 'demo', 'lab punch', 'lab matrix', 'version', 'help'];

function wrap(text: string, width: number, indent: string): string {
  const words = text.split(' ');
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line.length > 0 && line.length + 1 + w.length > width) {
      lines.push(line);
      line = w;
    } else line = line.length > 0 ? `${line} ${w}` : w;
  }
  if (line.length > 0) lines.push(line);
  return lines.map((l) => `${indent}${l}`).join('\n');
}

/** The exit codes a command can end with, as help lines. */
export function exitLines(spec: CommandSpec | undefined): string[] {
  const own = new Set<number>([0, 1, 2, ...(spec?.exits ?? []), 130, 143]);
  const rows = spec === undefined ? EXIT_CODES : EXIT_CODES.filter((r) => own.has(r.exit));
  const lines = rows.map((r) => `${String(r.exit).padStart(3)}  ${wrap(r.meaning, 90, '       ').trimStart()}`);
  if (spec === undefined || spec.handoff === true) lines.push(wrap(HANDOFF_NOTE, 95, '  ').trimStart());
  return lines;
}

export function helpOf(name: CommandName): string {
  return commandHelp(name, exitLines(COMMANDS[name]));
}

export function overview(version: string): string {
  const width = Math.max(...ORDER.map((n) => n.length));
  const commands = ORDER.map((n) => `  ${n.padEnd(width)}  ${COMMANDS[n].summary}`).join('\n');
  return `burrow ${version}: connect machines behind NATs through a rendezvous server

Usage: burrow COMMAND [options]
       burrow help COMMAND    (or burrow COMMAND --help): every flag of a command

Commands:
${commands}

Every command takes -q/--quiet (nothing on stderr but errors) and -h/--help (help only: it does nothing else).
With --format json, a command prints its result, or its error, as one JSON object on stdout:
{"error": {"code", "exitCode", "message", "hint", "details"}} (pipe: on stderr, as stdout carries the peer's
bytes); the error goes to stderr as text as well.

Secrets:
${wrap(SECRET_PRECEDENCE, 100, '  ')}

Environment:
${ENVIRONMENT.map(([k, v]) => `  ${k.padEnd(18)}  ${v}`).join('\n')}

Exit codes:
${exitLines(undefined).map((l) => `  ${l}`).join('\n')}
`;
}
