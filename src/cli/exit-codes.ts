/**
 * The one table of `burrow`'s exit codes. The CLI maps error codes to these numbers (src/cli/errors.ts);
 * `burrow help` and the README's "Exit codes" section are generated from it (src/cli/docs.ts).
 */
import type { ErrorCode } from '../errors.js';

/** Error codes only the CLI raises (the library's are in src/errors.ts). */
export type CliOnlyCode = 'HANDOFF_NOT_FOUND' | 'HANDOFF_NOT_EXECUTABLE' | 'INTERRUPTED' | 'INTERNAL';
export type CliErrorCode = ErrorCode | CliOnlyCode;

export interface ExitCodeRow {
  readonly exit: number;
  /** When it happens. */
  readonly meaning: string;
  /** The error codes (in `--format json` errors) that end with this exit code. */
  readonly codes: readonly CliErrorCode[];
  /** The commands that can end with it; empty: any. */
  readonly commands?: readonly string[];
}

export const EXIT_CODES: readonly ExitCodeRow[] = [
  { exit: 0, meaning: 'success: connected (punch, pipe), delivered and verified (send, receive), every peer handshaken (wg)', codes: [] },
  {
    exit: 1,
    meaning: 'any other failure: the server did not answer, a socket failed, a file could not be read or written, a transfer was cancelled, an internal error',
    codes: ['SERVER_UNREACHABLE', 'SOCKET', 'COMMAND_FAILED', 'FILE_FAILED', 'ABORTED', 'INTERNAL'],
  },
  {
    exit: 2,
    meaning: 'usage or configuration: a wrong or missing flag, an unreadable secret file, a port that cannot be bound, a file that already exists on the receiving side',
    codes: ['USAGE', 'INVALID_OPTION', 'BIND_FAILED', 'FILE_EXISTS'],
  },
  { exit: 3, meaning: 'authentication failed: the network secret differs from the server\'s', codes: ['AUTH_FAILED'] },
  {
    exit: 4,
    meaning: 'the peer did not appear before the timeout, or it registered but left before a path was found (wg: a peer never registered, or its WireGuard never reached the server)',
    codes: ['PEER_NOT_FOUND', 'PEER_LEFT'],
  },
  {
    exit: 5,
    meaning: 'the peer was found but no direct path works and no relay carried it: the message names what became of the relay (wg: a peer, or this host, is behind a NAT that allocates a port per destination)',
    codes: ['NO_PATH'],
  },
  { exit: 6, meaning: 'the stream broke before everything was delivered', codes: ['STREAM_BROKEN'], commands: ['pipe', 'send', 'receive'] },
  { exit: 7, meaning: 'the stream was aborted because data failed authentication; nothing unauthenticated was written', codes: ['STREAM_TAMPERED'], commands: ['pipe', 'send', 'receive'] },
  { exit: 8, meaning: 'a WireGuard endpoint is set but no handshake completed', codes: ['WG_NO_HANDSHAKE'], commands: ['wg'] },
  { exit: 9, meaning: 'the interface has no peers, or its only peer is the rendezvous server\'s own host', codes: ['WG_ONLY_SERVER_PEER'], commands: ['wg'] },
  { exit: 10, meaning: 'the WireGuard interface does not exist or cannot be read', codes: ['WG_NO_INTERFACE'], commands: ['wg'] },
  { exit: 11, meaning: 'the `wg` tool is missing', codes: ['WG_MISSING'], commands: ['wg'] },
  { exit: 12, meaning: 'this interface\'s WireGuard never completed a handshake with the server', codes: ['WG_NOT_REACHING_SERVER'], commands: ['wg'] },
  { exit: 13, meaning: 'a second registration under the same name replaced this one', codes: ['DISPLACED'], commands: ['punch', 'pipe', 'send', 'receive'] },
  { exit: 14, meaning: 'the server cannot reach its registration store', codes: ['STORE_UNAVAILABLE'] },
  {
    exit: 15,
    meaning: 'the peer runs a command that does not pair with this one: punch pairs with punch, pipe with pipe, send with receive',
    codes: ['MODE_MISMATCH'],
    commands: ['punch', 'pipe', 'send', 'receive'],
  },
  { exit: 126, meaning: 'the handoff COMMAND exists but cannot be run (not executable, permission denied)', codes: ['HANDOFF_NOT_EXECUTABLE'], commands: ['punch'] },
  { exit: 127, meaning: 'the handoff COMMAND was not found', codes: ['HANDOFF_NOT_FOUND'], commands: ['punch'] },
  { exit: 130, meaning: 'interrupted by SIGINT (Ctrl-C); serve and wg --continuous stop cleanly with 0 instead', codes: ['INTERRUPTED'] },
  { exit: 143, meaning: 'terminated by SIGTERM; serve and wg --continuous stop cleanly with 0 instead', codes: ['INTERRUPTED'] },
];

/** With `punch -- COMMAND`, burrow exits with COMMAND's status once connected (128 + N when a signal N ended it). */
export const HANDOFF_NOTE = 'With `punch ... -- COMMAND`, burrow exits with COMMAND\'s status once connected (128+N when signal N ended it).';

export const EXIT = {
  OK: 0,
  OTHER: 1,
  USAGE: 2,
  CANNOT_EXECUTE: 126,
  NOT_FOUND: 127,
  SIGINT: 130,
  SIGTERM: 143,
} as const;

const BY_CODE = new Map<CliErrorCode, number>();
for (const row of EXIT_CODES) for (const code of row.codes) if (!BY_CODE.has(code)) BY_CODE.set(code, row.exit);

/** The exit code for an error code; 1 for a code the table does not know (an error from a newer library). */
export function exitCodeFor(code: string): number {
  return BY_CODE.get(code as CliErrorCode) ?? EXIT.OTHER;
}
