/**
 * The CLI's side of errors: the library's BurrowError (a code, details and a message in library terms)
 * becomes an exit code (src/cli/exit-codes.ts), a message in the CLI's terms (flag names instead of option
 * names) and a hint: the next step, naming flags. Printed as two lines on stderr, or with `--format json`
 * as exactly one object on stdout: {"error": {"code", "exitCode", "message", "hint", "details"?}}.
 */
import { isBurrowError, type ErrorDetails } from '../errors.js';
import { EXIT, exitCodeFor, type CliErrorCode } from './exit-codes.js';
import { helpHint } from './parse.js';

/** Why the CLI's AbortSignal fired: the signal that stopped it. */
export class Interrupt extends Error {
  override readonly name = 'Interrupt';
  constructor(readonly signal: 'SIGINT' | 'SIGTERM') {
    super(`interrupted by ${signal}`);
  }
}

/** An error the CLI itself raises (the handoff), with its own code and hint. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    readonly code: CliErrorCode,
    message: string,
    readonly hint: string,
    readonly details: ErrorDetails = {},
  ) {
    super(message);
  }
}

export interface RenderedError {
  readonly code: string;
  readonly exitCode: number;
  readonly message: string;
  readonly hint: string;
  readonly details: ErrorDetails;
}

/** What the CLI knows when it renders an error: the command and the values it ran with. */
export interface ErrorContext {
  readonly command?: string;
  readonly values?: Readonly<Record<string, unknown>>;
  readonly interrupted?: 'SIGINT' | 'SIGTERM';
}

/** Library option names → the flags that set them. */
const FLAG_OF: Readonly<Record<string, string>> = {
  server: '--server',
  name: '--as',
  peer: '--to',
  local: '--local',
  timeout: '--timeout',
  timeoutMs: '--timeout',
  secret: '--secret-file',
  secrets: '--secret-file',
  listen: '--listen',
  alternatePort: '--alt-port',
  alternateAddress: '--alt-address',
  tstun: '--tstun',
  metrics: '--metrics',
  'metrics.listen': '--metrics',
  workers: '--workers',
  interface: '--interface',
  intervalMs: '--interval',
};

function str(v: unknown, fallback = ''): string {
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : fallback;
}

function hintFor(code: string, d: ErrorDetails, ctx: ErrorContext): string {
  const cmd = ctx.command ?? 'COMMAND';
  const v = ctx.values ?? {};
  const me = str(v.as, 'NAME');
  switch (code) {
    case 'USAGE':
      // A CLI usage error carries its hint; the library's legacy ones have their next step in the message.
      return str(d.hint) || helpHint(cmd);
    case 'INVALID_OPTION': {
      if (d.option === 'secret' && d.errno === 'ENOENT') return 'create it with `burrow keygen --out FILE`, or pass the right path';
      if (d.option === 'secret' && d.path !== undefined && d.errno === undefined) return 'put a secret in it: `burrow keygen --out FILE` makes a new file';
      if (d.option === 'secret' && d.errno !== undefined) return 'check its permissions: the user running burrow must be able to read it';
      if (d.option === 'metrics') return 'give an IP address and a port, e.g. --metrics 127.0.0.1:9464, and keep it off the public internet';
      const flag = FLAG_OF[str(d.option)];
      return flag !== undefined ? `fix ${flag}; ${helpHint(cmd)}` : helpHint(cmd);
    }
    case 'BIND_FAILED': {
      const port = str(d.port);
      const errno = str(d.errno);
      const flag = { main: '--listen', tcp: '--listen', alternate: '--alt-port', 'other-address': '--alt-address', tstun: '--tstun', metrics: '--metrics', local: '--local' }[str(d.role)] ?? '--listen';
      if (errno === 'EACCES') return `use a port above 1023 with ${flag} (or grant CAP_NET_BIND_SERVICE)`;
      if (errno === 'EADDRNOTAVAIL') return `give ${flag} an address of this machine (see \`ip address\`), or listen on every address`;
      if (d.role === 'alternate') {
        return `the alternate port is the --listen port + 1 (${port}) unless --alt-port is given: stop what holds ${port}/udp ` +
          `(\`ss -lunp 'sport = :${port}'\`), choose another with --alt-port PORT, or run without it (--no-alt-port)`;
      }
      if (d.role === 'local') return 'choose another --local port, or leave --local out for a free one';
      const proto = str(d.transport, 'udp');
      return `stop the program that holds ${port}/${proto} (\`ss -l${proto === 'tcp' ? 't' : 'u'}np 'sport = :${port}'\`) or choose another ${flag} port`;
    }
    case 'AUTH_FAILED':
      return 'use the same secret on the server and on both peers (--secret-file FILE, or BURROW_SECRET_FILE); `burrow keygen --out FILE` makes a new one';
    case 'SERVER_UNREACHABLE': {
      const server = str(d.server, str(v.server, 'HOST:PORT'));
      if (cmd === 'netcheck') return `check that the server runs and that UDP to ${server} is open; if UDP is blocked on this network, every peer needs a relay over TCP`;
      return `check that the server runs and that ${cmd === 'punch' || cmd === 'wg' || cmd === 'stun' ? 'UDP' : 'UDP and TCP'} to its port is open: \`burrow stun ${server}\` answers when it is`;
    }
    case 'PEER_NOT_FOUND':
      if (d.wg === 'not-registered') return 'run `burrow wg` on that peer too, with the same --server and secret; check that its public key is the one configured here (`wg show IFACE public-key` there)';
      if (d.wg === 'not-reaching-server') return "on that peer, check `wg show` for the server peer's handshake, and that UDP from its WireGuard port to the server is open";
      return `start the other side with --as ${str(d.peer, str(v.to, 'PEER'))} --to ${me}, the same --server and the same secret, within this side's --timeout (or give a longer --timeout)`;
    case 'PEER_LEFT': {
      const peer = str(d.peer, str(v.to, 'PEER'));
      return `run both sides again (${peer} with --as ${peer} --to ${me}); the side that starts first waits for the other up to its --timeout`;
    }
    case 'MODE_MISMATCH': {
      const peer = str(d.peer, str(v.to, 'PEER'));
      return `run \`burrow ${str(d.expected, 'COMMAND')} --as ${me} --to ${peer}\` here, or have ${peer} run \`burrow ${str(d.peerExpected, cmd)}\``;
    }
    case 'NO_PATH':
      if (d.wg === 'symmetric' && d.relay === 'needs-continuous') {
        return `run \`burrow wg --interface ${str(v.interface, 'IFACE')} --continuous\` on both peers (as a service): it relays what has no direct path; or forward a UDP port to WireGuard on that NAT`;
      }
      if (d.wg === 'symmetric') return 'forward a UDP port to WireGuard on that NAT, or give one side a public address or a full-cone NAT';
      if (typeof d.relay === 'object' && d.relay !== null && (cmd === 'pipe' || cmd === 'send' || cmd === 'receive')) {
        const r = d.relay as { state?: string; server?: string; code?: number };
        if (r.state === 'disabled') return 'run both sides without --relay never to relay the stream through the server, or try `burrow punch` (UDP), which passes more NATs';
        if (r.state === 'none-offered') return 'streams are relayed by the server\'s built-in relay only: run `burrow serve` without --no-relay and without --turn';
        if (r.code === 408) return 'run the other side with --relay auto (the default) or only, registered with the same server, within this side\'s --timeout';
        return `check that ${r.server ?? 'the server'} is reachable over TCP, its relay limits (--relay-sessions…), and that both sides use the server's secret; or run with --relay never to see the direct path's diagnosis alone`;
      }
      if (typeof d.relay === 'object' && d.relay !== null) {
        const r = d.relay as { state?: string; server?: string };
        if (r.state === 'disabled') return 'run both sides without --relay never to relay through the server, or forward a UDP port on one NAT (and --local that port)';
        if (r.state === 'none-offered') return 'the server offers no relay: run `burrow serve` without --no-relay (or with --turn), or give this side --turn URL --turn-user U --turn-password-file F';
        return `check that the relay ${r.server ?? ''} is running and reachable over UDP from here, and its credentials (--turn-user/--turn-password-file, or the server's --turn-secret-file); or run with --relay never to see the direct path's diagnosis alone`;
      }
      return 'a direct path needs UDP between the peers: try from another network, forward a UDP port on one NAT (and --local that port), or give one side a public address';
    case 'DISPLACED':
      return `another process registered as "${str(d.name, me)}" with this server: give each peer its own --as name, or stop the other one`;
    case 'STORE_UNAVAILABLE':
      if (cmd === 'serve') return 'start redis-server at that address, or fix --redis (redis://HOST:PORT[/DB]); `redis-cli -u URL ping` answers PONG when it is reachable';
      return "try again later; the server's operator should check its registration store";
    case 'ABORTED':
      return `run \`burrow ${cmd}\` again`;
    case 'SOCKET':
      return 'check this machine\'s network, then run it again';
    case 'COMMAND_FAILED':
      return 'check that the interface exists and that burrow runs as root or with CAP_NET_ADMIN';
    case 'STREAM_BROKEN':
      return 'run both sides again';
    case 'STREAM_TAMPERED':
      return 'check that both sides use the same secret; if they do, try another network';
    case 'FILE_EXISTS':
      return 'receive again with --force to replace it, or with --out DIR to receive into another directory';
    case 'FILE_FAILED':
      return 'check the file, free space and permissions, then run both sides again';
    case 'WG_NO_HANDSHAKE':
      return "compare `wg show` on both sides: each must list the other's public key; and allow UDP to and from WireGuard's listen port";
    case 'WG_ONLY_SERVER_PEER': {
      const iface = str(d.interface, 'IFACE');
      return `add each peer to reach (\`wg set ${iface} peer KEY allowed-ips IP/32\`, no endpoint) and run \`burrow wg\` on those peers too`;
    }
    case 'WG_NO_INTERFACE': {
      const iface = str(d.interface, 'IFACE');
      return `check the name with \`wg show interfaces\`; bring it up first (\`wg-quick up ${iface}\`, or \`wireguard-go ${iface}\` and \`wg setconf\`); run as root or with CAP_NET_ADMIN`;
    }
    case 'WG_MISSING':
      return 'install wireguard-tools (Debian/Ubuntu: `apt install wireguard-tools`) or point BURROW_WG at the `wg` binary';
    case 'WG_NOT_REACHING_SERVER':
      return "check `wg show` for the server peer's latest handshake, and that UDP from WireGuard's listen port to the server is open";
    case 'HANDOFF_NOT_FOUND':
    case 'HANDOFF_NOT_EXECUTABLE':
    case 'INTERRUPTED':
    case 'INTERNAL':
      return '';
    default:
      return helpHint(cmd);
  }
}

/** The library's message, with option names replaced by the CLI's flags where the error names one. */
function messageFor(code: string, message: string, d: ErrorDetails): string {
  if (code === 'INVALID_OPTION') {
    const flag = FLAG_OF[str(d.option)];
    if (flag !== undefined) return `${flag}${typeof d.value === 'string' ? ` "${d.value}"` : ''}: ${str(d.problem, message)}`;
  }
  return message;
}

export function describeError(err: unknown, ctx: ErrorContext): RenderedError {
  if (ctx.interrupted !== undefined) {
    const base = isBurrowError(err) && err.code !== 'ABORTED' ? `; ${err.message}` : isBurrowError(err) && err.message !== 'the operation was cancelled before it finished' ? `: ${err.message}` : '';
    return {
      code: 'INTERRUPTED',
      exitCode: ctx.interrupted === 'SIGINT' ? EXIT.SIGINT : EXIT.SIGTERM,
      message: `interrupted by ${ctx.interrupted}${base}`,
      hint: '',
      details: { signal: ctx.interrupted },
    };
  }
  if (err instanceof CliError) {
    return { code: err.code, exitCode: exitCodeFor(err.code), message: err.message, hint: err.hint, details: err.details };
  }
  if (isBurrowError(err)) {
    return {
      code: err.code,
      exitCode: exitCodeFor(err.code),
      message: messageFor(err.code, err.message, err.details),
      hint: hintFor(err.code, err.details, ctx),
      details: err.details,
    };
  }
  return {
    code: 'INTERNAL',
    exitCode: EXIT.OTHER,
    message: `internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
    hint: 'this is a bug in burrow; please report it with the command you ran',
    details: {},
  };
}

/** Text: `burrow: error: MESSAGE` and `burrow: hint: HINT` on stderr. */
export function formatErrorText(e: RenderedError): string {
  const message = e.message.replace(/\.$/, '');
  return `burrow: error: ${message}\n${e.hint !== '' ? `burrow: hint: ${e.hint}\n` : ''}`;
}

/** JSON: exactly one object, one line. */
export function formatErrorJson(e: RenderedError): string {
  // The hint is a field of its own; details keep the facts.
  const facts = Object.fromEntries(Object.entries(e.details).filter(([k]) => k !== 'hint' && k !== 'next'));
  const details = Object.keys(facts).length > 0 ? { details: facts } : {};
  return `${JSON.stringify({ error: { code: e.code, exitCode: e.exitCode, message: e.message, hint: e.hint, ...details } })}\n`;
}
