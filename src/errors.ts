/**
 * Every error a user can meet: a stable code, a documented process exit code, and a message that says
 * what happened, the likely cause and the next step. Created through the static factories so the
 * wording lives in one place. README.md ("Exit codes") documents the table below.
 */

export const ExitCode = {
  OK: 0,
  OTHER: 1,
  USAGE: 2,
  AUTH_FAILED: 3,
  PEER_NOT_FOUND: 4,
  NO_PATH: 5,
  STREAM_BROKEN: 6,
  STREAM_TAMPERED: 7,
  WG_NO_HANDSHAKE: 8,
  WG_ONLY_SERVER_PEER: 9,
  WG_NO_INTERFACE: 10,
  WG_MISSING: 11,
  WG_NOT_REACHING_SERVER: 12,
} as const;

export type ErrorCode =
  | 'USAGE'
  | 'AUTH_FAILED'
  | 'PEER_NOT_FOUND'
  | 'NO_PATH'
  | 'SERVER_UNREACHABLE'
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

const EXIT_FOR: Record<ErrorCode, number> = {
  USAGE: ExitCode.USAGE,
  AUTH_FAILED: ExitCode.AUTH_FAILED,
  PEER_NOT_FOUND: ExitCode.PEER_NOT_FOUND,
  NO_PATH: ExitCode.NO_PATH,
  SERVER_UNREACHABLE: ExitCode.OTHER,
  ABORTED: ExitCode.OTHER,
  SOCKET: ExitCode.OTHER,
  COMMAND_FAILED: ExitCode.OTHER,
  STREAM_BROKEN: ExitCode.STREAM_BROKEN,
  STREAM_TAMPERED: ExitCode.STREAM_TAMPERED,
  FILE_EXISTS: ExitCode.USAGE,
  FILE_FAILED: ExitCode.OTHER,
  WG_NO_HANDSHAKE: ExitCode.WG_NO_HANDSHAKE,
  WG_ONLY_SERVER_PEER: ExitCode.WG_ONLY_SERVER_PEER,
  WG_NO_INTERFACE: ExitCode.WG_NO_INTERFACE,
  WG_MISSING: ExitCode.WG_MISSING,
  WG_NOT_REACHING_SERVER: ExitCode.WG_NOT_REACHING_SERVER,
};

export class BurrowError extends Error {
  override readonly name = 'BurrowError';
  readonly exitCode: number;
  /** The facts behind the message as data (e.g. a failed punch's stage, NAT findings and pair states), when known. */
  readonly details: Readonly<Record<string, unknown>> | undefined;
  constructor(
    readonly code: ErrorCode,
    /** What happened, why it probably happened, and what to do next, as one readable text. */
    message: string,
    options?: { cause?: unknown; details?: Readonly<Record<string, unknown>> },
  ) {
    super(message, options);
    this.exitCode = EXIT_FOR[code];
    this.details = options?.details;
  }

  /** This error with `details` attached. */
  withDetails(details: Readonly<Record<string, unknown>>): BurrowError {
    return new BurrowError(this.code, this.message, { cause: this.cause, details });
  }

  static usage(what: string, next = 'run `burrow --help` for the options.'): BurrowError {
    return new BurrowError('USAGE', `${what}; ${next}`);
  }

  static authFailed(server: string): BurrowError {
    return new BurrowError(
      'AUTH_FAILED',
      `the server at ${server} rejected our credentials: the network secret differs from the server's. ` +
        'Use the same secret file (or BURROW_SECRET) on the server and on both peers; `burrow keygen` makes a new one.',
    );
  }

  static serverUnreachable(server: string, attempts: number, seconds: number): BurrowError {
    return new BurrowError(
      'SERVER_UNREACHABLE',
      `no answer from the rendezvous server at ${server} after ${attempts} requests in ${seconds} s. ` +
        'Likely causes: the server is not running, the address or port is wrong, or a firewall drops UDP to it. ' +
        `Check with \`burrow stun ${server}\` and make sure UDP to that port is allowed.`,
    );
  }

  static peerNotFound(peer: string, server: string, seconds: number): BurrowError {
    return new BurrowError(
      'PEER_NOT_FOUND',
      `peer "${peer}" did not appear within ${seconds} s: it never registered with the server at ${server}. ` +
        'Check that the other side runs with --as and --to swapped, against the same server, with the same secret, ' +
        'and that it started before this timeout.',
    );
  }

  static noPath(peer: string, seconds: number, diagnosis: string): BurrowError {
    return new BurrowError('NO_PATH', `found peer "${peer}" but no direct path within ${seconds} s: ${diagnosis}`);
  }

  static streamBroken(peer: string, detail: string): BurrowError {
    return new BurrowError(
      'STREAM_BROKEN',
      `the stream with "${peer}" broke before everything was delivered: ${detail}. ` +
        'Likely causes: the peer stopped or its network went away, or a NAT dropped the connection. Run both sides again.',
    );
  }

  static streamTampered(peer: string, detail: string): BurrowError {
    return new BurrowError(
      'STREAM_TAMPERED',
      `the stream with "${peer}" was aborted because ${detail}. Nothing unauthenticated was written. ` +
        'Something on the path is altering traffic, or the peer does not hold the network secret; try another network.',
    );
  }

  // WireGuard endpoint discovery (`burrow wg`). `peers` is a readable list of the peers concerned.

  static wgPeerNotRegistered(peers: string, server: string, seconds: number): BurrowError {
    return new BurrowError(
      'PEER_NOT_FOUND',
      `WireGuard peer ${peers} never registered with the server at ${server} within ${seconds} s. ` +
        'Run `burrow wg` on that peer too, with the same --server and the same secret, and check that the public key ' +
        'configured here is the one its interface really has (`wg show IFACE public-key` on that peer).',
    );
  }

  static wgPeerNotReachingServer(peers: string, server: string, seconds: number): BurrowError {
    return new BurrowError(
      'PEER_NOT_FOUND',
      `WireGuard peer ${peers} runs burrow, but in ${seconds} s its WireGuard interface never completed a handshake ` +
        `with the server at ${server}, so its public endpoint is unknown. Likely causes: a firewall on its side blocks ` +
        "UDP from its WireGuard port to the server, or its interface is down. On that peer, check `wg show` for the server peer's handshake.",
    );
  }

  static wgSymmetric(peers: string, whose: 'peer' | 'self', seconds: number): BurrowError {
    const who = whose === 'peer' ? `peer ${peers} sits` : `this host sits (talking to ${peers})`;
    return new BurrowError(
      'NO_PATH',
      `no WireGuard handshake within ${seconds} s: ${who} behind a NAT that allocates a new public port for every ` +
        'destination (symmetric, endpoint-dependent mapping), so the port the server sees is not the one the other side ' +
        'must use and WireGuard cannot reach it directly. It works when the other side has a public address or a ' +
        'full-cone NAT; otherwise forward a UDP port to WireGuard on that NAT (or use a relay).',
    );
  }

  static wgNoHandshake(peers: string, seconds: number): BurrowError {
    return new BurrowError(
      'WG_NO_HANDSHAKE',
      `the endpoint of WireGuard peer ${peers} is set but no handshake completed within ${seconds} s. Likely causes: ` +
        "a firewall drops UDP to or from WireGuard's listen port, or the keys do not match (that peer must list this " +
        "interface's public key, and this interface that peer's). Compare `wg show` on both sides.",
    );
  }

  static wgOnlyServerPeer(iface: string, server: string, hub: string | undefined): BurrowError {
    return new BurrowError(
      'WG_ONLY_SERVER_PEER',
      hub !== undefined
        ? `interface ${iface}'s only peer (${hub}) is the rendezvous server's own host at ${server}: there is no other ` +
            "peer whose endpoint burrow could find. burrow finds the endpoints of *other* peers behind NATs; add each peer " +
            'you want to reach directly to this interface (`wg set ' + iface + ' peer KEY allowed-ips IP/32`, no endpoint) ' +
            'and run `burrow wg` on those peers too.'
        : `interface ${iface} has no peers, so there is no endpoint to find. Add the peers you want to reach ` +
            '(`wg set ' + iface + ' peer KEY allowed-ips IP/32`, no endpoint) and run `burrow wg` on them too.',
    );
  }

  static wgNoInterface(iface: string, detail: string): BurrowError {
    return new BurrowError(
      'WG_NO_INTERFACE',
      `WireGuard interface "${iface}" cannot be read: ${detail}. Check the name with \`wg show interfaces\`; bring it up ` +
        'first (`wg-quick up ' + iface + '`, or `wireguard-go ' + iface + '` and `wg setconf`), and run as root or with CAP_NET_ADMIN.',
    );
  }

  static wgMissing(command: string): BurrowError {
    return new BurrowError(
      'WG_MISSING',
      `the WireGuard tool \`${command}\` was not found. burrow reads and configures interfaces through it: install ` +
        'wireguard-tools (Debian/Ubuntu: `apt install wireguard-tools`) or point BURROW_WG at the binary.',
    );
  }

  static wgNotReachingServer(server: string, seconds: number): BurrowError {
    return new BurrowError(
      'WG_NOT_REACHING_SERVER',
      `this interface's WireGuard did not complete a handshake with the rendezvous server at ${server} within ${seconds} s, ` +
        "so the server cannot see this interface's public endpoint. Likely causes: a firewall blocks UDP from WireGuard's " +
        'listen port to the server, the interface is down, or the server is older than this burrow. Check `wg show` for the ' +
        "server peer's latest handshake.",
    );
  }

  static aborted(): BurrowError {
    return new BurrowError('ABORTED', 'the operation was cancelled before it finished.');
  }

  static socket(what: string, cause: unknown): BurrowError {
    const detail = cause instanceof Error ? cause.message : String(cause);
    return new BurrowError('SOCKET', `${what}: ${detail}`, { cause });
  }
}

/**
 * True for a BurrowError, also one created by another copy of this module (the CLI's bundled entry
 * and the ESM modules it loads on demand each have their own class object).
 */
export function isBurrowError(e: unknown): e is BurrowError {
  return e instanceof Error && e.name === 'BurrowError' && typeof (e as Partial<BurrowError>).exitCode === 'number' && typeof (e as Partial<BurrowError>).code === 'string';
}
