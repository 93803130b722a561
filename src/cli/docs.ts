/**
 * The README's generated sections, from the same declarations as the CLI: the command reference (schema),
 * secrets and environment (help.ts), the exit codes (exit-codes.ts), and quotes of deploy/ files. Each
 * sits between `<!-- BEGIN generated:NAME -->` and `<!-- END generated:NAME -->`; `npm run docs`
 * rewrites them and test/cli/readme.test.ts fails when the README differs.
 */
import { readFileSync } from 'node:fs';
import { EXIT_CODES, HANDOFF_NOTE } from './exit-codes.js';
import { ENVIRONMENT, ORDER, SECRET_PRECEDENCE } from './help.js';
import { flagNotes, flagsOf } from './parse.js';
import { COMMANDS, type CommandSpec, type FlagSpec } from './schema.js';

function cell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

function flagCell(name: string, flag: FlagSpec): string {
  const value = flag.value === undefined ? '' : flag.optionalValue === true ? ` [${flag.value}]` : ` ${flag.value}`;
  const negated = flag.negatedHelp !== undefined ? `, \`--no-${name}\`` : '';
  return `${flag.short !== undefined ? `\`-${flag.short}\`, ` : ''}\`--${name}${value}\`${negated}`;
}

function synopsis(spec: CommandSpec): string {
  const parts = [`burrow ${spec.name}`];
  for (const [name, flag] of Object.entries(spec.flags)) {
    const term = `--${name}${flag.value === undefined ? '' : flag.optionalValue === true ? ` [${flag.value}]` : ` ${flag.value}`}`;
    parts.push(flag.required === true ? term : `[${term}]`);
  }
  if (spec.args !== undefined) parts.push(spec.args);
  if (spec.handoff === true) parts.push('[-- COMMAND ARGS...]');
  return parts.join(' ');
}

export function commandReference(): string {
  const out: string[] = [];
  for (const name of ORDER) {
    const spec: CommandSpec = COMMANDS[name];
    out.push(`#### \`burrow ${name}\``, '', `${spec.summary}.${spec.description ? ` ${spec.description.join(' ')}` : ''}`, '');
    out.push('```', synopsis(spec), '```', '');
    const flags = flagsOf(spec);
    out.push('| flag | meaning |', '|---|---|');
    for (const [flagName, flag] of flags) {
      const notes = flagNotes(flag);
      out.push(`| ${flagCell(flagName, flag)} | ${cell(flag.help)}${notes.length > 0 ? ` (${cell(notes.join('; '))})` : ''}${flag.negatedHelp !== undefined ? `; \`--no-${flagName}\`: ${cell(flag.negatedHelp)}` : ''} |`);
    }
    out.push('| `-h`, `--help` | show the help and do nothing else |', '');
  }
  return out.join('\n');
}

export function exitCodeTable(): string {
  const rows = EXIT_CODES.map((r) => `| ${r.exit} | ${cell(r.meaning)}${r.commands ? ` (${r.commands.join(', ')})` : ''} | ${r.codes.map((c) => `\`${c}\``).join(', ')} |`);
  return ['| exit | meaning | `code` in `--format json` errors |', '|---|---|---|', ...rows, '', HANDOFF_NOTE, ''].join('\n');
}

export function secretsSection(): string {
  return [SECRET_PRECEDENCE, '', '| variable | meaning |', '|---|---|', ...ENVIRONMENT.map(([k, v]) => `| \`${k}\` | ${cell(v)} |`), ''].join('\n');
}

/** A deploy/ file, quoted whole in a fenced block. */
export function quoteFile(root: string, path: string, lang: string): string {
  const text = readFileSync(`${root}/${path}`, 'utf8');
  return [`[${path}](${path}):`, '', `\`\`\`${lang}`, text.trimEnd(), '```', ''].join('\n');
}

/** Every generated block of the README: name → content. */
export function generatedBlocks(root: string): Map<string, string> {
  return new Map([
    ['commands', commandReference()],
    ['exit-codes', exitCodeTable()],
    ['secrets', secretsSection()],
    ['deploy/burrow-wg@.service', quoteFile(root, 'deploy/burrow-wg@.service', 'ini')],
  ]);
}

const BLOCK = /<!-- BEGIN generated:([^ ]+) -->\n([\s\S]*?)<!-- END generated:\1 -->/g;

/** The README with every generated block replaced by its current content; throws on a missing block. */
export function renderReadme(readme: string, root: string): string {
  const blocks = generatedBlocks(root);
  const seen = new Set<string>();
  const out = readme.replace(BLOCK, (_, name: string) => {
    const content = blocks.get(name);
    if (content === undefined) throw new Error(`README has an unknown generated block "${name}"`);
    seen.add(name);
    return `<!-- BEGIN generated:${name} -->\n${content}<!-- END generated:${name} -->`;
  });
  for (const name of blocks.keys()) if (!seen.has(name)) throw new Error(`README lacks the generated block "${name}"`);
  return out;
}
