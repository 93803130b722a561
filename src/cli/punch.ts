/** `burrow punch`: a thin shell over `punch()` with netpunch-compatible output and the handoff. */
import { parseArgs } from 'node:util';
import { BurrowError } from '../errors.js';
import { punch, type PunchEvent, type PunchResult } from '../node/punch.js';
import { checkConnectFlags, CONNECT_FLAGS, oneOf, resolveSecrets, say, type Io } from './common.js';
import { endpointKey } from '../codec/address.js';

export const PUNCH_USAGE = `burrow punch --server HOST:PORT --secret-file FILE --as NAME --to NAME
             [--local [ADDR:]PORT] [--timeout SECONDS] [--format text|env|json] [--quiet | --verbose]
             [-- COMMAND ARGS...]`;

export function resultEnv(r: PunchResult): Record<string, string> {
  return {
    BURROW_LOCAL_ADDRESS: r.localAddress,
    BURROW_LOCAL_PORT: String(r.localPort),
    BURROW_REMOTE_ADDRESS: r.remoteAddress,
    BURROW_REMOTE_PORT: String(r.remotePort),
    BURROW_PATH: r.path,
  };
}

function isWildcard(a: string): boolean {
  return a === '0.0.0.0' || a === '::';
}

/** netpunch's line, kept byte-compatible so scripts that parse it keep working. */
export function netpunchLine(r: PunchResult): string {
  const lhost = isWildcard(r.localAddress) ? 'n/a' : r.localAddress;
  const laddr = isWildcard(r.localAddress) ? `:${r.localPort}` : endpointKey({ address: r.localAddress, port: r.localPort });
  const raddr = endpointKey({ address: r.remoteAddress, port: r.remotePort });
  return `LADDR/LHOST/LPORT/RADDR/RHOST/RPORT: ${laddr} ${lhost} ${r.localPort} ${raddr} ${r.remoteAddress} ${r.remotePort}`;
}

export function humanLine(r: PunchResult): string {
  const how = r.path === 'lan' ? 'over the LAN' : 'directly';
  return `connected to ${r.peer} at ${endpointKey({ address: r.remoteAddress, port: r.remotePort })} ${how} from local port ${r.localPort} in ${r.elapsedMs} ms`;
}

export function formatResult(r: PunchResult, format: 'text' | 'env' | 'json'): string {
  switch (format) {
    case 'text':
      return `${humanLine(r)}\n${netpunchLine(r)}\n`;
    case 'env':
      return Object.entries(resultEnv(r)).map(([k, v]) => `${k}='${v}'`).join('\n') + '\n';
    case 'json':
      return JSON.stringify({
        localAddress: r.localAddress,
        localPort: r.localPort,
        remoteAddress: r.remoteAddress,
        remotePort: r.remotePort,
        path: r.path,
        elapsedMs: r.elapsedMs,
      }) + '\n';
  }
}

/** Replaces $NAME and ${NAME} for the BURROW_* variables in handoff arguments. */
export function substitute(arg: string, env: Record<string, string>): string {
  return arg.replace(/\$\{(BURROW_[A-Z_]+)\}|\$(BURROW_[A-Z_]+)/g, (whole, a: string | undefined, b: string | undefined) => env[a ?? b ?? ''] ?? whole);
}

function describe(e: PunchEvent): string | undefined {
  switch (e.type) {
    case 'registered':
      return `registered with the server; our public address is ${endpointKey(e.mapped)}`;
    case 'nat-mapping':
      return e.mapping === 'endpoint-dependent'
        ? 'our NAT allocates a new public port per destination (symmetric): only cone-NAT peers can reach us directly'
        : 'our NAT keeps one public port for all destinations (good for punching)';
    case 'introduced':
      return `found ${e.peer}; probing ${e.candidates.map(endpointKey).join(', ')}`;
    case 'path-valid':
      return `path to ${endpointKey(e.remote)} works in both directions`;
    case 'connected':
      return `connected: ${e.path === 'lan' ? 'LAN' : e.path} path to ${endpointKey(e.remote)}`;
    case 'path-changed':
      return `path moved to ${e.result.path} ${endpointKey({ address: e.result.remoteAddress, port: e.result.remotePort })} (${e.reason})`;
    case 'path-lost':
      return `path to ${endpointKey({ address: e.previous.remoteAddress, port: e.previous.remotePort })} lost (${e.reason})`;
    case 'partner-left':
      return 'the peer ended the session';
    case 'dropped':
      return undefined;
  }
}

export async function runPunch(argv: string[], io: Io): Promise<number> {
  const dash = argv.indexOf('--');
  const own = dash >= 0 ? argv.slice(0, dash) : argv;
  const command = dash >= 0 ? argv.slice(dash + 1) : [];
  const { values } = parseArgs({
    args: own,
    options: {
      ...CONNECT_FLAGS,
      local: { type: 'string' },
      format: { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
      verbose: { type: 'boolean', short: 'v' },
    },
    strict: true,
  });
  const { server, name, peer, timeoutMs } = checkConnectFlags(values);
  if (dash >= 0 && command.length === 0) throw BurrowError.usage('nothing follows --', 'give the command to run, e.g. -- openvpn ...');
  const format = oneOf('--format', values.format, ['text', 'env', 'json'] as const, 'text');
  const [secret] = await resolveSecrets(io, values);
  const quiet = values.quiet === true;
  const verbose = values.verbose === true;
  const result = await punch({
    server,
    secret: secret ?? '',
    name,
    peer,
    ...(values.local !== undefined ? { local: values.local } : {}),
    timeoutMs,
    signal: io.signal,
    onEvent: (e) => {
      if (quiet) return;
      const line = verbose && e.type === 'dropped' ? `dropped a datagram from ${endpointKey(e.from)}: ${e.reason}` : describe(e);
      // --verbose stamps each line with milliseconds since the process started.
      if (line !== undefined) say(io, verbose ? `[${performance.now().toFixed(1)} ms] ${line}` : line);
    },
  });
  if (command.length === 0) {
    io.stdout.write(formatResult(result, format));
    return 0;
  }
  say(io, humanLine(result));
  return handOff(command, result, io);
}

/** Runs COMMAND on the punched port (our socket is already closed) and returns its exit status. */
async function handOff(command: string[], result: PunchResult, io: Io): Promise<number> {
  const env = resultEnv(result);
  const [file, ...args] = command.map((a) => substitute(a, env));
  const { spawn } = await import('node:child_process');
  return new Promise((resolve) => {
    const child = spawn(file ?? '', args, { stdio: 'inherit', env: { ...io.env, ...env } });
    const forward = (): void => {
      child.kill('SIGTERM');
    };
    io.signal.addEventListener('abort', forward, { once: true });
    child.once('error', (err) => {
      io.signal.removeEventListener('abort', forward);
      say(io, `cannot run "${file ?? ''}": ${err.message}; check that it is installed and on PATH.`);
      resolve(1);
    });
    child.once('exit', (code, signal) => {
      io.signal.removeEventListener('abort', forward);
      resolve(code ?? (signal ? 128 + 15 : 1));
    });
  });
}
