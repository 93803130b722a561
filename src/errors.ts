/**
 * The errors Burrow's library throws: a stable `code`, structured `details` (plain JSON values), and a
 * message that says what happened and the likely cause, in the library's own terms (option names such as
 * `server` or `peer`, never a CLI flag, never an exit code). The CLI alone turns a code into an exit code
 * and adds the next step in its own words (src/cli/errors.ts); a library user switches on `code`.
 *
 * Created through the static factories so that the wording lives in one place. `details` always carries
 * the values the message names, so a caller can build its own message.
 */

export type ErrorCode =
  /** An option passed to a library call is invalid. details: { option, problem, value? } */
  | 'INVALID_OPTION'
  /** Legacy name for INVALID_OPTION thrown by older call sites (`BurrowError.usage`). details: { next? } */
  | 'USAGE'
  /** A socket could not be bound or a port listened on. details: { transport, address, port, role, errno } */
  | 'BIND_FAILED'
  | 'AUTH_FAILED'
  | 'PEER_NOT_FOUND'
  /** The partner registered and was introduced, then left before a path was found. details: { peer, server, how } */
  | 'PEER_LEFT'
  /** The partner runs something that does not work with what this side runs. details: { peer, peerMode, mode, expected } */
  | 'MODE_MISMATCH'
  | 'NO_PATH'
  | 'SERVER_UNREACHABLE'
  /** A second live registration under the same name replaced this one. details: { name, server } */
  | 'DISPLACED'
  /** The server cannot reach its registration store (reserved for shared stores). */
  | 'STORE_UNAVAILABLE'
  | 'ABORTED'
  | 'SOCKET'
  | 'COMMAND_FAILED'
  | 'STREAM_BROKEN'
  | 'STREAM_TAMPERED'
  | 'FILE_EXISTS'
  | 'FILE_FAILED'
  | 'WG_NO_HANDSHAKE'
  | 'WG_ONLY_SERVER_PEER'
  | 'WG_NO_INTERFACE'
  | 'WG_MISSING'
  | 'WG_NOT_REACHING_SERVER';

/** Every code, for tables and exhaustiveness tests. */
export const ERROR_CODES: readonly ErrorCode[] = [
  'INVALID_OPTION', 'USAGE', 'BIND_FAILED', 'AUTH_FAILED', 'PEER_NOT_FOUND', 'PEER_LEFT', 'MODE_MISMATCH', 'NO_PATH', 'SERVER_UNREACHABLE', 'DISPLACED',
  'STORE_UNAVAILABLE', 'ABORTED', 'SOCKET', 'COMMAND_FAILED', 'STREAM_BROKEN', 'STREAM_TAMPERED', 'FILE_EXISTS', 'FILE_FAILED',
  'WG_NO_HANDSHAKE', 'WG_ONLY_SERVER_PEER', 'WG_NO_INTERFACE', 'WG_MISSING', 'WG_NOT_REACHING_SERVER',
];

/** A JSON value: what `details` may hold, so that an error can be printed as JSON as it is. */
export type DetailValue = string | number | boolean | null | readonly DetailValue[] | { readonly [key: string]: DetailValue };

/** Structured facts about an error. Which keys appear depends on the code (see each factory). */
export type ErrorDetails = Readonly<Record<string, DetailValue>>;

/** What a socket was for, in BIND_FAILED's details. */
export type BindRole = 'main' | 'alternate' | 'other-address' | 'tcp' | 'tstun' | 'metrics' | 'local';

const ROLE_TEXT: Record<BindRole, string> = {
  main: 'the main port',
  alternate: 'the alternate port (main port + 1 unless set; it lets peers test whether their NAT is symmetric)',
  'other-address': 'the second IP address (--alt-address, on the main and the alternate port; RFC 5780 NAT behaviour tests)',
  tcp: 'the TCP rendezvous port (the same number as the main UDP port)',
  tstun: 'the T-STUN port',
  metrics: 'the metrics port',
  local: 'the local port',
};

function errnoText(errno: string): string {
  switch (errno) {
    case 'EADDRINUSE':
      return 'another socket already uses it';
    case 'EACCES':
      return 'ports below 1024 need privileges';
    case 'EADDRNOTAVAIL':
      return 'the address is not on this machine';
    default:
      return errno;
  }
}

function detailOf(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause);
}

export class BurrowError extends Error {
  override readonly name = 'BurrowError';
  readonly details: ErrorDetails;
  constructor(
    readonly code: ErrorCode,
    /** What happened and why it probably happened, in library terms. */
    message: string,
    options?: { cause?: unknown; details?: ErrorDetails },
  ) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.details = options?.details ?? {};
  }

  /** An option of a library call is invalid: `option` is the option's name (`server`, `peer`, `listen`, …). */
  static invalidOption(option: string, problem: string, value?: string, details: ErrorDetails = {}): BurrowError {
    const shown = value !== undefined ? ` "${value}"` : '';
    return new BurrowError('INVALID_OPTION', `invalid ${option}${shown}: ${problem}`, {
      details: { option, problem, ...(value !== undefined ? { value } : {}), ...details },
    });
  }

  /**
   * Legacy: an invalid input described in free text, `what` and then `next` (also kept in details.next).
   * New library code uses invalidOption; the CLI words its own usage errors (src/cli/errors.ts).
   */
  static usage(what: string, next?: string, details: ErrorDetails = {}): BurrowError {
    return new BurrowError('USAGE', next !== undefined ? `${what}; ${next}` : what, { details: { ...(next !== undefined ? { next } : {}), ...details } });
  }

  /** A socket could not be bound, or a port listened on. */
  static bindFailed(
    where: { transport: 'udp' | 'tcp'; address: string; port: number; role: BindRole },
    cause: unknown,
    details: ErrorDetails = {},
  ): BurrowError {
    const errno = (cause as NodeJS.ErrnoException | null)?.code ?? detailOf(cause);
    const host = where.address.includes(':') ? `[${where.address}]` : where.address;
    return new BurrowError(
      'BIND_FAILED',
      `cannot listen on ${where.transport.toUpperCase()} ${host}:${where.port}, ${ROLE_TEXT[where.role]}: ${errnoText(errno)} (${errno})`,
      { cause, details: { ...where, errno, ...details } },
    );
  }

  static authFailed(server: string, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'AUTH_FAILED',
      `the server at ${server} rejected our credentials: the network secret differs from the server's`,
      { details: { server, ...details } },
    );
  }

  static serverUnreachable(server: string, attempts: number, seconds: number, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'SERVER_UNREACHABLE',
      `no answer from the rendezvous server at ${server} after ${attempts} request${attempts === 1 ? '' : 's'} in ${seconds} s. ` +
        'Likely causes: the server is not running, the address or port is wrong, or a firewall drops traffic to it',
      { details: { server, attempts, seconds, ...details } },
    );
  }

  static peerNotFound(peer: string, server: string, seconds: number, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'PEER_NOT_FOUND',
      `peer "${peer}" did not appear within ${seconds} s: it never registered with the server at ${server} while this side waited ` +
        '(a run of it that ended earlier has left). Likely causes: it is not running yet, it uses other names, another server or another secret',
      { details: { peer, server, seconds, ...details } },
    );
  }

  static noPath(peer: string, seconds: number, diagnosis: string, details: ErrorDetails = {}): BurrowError {
    return new BurrowError('NO_PATH', `found peer "${peer}" but no direct path within ${seconds} s: ${diagnosis}`, {
      details: { peer, seconds, diagnosis, ...details },
    });
  }

  /**
   * The partner registered (we were introduced to it), then left before a path was found: it withdrew its
   * registration (`withdrew`: its attempt ended, by its timeout, an interrupt or an error), or the server no longer
   * holds it and nothing more came from the partner (`gone`: it stopped refreshing, killed or cut off, and expired).
   */
  static peerLeft(peer: string, server: string, how: 'withdrew' | 'gone', details: ErrorDetails = {}): BurrowError {
    const why = how === 'withdrew'
      ? 'it ended its attempt (its own timeout, an interrupt or an error) and withdrew its registration'
      : `the server at ${server} no longer holds its registration and nothing more came from it (it was killed, lost its network, or ended without a word)`;
    return new BurrowError('PEER_LEFT', `${peer} registered but left before a path was found: ${why}`, { details: { peer, server, how, ...details } });
  }

  /**
   * The partner runs `peerMode`, which does not work with our `mode`: this side would have to run `expected`, or the
   * partner `peerExpected`.
   */
  static modeMismatch(peer: string, peerMode: string, mode: string, expected: string, peerExpected: string, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'MODE_MISMATCH',
      `${peer} is running \`${peerMode}\`; run \`${expected}\` here (this side runs \`${mode}\`, which does not work with \`${peerMode}\`)`,
      { details: { peer, peerMode, mode, expected, peerExpected, ...details } },
    );
  }

  /** A second live registration under our name replaced ours: the server said so (a NOTICE, or 409 to a refresh). */
  static displaced(name: string, server: string, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'DISPLACED',
      `replaced: another peer registered as "${name}" with the server at ${server} and took over the name, so this one stopped: two peers run under the same name`,
      { details: { name, server, ...details } },
    );
  }

  /** Reserved (shared registration stores): the server answered that it cannot reach its store. */
  static storeUnavailable(server: string, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'STORE_UNAVAILABLE',
      `the server at ${server} cannot reach its registration store, so it cannot register or introduce peers now`,
      { details: { server, ...details } },
    );
  }

  static streamBroken(peer: string, detail: string, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'STREAM_BROKEN',
      `the stream with "${peer}" broke before everything was delivered: ${detail}. ` +
        'Likely causes: the peer stopped or its network went away, or a NAT dropped the connection',
      { details: { peer, detail, ...details } },
    );
  }

  static streamTampered(peer: string, detail: string, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'STREAM_TAMPERED',
      `the stream with "${peer}" was aborted because ${detail}; nothing unauthenticated was delivered. ` +
        'Likely causes: something on the path alters traffic, or the peer does not hold the network secret',
      { details: { peer, detail, ...details } },
    );
  }

  // WireGuard endpoint discovery. `peers` is a readable list of the peers concerned.

  static wgPeerNotRegistered(peers: string, server: string, seconds: number, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'PEER_NOT_FOUND',
      `WireGuard peer ${peers} never registered with the server at ${server} within ${seconds} s. Likely causes: burrow ` +
        'does not run on that peer, it uses another server or secret, or the public key configured here is not the one its interface has',
      { details: { peers, server, seconds, wg: 'not-registered', ...details } },
    );
  }

  static wgPeerNotReachingServer(peers: string, server: string, seconds: number, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'PEER_NOT_FOUND',
      `WireGuard peer ${peers} runs burrow, but in ${seconds} s its WireGuard interface never completed a handshake ` +
        `with the server at ${server}, so its public endpoint is unknown. Likely causes: a firewall on its side blocks ` +
        'UDP from its WireGuard port to the server, or its interface is down',
      { details: { peers, server, seconds, wg: 'not-reaching-server', ...details } },
    );
  }

  /**
   * `relayable`: the relay would carry it, but one-shot `burrow wg` cannot stay on as the proxy the relay needs
   * (`--continuous` can); false with `--relay never`.
   */
  static wgSymmetric(peers: string, whose: 'peer' | 'self', seconds: number, relayable = false, details: ErrorDetails = {}): BurrowError {
    const who = whose === 'peer' ? `peer ${peers} sits` : `this host sits (talking to ${peers})`;
    return new BurrowError(
      'NO_PATH',
      `no WireGuard handshake within ${seconds} s: ${who} behind a NAT that allocates a new public port for every ` +
        'destination (symmetric, endpoint-dependent mapping), so the port the server sees is not the one the other side ' +
        'must use and WireGuard cannot reach it directly. ' +
        (relayable
          ? "The server's relay can carry this peer, but the relay needs --continuous: burrow must stay on as the local proxy WireGuard sends through"
          : 'It works when the other side has a public address or a full-cone NAT, or with a forwarded UDP port on that NAT'),
      { details: { peers, whose, seconds, wg: 'symmetric', ...(relayable ? { relay: 'needs-continuous' } : {}), ...details } },
    );
  }

  static wgNoHandshake(peers: string, seconds: number, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'WG_NO_HANDSHAKE',
      `the endpoint of WireGuard peer ${peers} is set but no handshake completed within ${seconds} s. Likely causes: ` +
        "a firewall drops UDP to or from WireGuard's listen port, or the keys do not match (that peer must list this " +
        "interface's public key, and this interface that peer's)",
      { details: { peers, seconds, ...details } },
    );
  }

  static wgOnlyServerPeer(iface: string, server: string, hub: string | undefined, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'WG_ONLY_SERVER_PEER',
      hub !== undefined
        ? `interface ${iface}'s only peer (${hub}) is the rendezvous server's own host at ${server}: there is no other ` +
            'peer whose endpoint could be found (burrow finds the endpoints of other peers behind NATs)'
        : `interface ${iface} has no peers, so there is no endpoint to find`,
      { details: { interface: iface, server, hub: hub ?? null, ...details } },
    );
  }

  static wgNoInterface(iface: string, detail: string, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'WG_NO_INTERFACE',
      `WireGuard interface "${iface}" cannot be read: ${detail}. Likely causes: the name is wrong, the interface is not up, ` +
        'or this process lacks CAP_NET_ADMIN',
      { details: { interface: iface, detail, ...details } },
    );
  }

  static wgMissing(command: string, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'WG_MISSING',
      `the WireGuard tool \`${command}\` was not found; interfaces are read and configured through it`,
      { details: { command, ...details } },
    );
  }

  static wgNotReachingServer(server: string, seconds: number, details: ErrorDetails = {}): BurrowError {
    return new BurrowError(
      'WG_NOT_REACHING_SERVER',
      `this interface's WireGuard did not complete a handshake with the rendezvous server at ${server} within ${seconds} s, ` +
        "so the server cannot see this interface's public endpoint. Likely causes: a firewall blocks UDP from WireGuard's " +
        'listen port to the server, the interface is down, or the server is older than this burrow',
      { details: { server, seconds, ...details } },
    );
  }

  static aborted(details: ErrorDetails = {}): BurrowError {
    return new BurrowError('ABORTED', 'the operation was cancelled before it finished', { details });
  }

  static socket(what: string, cause: unknown, details: ErrorDetails = {}): BurrowError {
    const detail = detailOf(cause);
    return new BurrowError('SOCKET', `${what}: ${detail}`, { cause, details: { what, detail, ...details } });
  }
}

/**
 * True for a BurrowError, also one created by another copy of this module (the CLI's bundled entry
 * and the ESM modules it loads on demand each have their own class object).
 */
export function isBurrowError(e: unknown): e is BurrowError {
  return e instanceof Error && e.name === 'BurrowError' && typeof (e as Partial<BurrowError>).code === 'string' &&
    typeof (e as Partial<BurrowError>).details === 'object';
}
