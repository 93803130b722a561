/**
 * Every `burrow` command and flag, declared once. From this table come the parser (src/cli/parse.ts,
 * commander underneath), `burrow help [COMMAND]` and `burrow COMMAND --help`, the validation of every
 * value, and the README's command reference (src/cli/docs.ts; a test fails when the README differs).
 *
 * To add a flag: add an entry to the command's `flags` below (the key is the long flag without `--`),
 * then read it in the command's handler as `values['the-flag']`, typed from this declaration. Run
 * `npm run docs` to regenerate the README's reference. Every command also gets `-q, --quiet` and
 * `-h, --help` from the parser.
 *
 * Pure data: no imports of command modules, so `burrow --help` loads nothing else.
 */

/** How a flag's value is checked and what type the handler receives. */
export type FlagType =
  /** any text */
  | 'string'
  /** a positive number of seconds (fractions allowed) → number */
  | 'seconds'
  /** a whole number ≥ 1 → number */
  | 'count'
  /** a port number 1–65535 → number */
  | 'port'
  /** a non-negative number → number */
  | 'number'
  /** HOST:PORT of a server to reach: port 0 and unbracketed IPv6 are refused with a hint */
  | 'server'
  /** [ADDR:]PORT or ADDR:PORT to bind or listen on (port 0: any free port) */
  | 'bind';

export interface FlagSpec {
  /** One-letter alias, e.g. 'q' for -q. */
  readonly short?: string;
  /** The placeholder of the value (HOST:PORT); absent for a switch. */
  readonly value?: string;
  /** The value may be left out (`--tstun` alone means the default address). */
  readonly optionalValue?: boolean;
  readonly type?: FlagType;
  readonly choices?: readonly string[];
  /** The default, as the user would type it. */
  readonly default?: string;
  /** An environment variable that supplies the value when the flag is absent. */
  readonly env?: string;
  /** The flag (or its env variable) must be given. */
  readonly required?: boolean;
  /** Flags that cannot be combined with this one. */
  readonly conflicts?: readonly string[];
  /** Also accept `--no-FLAG`, with this help; the value is then `false`. */
  readonly negatedHelp?: string;
  readonly help: string;
}

export interface CommandSpec {
  /** As typed: 'punch', or 'lab punch' for a subcommand. */
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** More lines for `burrow help COMMAND` and the README. */
  readonly description?: readonly string[];
  /** Positional arguments, e.g. 'FILE...' or 'HOST:PORT'; `[X]` optional, `X...` one or more. */
  readonly args?: string;
  /** Accepts `-- COMMAND ARGS...` after its own flags. */
  readonly handoff?: boolean;
  readonly flags: Readonly<Record<string, FlagSpec>>;
  /** The exit codes this command can end with (besides 0, 1, 2 and the signal codes). */
  readonly exits?: readonly number[];
  /** Works from a source checkout only (the package does not ship it). */
  readonly checkoutOnly?: boolean;
}

// ---------------------------------------------------------------------------------------------------------------------
// Flags several commands share.

const SERVER = {
  value: 'HOST:PORT',
  type: 'server',
  env: 'BURROW_SERVER',
  required: true,
  help: 'the rendezvous server (port 3478 if left out; IPv6 as [ADDR]:PORT); several sharing one store: S1,S2 (moves to the next when one stops answering)',
} as const satisfies FlagSpec;

const SECRET_FILE = {
  value: 'FILE',
  env: 'BURROW_SECRET_FILE',
  conflicts: ['secret'],
  help: 'the network secret: the first line of FILE (`burrow keygen --out FILE` makes one)',
} as const satisfies FlagSpec;

const SECRET = {
  value: 'TEXT',
  help: 'the network secret itself (other users can read command lines: prefer --secret-file)',
} as const satisfies FlagSpec;

const NAMES = {
  as: { value: 'NAME', required: true, help: 'this side\'s name' },
  to: { value: 'NAME', required: true, help: 'the peer\'s name (it runs with --as and --to swapped)' },
} as const satisfies Record<string, FlagSpec>;

const TIMEOUT = (seconds: number, what: string) =>
  ({ value: 'SECONDS', type: 'seconds', default: String(seconds), help: what }) as const satisfies FlagSpec;

const LOCAL = {
  value: '[ADDR:]PORT',
  type: 'bind',
  help: 'bind this local port (and address); default: any address, a free port',
} as const satisfies FlagSpec;

/** The flags of every command that meets a peer through the server. */
const CONNECT = {
  server: SERVER,
  'secret-file': SECRET_FILE,
  secret: SECRET,
  ...NAMES,
  timeout: TIMEOUT(30, 'give up after this long, waiting for the peer included'),
} as const;

/** Relay flags (issue 10): whether to relay, and a TURN server given by hand. */
const RELAY = {
  relay: {
    value: 'MODE',
    choices: ['auto', 'never', 'only'],
    default: 'auto',
    help: 'auto: relay when no direct path works within 0.5 s, keep trying direct; never: direct paths only; only: relayed paths only',
  },
  turn: { value: 'URL', help: 'relay through this TURN server (turn:HOST[:PORT], UDP) instead of the one the server offers' },
  'turn-user': { value: 'NAME', help: 'with --turn: the TURN username' },
  'turn-password-file': { value: 'FILE', help: 'with --turn: a file whose first line is the TURN password' },
} as const satisfies Record<string, FlagSpec>;

/** Birthday-paradox probing (issue 11): when exactly one side's NAT is symmetric. */
const BIRTHDAY = {
  'birthday-sockets': {
    value: 'N',
    type: 'number',
    default: '512',
    help: 'on a symmetric NAT facing a cone NAT: open N sockets (64-1024) for birthday probing; the path may then leave from one of them (BURROW_LOCAL_PORT says which); 0: no birthday probing',
  },
  'birthday-ttl': { value: 'N', type: 'number', default: '2', help: 'IP TTL of the birthday sockets\' opening packets (1-64): enough to leave our NAT, too little to reach the peer\'s' },
} as const satisfies Record<string, FlagSpec>;

/** `--relay` of the stream commands (pipe, send, receive): the server's stream relay when TCP finds no path. */
const STREAM_RELAY = {
  value: 'MODE',
  choices: ['auto', 'never', 'only'],
  default: 'auto',
  help: 'auto: relay the stream through the server when TCP finds no direct path within 3 s (a direct one found first still wins); never: direct paths only; only: the relay only',
} as const satisfies FlagSpec;

/** Exit codes of the commands that meet a peer (the numbers are documented in src/cli/exit-codes.ts). */
const MEET_EXITS = [3, 4, 5, 13, 14, 15] as const;

// ---------------------------------------------------------------------------------------------------------------------

export const COMMANDS = {
  punch: {
    name: 'punch',
    summary: 'punch a direct UDP path to a peer and print it, or hand it to a command',
    description: [
      'Both peers run it, each naming itself (--as) and the other (--to), in any order. The result goes to stdout;',
      'progress and diagnostics to stderr. With `-- COMMAND ARGS...`, burrow closes its socket and runs COMMAND with',
      'BURROW_LOCAL_ADDRESS, BURROW_LOCAL_PORT, BURROW_REMOTE_ADDRESS, BURROW_REMOTE_PORT and BURROW_PATH in its',
      'environment ($BURROW_… in its arguments is replaced too), and exits with its status.',
      'A relayed path (BURROW_PATH=relay) is handed over through a loopback proxy: burrow stays on, forwarding between',
      '127.0.0.1:BURROW_LOCAL_PORT (bind it) and 127.0.0.1:BURROW_REMOTE_PORT, moves to a direct path when one appears,',
      'and exits with COMMAND\'s status; without COMMAND it stays in the foreground until SIGINT or SIGTERM (exit 0).',
      'With --format json each later move adds a line {"event":"path",...}. Use --relay never for one-shot behaviour.',
    ],
    handoff: true,
    flags: {
      ...CONNECT,
      local: LOCAL,
      ...RELAY,
      ...BIRTHDAY,
      format: {
        value: 'FORMAT',
        choices: ['text', 'env', 'json'],
        default: 'text',
        help: 'text: a line for people and netpunch\'s line; env: BURROW_* variables for eval; json: one object',
      },
      verbose: { short: 'v', help: 'stamp progress lines with milliseconds and report every datagram dropped' },
    },
    exits: [...MEET_EXITS, 126, 127],
  },
  pipe: {
    name: 'pipe',
    summary: 'stdin to the peer and the peer to stdout, over an encrypted TCP stream (like ncat)',
    description: [
      'EOF on stdin half-closes; a side exits 0 only once the peer confirmed it wrote out every byte.',
      'stdout carries the peer\'s bytes, so the summary (and, with --format json, the JSON summary or error) goes to stderr.',
    ],
    flags: {
      ...CONNECT,
      local: LOCAL,
      relay: STREAM_RELAY,
      'send-only': { conflicts: ['recv-only'], help: 'only send stdin; ignore what the peer sends' },
      'recv-only': { help: 'only receive; send nothing' },
      format: { value: 'FORMAT', choices: ['text', 'json'], default: 'text', help: 'the closing summary on stderr: a line, or one JSON object' },
    },
    exits: [...MEET_EXITS, 6, 7],
  },
  send: {
    name: 'send',
    summary: 'send files, directory trees or stdin to a peer (verified end to end)',
    args: 'FILE...',
    description: [
      'Each FILE is a file, a directory (sent as a tree, with modes and empty directories) or - (stdin). An interrupted',
      'transfer resumes from the verified prefix when the same send and receive run again.',
    ],
    flags: {
      ...CONNECT,
      name: { value: 'NAME', help: 'the name stdin (-) arrives under (default stdin)' },
      relay: STREAM_RELAY,
      format: { value: 'FORMAT', choices: ['text', 'json'], default: 'text', help: 'the result on stdout: nothing (text), or one JSON object' },
    },
    exits: [...MEET_EXITS, 6, 7],
  },
  receive: {
    name: 'receive',
    summary: 'receive files from a peer into a directory',
    flags: {
      ...CONNECT,
      out: { value: 'DIR', default: '.', help: 'the directory to receive into (nothing is ever written outside it)' },
      force: { help: 'replace files that already exist' },
      yes: { short: 'y', help: 'accept the offer without asking (required when stdin is not a terminal)' },
      relay: STREAM_RELAY,
      format: { value: 'FORMAT', choices: ['text', 'json'], default: 'text', help: 'the result on stdout: nothing (text), or one JSON object' },
    },
    exits: [...MEET_EXITS, 6, 7],
  },
  wg: {
    name: 'wg',
    summary: 'find and set the endpoints of a WireGuard interface\'s peers',
    description: [
      'Without --continuous it exits 0 once every peer has completed a handshake; with it, it keeps watching until stopped',
      '(SIGINT or SIGTERM then end it with exit 0). With --continuous a peer that has no direct path goes through the relay:',
      'its endpoint becomes a proxy inside this process (127.0.0.1:P), which forwards to the partner\'s burrow wg through the',
      'relay the server offers; it moves back to a direct endpoint when one appears. Without --continuous such a peer exits 5.',
    ],
    flags: {
      interface: { short: 'i', value: 'IFACE', required: true, help: 'the WireGuard interface' },
      server: SERVER,
      'secret-file': SECRET_FILE,
      secret: SECRET,
      continuous: { help: 'keep the endpoints current until stopped' },
      interval: { value: 'SECONDS', type: 'seconds', default: '10', help: 'with --continuous: how often to ask the server (at least 1)' },
      relay: {
        value: 'MODE',
        choices: ['auto', 'never', 'only'],
        default: 'auto',
        help: 'with --continuous: auto relays a peer with no direct path (its endpoint becomes a local proxy, 127.0.0.1:P) and moves it to a direct endpoint when one appears; never: direct only; only: relay every peer',
      },
      timeout: TIMEOUT(30, 'give up after this long (without --continuous)'),
      format: { value: 'FORMAT', choices: ['text', 'json'], default: 'text', help: 'the result: one line per peer, or one JSON object' },
    },
    exits: [3, 4, 5, 8, 9, 10, 11, 12, 14],
  },
  serve: {
    name: 'serve',
    summary: 'run the rendezvous server (also a STUN server)',
    description: [
      'UDP and TCP on --listen, UDP on the alternate port (PORT+1 unless --alt-port) for NAT mapping tests, and with',
      '--alt-address the same two UDP ports on a second IP, for `burrow netcheck` and other RFC 5780 clients. Every line of',
      'the secret file is an accepted secret; SIGHUP reloads it; SIGINT or SIGTERM stop the server cleanly (exit 0).',
      'Failed authentications are logged once per source and interval, with a count.',
    ],
    flags: {
      listen: { value: 'HOST:PORT', type: 'bind', default: '[::]:3478', help: 'UDP and TCP address (IP literal) and port' },
      'secret-file': { ...SECRET_FILE, help: 'the accepted network secrets, one per line' },
      secret: SECRET,
      'alt-port': {
        value: 'PORT',
        type: 'port',
        negatedHelp: 'no alternate port (peers then cannot tell whether their NAT is symmetric)',
        help: 'the alternate UDP port for NAT mapping tests (default: the --listen port + 1)',
      },
      'alt-address': {
        value: 'ADDR',
        help: 'a second IP address of this host: answer RFC 5780 NAT behaviour tests in full (2 IPs x 2 ports; needs a specific --listen address)',
      },
      tstun: { value: '[HOST:]PORT', optionalValue: true, type: 'bind', help: 'also serve punchhole\'s T-STUN on TCP (alone: [::]:3477)' },
      metrics: { value: 'HOST:PORT', type: 'bind', help: 'serve Prometheus metrics at http://HOST:PORT/metrics (an IP address, e.g. 127.0.0.1:9464)' },
      workers: { value: 'N', type: 'count', default: '1', help: 'processes answering UDP (1–256); the built-in relay needs 1 (use --turn with more)' },
      relay: {
        value: 'MODE',
        choices: ['builtin', 'off'],
        negatedHelp: 'no relay: introduced pairs that find no direct path fail (the same as --relay off)',
        help: 'builtin (the default): relay for introduced pairs (TURN on the --listen UDP port, streams on its TCP port); off: none',
      },
      'relay-ports': { value: 'LOW-HIGH', help: 'UDP ports for relayed addresses (default: any free port), e.g. 49152-65535' },
      'relay-address': { value: 'IP', help: 'the address to advertise as relayed address, for a server behind a 1:1 NAT (default: its own)' },
      'relay-sessions': { value: 'N', type: 'count', default: '1000', help: 'relay sessions in total' },
      'relay-sessions-per-peer': { value: 'N', type: 'count', default: '4', help: 'relay sessions one peer name may hold' },
      'relay-sessions-per-source': { value: 'N', type: 'count', default: '8', help: 'relay sessions one IP address may hold' },
      'relay-rate': { value: 'BYTES', default: '16MiB', help: 'bytes per second one relay session may carry (suffixes KiB, MiB, GiB)' },
      'relay-total-rate': { value: 'BYTES', default: '512MiB', help: 'bytes per second all relay sessions together may carry' },
      'relay-idle': { value: 'SECONDS', type: 'seconds', default: '60', help: 'a relay session that carries nothing this long ends' },
      'relay-open-challenge': { help: 'also answer bare (unpadded) TURN Allocates of standard clients (browsers, turnutils_uclient) with the 401 challenge, which is longer than they are, within the per-source request rate; by default unauthenticated traffic never gets more bytes back' },
      'relay-lifetime': { value: 'SECONDS', type: 'seconds', default: '3600', help: 'the longest relay lifetime granted per Allocate or Refresh (clients refresh)' },
      turn: { value: 'URL', conflicts: ['relay'], help: 'send pairs to this TURN server (coturn) instead: turn:HOST:PORT; needs --turn-secret-file' },
      'turn-secret-file': { value: 'FILE', help: 'coturn\'s --static-auth-secret (first line): the server mints TURN REST credentials with it' },
      'turn-ttl': { value: 'SECONDS', type: 'seconds', default: '86400', help: 'how long minted TURN credentials stay valid' },
      redis: { value: 'URL', type: 'string', help: 'share registrations with other servers through Redis: redis://HOST:PORT[/DB] (see "Running several servers")' },
      'server-id': { value: 'ID', type: 'string', help: 'this server\'s id among those sharing a Redis (default: random; unique per server)' },
      'redis-prefix': { value: 'PREFIX', type: 'string', default: 'burrow', help: 'the prefix of every Redis key and channel (servers of one network use the same)' },
      'log-format': { value: 'FORMAT', choices: ['text', 'json'], default: 'text', help: 'log lines on stderr: text, or one JSON object per line' },
      'log-level': { value: 'LEVEL', choices: ['debug', 'info', 'warn', 'error'], default: 'info', help: 'the least severe level logged (--quiet: error)' },
      check: { help: 'check every option, the secret file and the ports for clashes, then exit without listening' },
    },
  },
  stun: {
    name: 'stun',
    summary: 'print this machine\'s public address as a STUN server sees it',
    args: 'HOST:PORT',
    flags: {
      local: LOCAL,
      timeout: TIMEOUT(5, 'give up after this long'),
      format: { value: 'FORMAT', choices: ['text', 'json'], default: 'text', help: 'ADDRESS:PORT, or {"address","port"}' },
    },
  },
  netcheck: {
    name: 'netcheck',
    summary: 'what kind of NAT this host is behind, and which peers it can reach directly (RFC 5780)',
    description: [
      'Standard STUN, no secret: works against `burrow serve` and any STUN server. Reports whether UDP gets through, the',
      'public IPv4 and IPv6 addresses, the NAT\'s mapping, port allocation and filtering, hairpinning, the round trip,',
      'and a verdict. Filtering needs a server with a second IP (`burrow serve --alt-address`, coturn with two',
      '--listening-ip); against a one-address server only the mapping is tested. Takes a few seconds (--lifetime: minutes).',
    ],
    flags: {
      server: { ...SERVER, env: 'BURROW_SERVER', help: 'the STUN server (port 3478 if left out; IPv6 as [ADDR]:PORT; a name is tested over IPv4 and IPv6)' },
      server6: { value: 'HOST:PORT', type: 'server', help: 'a STUN server to learn the public IPv6 address from, when --server has no IPv6 address (e.g. [2001:db8::1]:3478)' },
      lifetime: { help: 'also estimate how long an idle mapping lives (trials from 5 s to 8 min: takes up to 8 minutes)' },
      format: { value: 'FORMAT', choices: ['text', 'json'], default: 'text', help: 'a report for people, or one JSON object' },
    },
  },
  keygen: {
    name: 'keygen',
    summary: 'make a new random network secret (32 bytes, base64url)',
    flags: {
      out: { value: 'FILE', help: 'write it to FILE (mode 0600; an existing FILE is never replaced) instead of stdout' },
      format: { value: 'FORMAT', choices: ['text', 'json'], default: 'text', help: 'the secret (or, with --out, nothing), or one JSON object' },
    },
  },
  demo: {
    name: 'demo',
    summary: 'a real punch: a server and two peers as processes on loopback',
    description: [
      'Stays on 127.0.0.1 and changes nothing on this machine. --lab adds a punch across two emulated NATs (network',
      'namespaces and nftables; root, Linux, and a source checkout: the package does not ship the lab).',
    ],
    flags: {
      lab: { help: 'also punch across two emulated port-restricted NATs (root; checkout only)' },
    },
  },
  'lab punch': {
    name: 'lab punch',
    summary: 'punch across emulated NATs in network namespaces (root; checkout only)',
    description: [
      'Builds a small internet of network namespaces with nftables NATs, runs two `burrow punch` processes in it, reports',
      'what each printed, and tears everything down on every outcome. Root on Linux with iproute2, nftables and conntrack;',
      'from a source checkout only (the package does not ship the lab).',
    ],
    checkoutOnly: true,
    flags: {
      a: { value: 'KIND', required: true, choices: ['full-cone', 'address-restricted', 'port-restricted', 'symmetric', 'firewall'], help: 'the NAT in front of peer a' },
      b: { value: 'KIND', choices: ['full-cone', 'address-restricted', 'port-restricted', 'symmetric', 'firewall'], help: 'the NAT in front of peer b (required unless --same-nat)' },
      'same-nat': { help: 'both peers behind the NAT of --a' },
      timeout: TIMEOUT(5, 'each peer\'s --timeout'),
      first: { value: 'SIDE', choices: ['a', 'b'], default: 'a', help: 'which peer starts first' },
      delay: { value: 'MS', type: 'number', default: '0', help: 'milliseconds between the two starts' },
      loss: { value: 'PERCENT', type: 'number', default: '0', help: 'random packet loss on both routers' },
    },
  },
  'lab matrix': {
    name: 'lab matrix',
    summary: 'run every pair of NAT kinds in the lab and draw the matrix as SVG (root; checkout only)',
    description: [
      'For every ordered pair of --kinds (rows: the peer that starts first, columns: the one that starts second), each',
      'first starter once behind each router, --runs times, per --relay mode: two `burrow punch ... -- COMMAND` processes,',
      'COMMAND exchanging datagrams both ways through its own socket on $BURROW_LOCAL_PORT. One lab per pair of router',
      'kinds, its NAT state flushed before every run. Draws each cell\'s path (lan, direct, birthday, relay,',
      'failed), median time to connect and birthday probes into --report. Exits 1 when a run fails, except with exit 5',
      'on both sides where no relay is reachable (none, no-relay, coturn-stopped). coturn modes need turnserver.',
    ],
    checkoutOnly: true,
    flags: {
      kinds: { value: 'K,...', default: 'full-cone,address-restricted,port-restricted,symmetric,firewall', help: 'the NAT kinds to pair' },
      runs: { value: 'N', type: 'count', default: '1', help: 'runs per cell and router position' },
      relay: {
        value: 'MODE,...',
        default: 'builtin',
        help: 'one grid per mode: builtin (burrow serve\'s relay), coturn (serve --turn), none (punch --relay never), no-relay (serve --no-relay), coturn-stopped',
      },
      report: { value: 'FILE', required: true, help: 'write the SVG picture here' },
      timeout: { value: 'SECONDS', type: 'seconds', default: '8', help: 'each peer\'s --timeout' },
      'upgrade-wait': {
        value: 'SECONDS',
        type: 'number',
        default: '6',
        help: 'on a relayed path, COMMAND holds its socket this long after the exchange, so that a move to a direct path (birthday probing) shows; 0: no wait',
      },
      format: { value: 'FORMAT', choices: ['text', 'json'], default: 'text', help: 'the result on stdout: a table per mode, or one JSON object with every run' },
    },
  },
  version: {
    name: 'version',
    summary: 'print the version (also --version)',
    flags: {},
  },
  help: {
    name: 'help',
    summary: 'show the help of burrow or of one command',
    args: '[COMMAND...]',
    flags: {},
  },
} as const satisfies Record<string, CommandSpec>;

export type CommandName = keyof typeof COMMANDS;

export function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(COMMANDS, name);
}

/** Flags every command accepts (added by the parser). */
export const COMMON_FLAGS = {
  quiet: { short: 'q', help: 'print nothing on stderr but errors' },
} as const satisfies Record<string, FlagSpec>;

// ---------------------------------------------------------------------------------------------------------------------
// Types of the parsed values, derived from the declarations above.

type ValueOf<F extends FlagSpec> = F extends { value: string }
  ? (F extends { type: 'seconds' | 'count' | 'port' | 'number' } ? number : F extends { choices: readonly (infer C)[] } ? C : string)
    | (F extends { optionalValue: true } ? true : never)
    | (F extends { negatedHelp: string } ? false : never)
    | (F extends { default: string } ? never : F extends { required: true } ? never : undefined)
  : boolean;

export type FlagValues<C extends CommandName> = {
  readonly [K in keyof (typeof COMMANDS)[C]['flags']]: (typeof COMMANDS)[C]['flags'][K] extends FlagSpec ? ValueOf<(typeof COMMANDS)[C]['flags'][K]> : never;
} & { readonly quiet: boolean };

export interface Parsed<C extends CommandName> {
  readonly command: C;
  readonly values: FlagValues<C>;
  /** Positional arguments (for commands with `args`). */
  readonly positionals: readonly string[];
  /** What follows `--` (for commands with `handoff`); undefined without `--`. */
  readonly handoff: readonly string[] | undefined;
  /** Where each value came from, for messages: 'flag', 'env' or 'default'. */
  readonly sources: Readonly<Record<string, 'flag' | 'env' | 'default'>>;
}
