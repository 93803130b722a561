/**
 * Turns the declarations of src/cli/schema.ts into a commander parser per command, its `--help`, and typed,
 * validated values (flags, then their environment variables, then defaults). Usage errors are
 * BurrowErrors with code USAGE whose `details.hint` says what to do; nothing here prints or exits.
 */
import { Command, Option, type CommanderError } from 'commander';
import { normaliseAddress, parseHostPort } from '../codec/address.js';
import { BurrowError } from '../errors.js';
import { COMMANDS, COMMON_FLAGS, type CommandName, type CommandSpec, type FlagSpec, type Parsed } from './schema.js';

export const DEFAULT_PORT = 3478;

/** A usage error (exit 2) with the next step as its hint. */
export function usageError(message: string, hint: string, details: Record<string, string> = {}): BurrowError {
  return new BurrowError('USAGE', message, { details: { hint, ...details } });
}

export function helpHint(command: string): string {
  return `run \`burrow ${command} --help\` for the options`;
}

/** All flags of a command: its own and the common ones. */
export function flagsOf(spec: CommandSpec): [string, FlagSpec][] {
  return [...Object.entries(spec.flags), ...Object.entries(COMMON_FLAGS)];
}

/** `--server <HOST:PORT>` as commander wants it. */
function flagTerm(name: string, flag: FlagSpec): string {
  const long = `--${name}`;
  const value = flag.value === undefined ? '' : flag.optionalValue === true ? ` [${flag.value}]` : ` <${flag.value}>`;
  return `${flag.short !== undefined ? `-${flag.short}, ` : ''}${long}${value}`;
}

/** The help text of an option: its description, then default, choices and environment variable. */
export function flagNotes(flag: FlagSpec): string[] {
  const notes: string[] = [];
  if (flag.choices) notes.push(`one of ${flag.choices.join(', ')}`);
  if (flag.default !== undefined) notes.push(`default ${flag.default}`);
  if (flag.env !== undefined) notes.push(`env ${flag.env}`);
  if (flag.required === true) notes.push('required');
  return notes;
}

function usageLine(spec: CommandSpec): string {
  const required = flagsOf(spec).filter(([, f]) => f.required === true).map(([n, f]) => `--${n} ${f.value ?? ''}`.trim());
  const args = spec.args !== undefined ? ` ${spec.args}` : '';
  return `${[...required, '[options]'].join(' ')}${args}${spec.handoff === true ? ' [-- COMMAND ARGS...]' : ''}`;
}

interface Built {
  readonly command: Command;
  readonly options: Map<string, Option>;
}

function build(spec: CommandSpec, out: { help?: string; error?: string }): Built {
  const command = new Command(`burrow ${spec.name}`);
  const options = new Map<string, Option>();
  const envOf = new Map<Option, FlagSpec>();
  command
    .description(`${spec.summary}${spec.description ? `\n\n${spec.description.join(' ')}` : ''}`)
    .usage(usageLine(spec))
    .exitOverride()
    .allowExcessArguments(spec.args !== undefined && spec.args.endsWith('...'))
    .helpOption('-h, --help', 'show this help and do nothing else')
    .configureOutput({
      writeOut: (s) => (out.help = (out.help ?? '') + s),
      writeErr: (s) => (out.help = (out.help ?? '') + s),
      outputError: (s) => (out.error = s),
    })
    .configureHelp({
      helpWidth: 100,
      optionDescription: (option: Option) => {
        const flag = envOf.get(option);
        const notes = flag ? flagNotes(flag) : [];
        return `${option.description}${notes.length > 0 ? ` (${notes.join('; ')})` : ''}`;
      },
    });
  if (spec.args !== undefined) {
    const a = spec.args.replace(/\.\.\.$/, '');
    const optional = a.startsWith('[');
    const name = a.replace(/[[\]]/g, '');
    command.argument(optional ? `[${name}${spec.args.endsWith('...') ? '...' : ''}]` : `<${name}${spec.args.endsWith('...') ? '...' : ''}>`);
  }
  for (const [name, flag] of flagsOf(spec)) {
    const option = new Option(flagTerm(name, flag), flag.help);
    if (flag.conflicts) option.conflicts(flag.conflicts.map(camel));
    command.addOption(option);
    options.set(name, option);
    envOf.set(option, flag);
    if (flag.negatedHelp !== undefined) command.addOption(new Option(`--no-${name}`, flag.negatedHelp));
  }
  if (spec.handoff === true) command.addHelpText('after', '\nAfter --, COMMAND ARGS... run once connected (see above).');
  if (spec.checkoutOnly === true) command.addHelpText('after', '\nWorks from a source checkout only: the installed package does not ship the NAT lab.');
  return { command, options };
}

function camel(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The `--help` text of a command, exactly as `burrow COMMAND --help` prints it. */
export function commandHelp(name: CommandName, exitLines: readonly string[] = []): string {
  const out: { help?: string } = {};
  const { command } = build(COMMANDS[name], out);
  if (exitLines.length > 0) command.addHelpText('after', `\nExit codes:\n${exitLines.map((l) => `  ${l}`).join('\n')}`);
  command.outputHelp();
  return out.help ?? '';
}

export type ParseOutcome<C extends CommandName> = { readonly help: true } | ({ readonly help: false } & Parsed<C>);

/**
 * Parses `argv` (the words after the command name) for command `name`. Values come from the flags, then
 * from their environment variables, then from defaults; each is checked against its type.
 */
export function parseCommand<C extends CommandName>(name: C, argv: readonly string[], env: NodeJS.ProcessEnv): ParseOutcome<C> {
  const spec: CommandSpec = COMMANDS[name];
  const dash = spec.handoff === true ? argv.indexOf('--') : -1;
  const own = dash >= 0 ? argv.slice(0, dash) : [...argv];
  const handoff = dash >= 0 ? argv.slice(dash + 1) : undefined;
  const out: { help?: string; error?: string } = {};
  const { command, options } = build(spec, out);
  try {
    command.parse(own, { from: 'user' });
  } catch (err) {
    const e = err as CommanderError;
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help') return { help: true };
    const text = (out.error ?? e.message).trim().replace(/^error: /, '');
    throw usageError(text, helpHint(spec.name));
  }
  const raw = command.opts();
  const values: Record<string, unknown> = {};
  const sources: Record<string, 'flag' | 'env' | 'default'> = {};
  for (const [flagName, flag] of flagsOf(spec)) {
    const option = options.get(flagName);
    const given: unknown = option ? raw[option.attributeName()] : undefined;
    let value: unknown = given;
    let source: 'flag' | 'env' | 'default' | undefined = given === undefined ? undefined : 'flag';
    if (value === undefined && flag.env !== undefined) {
      const fromEnv = env[flag.env]?.trim();
      if (fromEnv !== undefined && fromEnv !== '') {
        value = fromEnv;
        source = 'env';
      }
    }
    if (value === undefined && flag.default !== undefined) {
      value = flag.default;
      source = 'default';
    }
    if (value === undefined) {
      if (flag.required === true) {
        const via = flag.env !== undefined ? ` (or set ${flag.env})` : '';
        throw usageError(`--${flagName}${flag.value !== undefined ? ` ${flag.value}` : ''} is required`, `give --${flagName}${via}; ${helpHint(spec.name)}`);
      }
      values[flagName] = flag.value === undefined ? false : undefined;
      continue;
    }
    if (source !== undefined) sources[flagName] = source;
    // A switch, `--tstun` alone (true) or `--no-alt-port` (false); otherwise a value to check.
    values[flagName] = value === true || value === false ? value : flag.value === undefined ? false : checkValue(flagName, flag, typeof value === 'string' ? value : JSON.stringify(value), source === 'env' ? flag.env : undefined);
  }
  if (dash >= 0 && (handoff ?? []).length === 0) {
    throw usageError('nothing follows --', 'give the command to run after --, e.g. `-- openvpn --config vpn.conf`');
  }
  return {
    help: false,
    command: name,
    values: values as Parsed<C>['values'],
    positionals: command.args,
    handoff,
    sources,
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Values.

function checkValue(name: string, flag: FlagSpec, text: string, envName: string | undefined): string | number {
  const what = envName !== undefined ? `${envName} (for --${name})` : `--${name}`;
  if (flag.choices && !flag.choices.includes(text)) {
    throw usageError(`${what} must be one of ${flag.choices.join(', ')}, not "${text}"`, `e.g. --${name} ${flag.choices[0] ?? ''}`);
  }
  switch (flag.type ?? 'string') {
    case 'string':
      return text;
    case 'seconds': {
      const n = Number(text);
      if (text === '' || !Number.isFinite(n) || n <= 0) throw usageError(`${what} "${text}" is not a positive number of seconds`, `e.g. --${name} 30 (fractions such as 0.5 work too)`);
      return n;
    }
    case 'number': {
      const n = Number(text);
      if (text === '' || !Number.isFinite(n) || n < 0) throw usageError(`${what} "${text}" is not a non-negative number`, `e.g. --${name} 0`);
      return n;
    }
    case 'count': {
      const n = Number(text);
      if (!/^\d+$/.test(text) || n < 1) throw usageError(`${what} "${text}" is not a whole number of 1 or more`, `e.g. --${name} 2`);
      return n;
    }
    case 'port': {
      const n = Number(text);
      if (!/^\d{1,5}$/.test(text) || n > 65535) throw usageError(`${what} "${text}" is not a port number (0–65535)`, `e.g. --${name} 3479`);
      return n;
    }
    case 'server':
      // Several servers of one deployment: HOST:PORT,HOST:PORT.
      for (const part of text.split(',')) checkServerAddress(what, part.trim());
      return text;
    case 'bind':
      checkBindAddress(what, text, name === 'metrics');
      return text;
  }
}

/** `::1:3478` is an IPv6 address without a port: suggest the bracketed form the user most likely meant. */
function ipv6Hint(text: string, defaultPort: number): string {
  const last = text.lastIndexOf(':');
  const head = text.slice(0, last);
  const tail = text.slice(last + 1);
  if (/^\d{1,5}$/.test(tail) && Number(tail) > 0 && Number(tail) <= 65535 && normaliseAddress(head) !== undefined) {
    return `write [${head}]:${tail} (an IPv6 address with a port goes in brackets)`;
  }
  return `write [${text}]:${defaultPort} (an IPv6 address with a port goes in brackets)`;
}

function unbracketedIPv6(text: string): boolean {
  return !text.startsWith('[') && text.split(':').length > 2;
}

/** HOST:PORT of a server to reach. */
export function checkServerAddress(what: string, text: string, defaultPort = DEFAULT_PORT): void {
  if (unbracketedIPv6(text)) throw usageError(`${what} "${text}" is ambiguous: an IPv6 address without brackets`, ipv6Hint(text, defaultPort));
  const parsed = parseHostPort(text, defaultPort);
  if (!parsed.ok) throw usageError(`${what} "${text}" is not HOST:PORT (${parsed.reason})`, 'e.g. rv.example.org:3478, 203.0.113.7:3478 or [2001:db8::7]:3478');
  if (parsed.host === '') throw usageError(`${what} "${text}" has no host`, `give the server's name or address, e.g. rv.example.org:${parsed.port}`);
  if (parsed.port === 0) throw usageError(`${what} "${text}": port 0 is not a port a server can listen on`, `give the server's port, e.g. ${parsed.host.includes(':') ? `[${parsed.host}]` : parsed.host}:${DEFAULT_PORT}`);
}

/** [ADDR:]PORT to bind or listen on: an IP literal (or nothing) and a port (0: any free port). */
export function checkBindAddress(what: string, text: string, needHost: boolean): void {
  if (unbracketedIPv6(text)) throw usageError(`${what} "${text}" is ambiguous: an IPv6 address without brackets`, ipv6Hint(text, DEFAULT_PORT));
  const example = needHost ? `e.g. ${what.startsWith('--') ? what : '--metrics'} 127.0.0.1:9464` : 'e.g. 0.0.0.0:3478, [::]:3478 or :3478';
  const parsed = parseHostPort(text);
  if (!parsed.ok) throw usageError(`${what} "${text}" is not ADDRESS:PORT (${parsed.reason})`, example);
  if (parsed.host === '') {
    if (needHost) throw usageError(`${what} "${text}" has no address, and it must not listen on every address by accident`, example);
    return;
  }
  if (normaliseAddress(parsed.host) === undefined) throw usageError(`${what} host "${parsed.host}" is not an IP address`, `give an IP address of this machine, ${example}`);
}

