/** `burrow punch`: a thin shell over `punch()` with netpunch-compatible output and the handoff. */
import { endpointKey } from '../codec/address.js';
import type { NatMapping, PortAllocation } from '../codec/messages.js';
import { punchPath, type PathChange, type PathResult, type PunchEvent, type PunchSession, type TurnServerOption } from '../node/punch.js';
import { readSecretFile } from '../node/secret.js';
import { failoverLine, ms, resolveSecrets, say, watchServer, type Io } from './common.js';
import { CliError } from './errors.js';
import { usageError } from './parse.js';
import type { Parsed } from './schema.js';

export function resultEnv(r: PathResult): Record<string, string> {
  return {
    BURROW_LOCAL_ADDRESS: r.localAddress,
    BURROW_LOCAL_PORT: String(r.localPort),
    BURROW_REMOTE_ADDRESS: r.remoteAddress,
    BURROW_REMOTE_PORT: String(r.remotePort),
    BURROW_PATH: r.path,
    ...(r.relay ? { BURROW_RELAY_SERVER: r.relay.server, BURROW_RELAYED_ADDRESS: r.relay.relayed } : {}),
  };
}

/** The TURN server given by hand (--turn, --turn-user, --turn-password-file), checked as a set. */
export async function turnOption(values: { turn?: string | undefined; 'turn-user'?: string | undefined; 'turn-password-file'?: string | undefined; relay: string }): Promise<TurnServerOption | undefined> {
  const url = values.turn;
  const user = values['turn-user'];
  const file = values['turn-password-file'];
  if (url === undefined) {
    if (user !== undefined || file !== undefined) throw usageError('--turn-user and --turn-password-file need --turn URL', 'give --turn turn:HOST[:PORT] as well, or leave them out to use the relay the server offers');
    return undefined;
  }
  if (values.relay === 'never') throw usageError('--turn and --relay never contradict each other', 'leave out --turn, or use --relay auto or only');
  if (user === undefined || file === undefined) throw usageError('--turn needs --turn-user NAME and --turn-password-file FILE', 'give both (coturn\'s TURN REST credentials, or a static user of turnserver)');
  const [password = ''] = await readSecretFile(file);
  return { url, username: user, password };
}

function isWildcard(a: string): boolean {
  return a === '0.0.0.0' || a === '::';
}

/** netpunch's line, kept byte-compatible so scripts that parse it keep working. */
export function netpunchLine(r: PathResult): string {
  const lhost = isWildcard(r.localAddress) ? 'n/a' : r.localAddress;
  const laddr = isWildcard(r.localAddress) ? `:${r.localPort}` : endpointKey({ address: r.localAddress, port: r.localPort });
  const raddr = endpointKey({ address: r.remoteAddress, port: r.remotePort });
  return `LADDR/LHOST/LPORT/RADDR/RHOST/RPORT: ${laddr} ${lhost} ${r.localPort} ${raddr} ${r.remoteAddress} ${r.remotePort}`;
}

export function humanLine(r: PathResult): string {
  if (r.path === 'relay') {
    const via = r.relay ? `the relay at ${r.relay.server} (our relayed address ${r.relay.relayed})` : `the peer's relay at ${r.upstream ?? '?'}`;
    return `connected to ${r.peer} through ${via} in ${r.elapsedMs} ms; proxying: bind 127.0.0.1:${r.localPort} and send to ` +
      endpointKey({ address: r.remoteAddress, port: r.remotePort });
  }
  const how = r.path === 'lan' ? 'over the LAN' : 'directly';
  return `connected to ${r.peer} at ${endpointKey({ address: r.remoteAddress, port: r.remotePort })} ${how} from local port ${r.localPort} in ${r.elapsedMs} ms` +
    (r.birthday ? ` (${birthdayText(r.birthday)})` : '');
}

/** One line for a later move of a proxied path (`--format json`: {"event":"path",...}). */
export function formatPathChange(c: PathChange, format: 'text' | 'env' | 'json'): string {
  if (format === 'json') return JSON.stringify({ event: 'path', path: c.path, upstream: c.upstream, reason: c.reason, elapsedMs: c.elapsedMs, ...(c.birthday ? { birthday: c.birthday } : {}) }) + '\n';
  return `path moved to ${c.path} (${c.upstream}, ${c.reason}${c.birthday ? `, ${birthdayText(c.birthday)}` : ''}) after ${c.elapsedMs} ms`;
}

/** How birthday probing found a path, for people. */
function birthdayText(b: NonNullable<PathResult['birthday']>): string {
  return b.role === 'easy' ? `found by birthday probing after ${b.probes} probes` : `found by birthday probing on one of ${b.probes} sockets`;
}

export function formatResult(r: PathResult, format: 'text' | 'env' | 'json'): string {
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
        ...(r.path === 'relay' ? { relay: r.relay ?? null, upstream: r.upstream ?? null } : {}),
        ...(r.birthday ? { birthday: r.birthday } : {}),
      }) + '\n';
  }
}

/** Replaces $NAME and ${NAME} for the BURROW_* variables in handoff arguments. */
export function substitute(arg: string, env: Record<string, string>): string {
  return arg.replace(/\$\{(BURROW_[A-Z_]+)\}|\$(BURROW_[A-Z_]+)/g, (whole, a: string | undefined, b: string | undefined) => env[a ?? b ?? ''] ?? whole);
}

/** The partner's NAT as it reported it (NAT-MAPPING in the introduction), for the progress line. */
function peerNat(mapping: NatMapping, allocation: PortAllocation | undefined): string {
  if (mapping === 'unknown') return '';
  const how = mapping === 'endpoint-dependent' ? 'a new public port per destination' : 'one public port for all destinations';
  const ports = allocation === 'random' ? ', random ports' : allocation === 'sequential' ? ', ports in sequence' : allocation === 'preserving' ? ', its local port kept' : '';
  return ` (its NAT: ${how}${ports})`;
}

function describe(e: PunchEvent): string | undefined {
  switch (e.type) {
    case 'registered':
      return `registered with the server; our public address is ${endpointKey(e.mapped)}`;
    case 'nat-mapping':
      return (e.mapping === 'endpoint-dependent'
        ? 'our NAT allocates a new public port per destination (symmetric): only cone-NAT peers can reach us directly'
        : 'our NAT keeps one public port for all destinations (good for punching)') +
        (e.allocation === 'random' ? '; it picks ports at random' : e.allocation === 'sequential' ? '; it picks ports in sequence' : e.allocation === 'preserving' ? '; it keeps our local port' : '') +
        (e.filtering === 'endpoint-independent' ? '; it admits anyone to an open mapping' : e.filtering === 'address-dependent' ? '; it admits only addresses we sent to' : e.filtering === 'address-and-port-dependent' ? '; it admits only the exact address and port we sent to' : '');
    case 'introduced':
      return `found ${e.peer}; probing ${e.candidates.map(endpointKey).join(', ')}${peerNat(e.intro.peerMapping, e.intro.peerAllocation)}`;
    case 'path-valid':
      return `path to ${endpointKey(e.remote)} works in both directions`;
    case 'connected':
      return `connected: ${e.path === 'lan' ? 'LAN' : e.path} path to ${endpointKey(e.remote)}${e.transport === 'relay' ? ' through our relay allocation' : ''}`;
    case 'path-changed':
      return `path moved to ${e.result.path} ${endpointKey({ address: e.result.remoteAddress, port: e.result.remotePort })} (${e.reason})`;
    case 'path-lost':
      return `path to ${endpointKey({ address: e.previous.remoteAddress, port: e.previous.remotePort })} lost (${e.reason})`;
    case 'partner-left':
      return 'the peer ended the session';
    case 'failover':
      return failoverLine(e.from, e.to);
    case 'birthday':
      return birthdayLine(e);
    case 'dropped':
      return undefined;
  }
}

function birthdayLine(e: Extract<PunchEvent, { type: 'birthday' }>): string {
  const n = `birthday attempt ${e.attempt}`;
  switch (e.phase) {
    case 'opening':
      return `${n}: our NAT is symmetric and the peer's is not: opening ${e.count} sockets toward it (low-TTL opening packets)`;
    case 'open':
      return `${n}: ${e.count} sockets open; waiting for the peer's probes${e.detail !== undefined ? ` (${e.detail})` : ''}`;
    case 'probing':
      return `${n}: the peer's NAT is symmetric: probing up to ${e.count} random ports of ${e.detail ?? 'its address'}`;
    case 'won':
      return `${n}: hit after ${e.role === 'easy' ? `${e.count} probes` : `a probe reached one of ${e.count} sockets`}${e.detail !== undefined ? ` (${e.detail})` : ''}`;
    case 'gave-up':
      return `${n}: no hit (${e.detail ?? 'no answer'}); ${e.role === 'easy' ? `${e.count} probes sent` : 'sockets closed'}`;
    case 'deferred':
      return `${n}: held back (${e.detail ?? 'rate limit'})`;
  }
}

/** --birthday-sockets (0: off, else 64-1024) and --birthday-ttl (1-64), checked. */
export function birthdayOption(sockets: number, ttl: number): false | { sockets: number; ttl: number } {
  if (!Number.isInteger(sockets) || sockets < 0 || (sockets > 0 && sockets < 64) || sockets > 1024) {
    throw usageError(`--birthday-sockets ${sockets} is out of range`, 'give 0 (no birthday probing) or 64-1024 (default 512)');
  }
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > 64) throw usageError(`--birthday-ttl ${ttl} is out of range`, 'give 1-64 (default 2: enough to leave our NAT, too little to reach the peer\'s)');
  return sockets === 0 ? false : { sockets, ttl };
}

/** `burrow punch`: punch, then print the path or hand it to COMMAND. */
export async function punchCommand(parsed: Parsed<'punch'>, io: Io): Promise<number> {
  const { values } = parsed;
  const [secret] = await resolveSecrets(io, values, parsed.sources['secret-file'] === 'env');
  const timeoutMs = ms(values.timeout);
  const verbose = values.verbose;
  const turn = await turnOption(values);
  const birthday = birthdayOption(values['birthday-sockets'], values['birthday-ttl']);
  const watch = watchServer(io, values.server, timeoutMs, 'UDP');
  let path: PunchSession;
  try {
    path = await punchPath({
      server: values.server,
      secret: secret ?? '',
      name: values.as,
      peer: values.to,
      ...(values.local !== undefined ? { local: values.local } : {}),
      relay: values.relay,
      ...(turn ? { turn } : {}),
      birthday,
      timeoutMs,
      signal: io.signal,
      purpose: 'punch',
      onEvent: (e) => {
        if (e.type === 'registered') watch.answered();
        const line = verbose && e.type === 'dropped' ? `dropped a datagram from ${endpointKey(e.from)}: ${e.reason}` : describe(e);
        // --verbose stamps each line with milliseconds since the process started.
        if (line !== undefined) say(io, verbose ? `[${performance.now().toFixed(1)} ms] ${line}` : line);
      },
    });
  } finally {
    watch.stop();
  }
  const result = path.result;
  if (!path.proxy) {
    if (parsed.handoff === undefined) {
      io.stdout.write(formatResult(result, values.format));
      return 0;
    }
    if (values.format === 'json') io.stdout.write(formatResult(result, 'json'));
    say(io, humanLine(result));
    return handOff(parsed.handoff, result, io);
  }
  // A relayed path: stay on as its proxy.
  path.onPathChange((c) => {
    if (values.format === 'json') io.stdout.write(formatPathChange(c, 'json'));
    else say(io, formatPathChange(c, 'text'));
  });
  void path.ended.then(() => {
    if (!io.signal.aborted) say(io, `the relayed session with ${result.peer} ended`);
  });
  if (parsed.handoff === undefined) {
    io.stdout.write(formatResult(result, values.format));
    say(io, humanLine(result));
    say(io, 'staying on as the proxy until SIGINT or SIGTERM (or until the peer ends the session)');
    await Promise.race([
      path.ended,
      new Promise<void>((resolve) => {
        io.signal.addEventListener('abort', () => { resolve(); }, { once: true });
      }),
    ]);
    await path.close();
    return 0;
  }
  if (values.format === 'json') io.stdout.write(formatResult(result, 'json'));
  say(io, humanLine(result));
  try {
    return await handOff(parsed.handoff, result, io);
  } finally {
    await path.close();
  }
}

/**
 * Runs COMMAND on the punched port (our socket is already closed) and returns its exit status: 127 when it
 * does not exist, 126 when it cannot be run, 128+N when signal N ended it.
 */
async function handOff(command: readonly string[], result: PathResult, io: Io): Promise<number> {
  const env = resultEnv(result);
  const [file = '', ...args] = command.map((a) => substitute(a, env));
  const { spawn } = await import('node:child_process');
  const { constants } = await import('node:os');
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: 'inherit', env: { ...io.env, ...env } });
    const forward = (): void => {
      child.kill('SIGTERM');
    };
    io.signal.addEventListener('abort', forward, { once: true });
    child.once('error', (err: NodeJS.ErrnoException) => {
      io.signal.removeEventListener('abort', forward);
      if (err.code === 'ENOENT') {
        reject(new CliError('HANDOFF_NOT_FOUND', `cannot run "${file}": no such command (connected, but nothing was handed the path)`,
          `check the name, and that it is installed and on PATH (or give its full path)`, { command: file, errno: 'ENOENT' }));
      } else if (err.code === 'EACCES' || err.code === 'ENOEXEC' || err.code === 'EISDIR') {
        reject(new CliError('HANDOFF_NOT_EXECUTABLE', `cannot run "${file}": ${err.code === 'EACCES' ? 'permission denied (not executable?)' : err.code === 'EISDIR' ? 'it is a directory' : 'not an executable format'}`,
          `make it executable (chmod +x ${file}) or run it through its interpreter, e.g. -- sh ${file}`, { command: file, errno: err.code }));
      } else {
        reject(new CliError('HANDOFF_NOT_EXECUTABLE', `cannot run "${file}": ${err.message}`, 'check the command after --', { command: file, errno: err.code ?? null }));
      }
    });
    child.once('exit', (code, signal) => {
      io.signal.removeEventListener('abort', forward);
      resolve(code ?? 128 + (signal !== null ? constants.signals[signal] : 15));
    });
  });
}
