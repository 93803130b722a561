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
  | 'FILE_FAILED';

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
};

export class BurrowError extends Error {
  override readonly name = 'BurrowError';
  readonly exitCode: number;
  constructor(
    readonly code: ErrorCode,
    /** What happened, why it probably happened, and what to do next, as one readable text. */
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.exitCode = EXIT_FOR[code];
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
