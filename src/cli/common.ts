/** Pieces every command shares: secret resolution, number flags, and the stderr reporter. */
import { BurrowError } from '../errors.js';
import { checkSecret, readSecretFile } from '../node/secret.js';

export interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  readonly signal: AbortSignal;
}

export function say(io: Io, line: string): void {
  io.stderr.write(`burrow: ${line}\n`);
}

/**
 * The network secret(s): --secret-file, else --secret (with a warning: other users can read the
 * command line), else BURROW_SECRET.
 */
export async function resolveSecrets(
  io: Io,
  values: { 'secret-file'?: string | undefined; secret?: string | undefined },
): Promise<string[]> {
  if (values['secret-file'] !== undefined) return readSecretFile(values['secret-file']);
  if (values.secret !== undefined) {
    say(io, 'warning: --secret is visible to other users of this machine (ps, /proc); prefer --secret-file or BURROW_SECRET.');
    checkSecret(values.secret, '--secret');
    return [values.secret];
  }
  const env = io.env.BURROW_SECRET;
  if (env !== undefined) {
    checkSecret(env, 'BURROW_SECRET');
    return [env];
  }
  throw BurrowError.usage('no network secret given', 'pass --secret-file FILE (make one with `burrow keygen > FILE`) or set BURROW_SECRET.');
}

export function seconds(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback * 1000;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw BurrowError.usage(`${flag} "${text}" is not a positive number of seconds`);
  return Math.round(n * 1000);
}

export function oneOf<T extends string>(flag: string, text: string | undefined, allowed: readonly T[], fallback: T): T {
  if (text === undefined) return fallback;
  if ((allowed as readonly string[]).includes(text)) return text as T;
  throw BurrowError.usage(`${flag} must be one of ${allowed.join(', ')}, not "${text}"`);
}

/** The flags of every command that meets a peer through the server (punch, pipe, send, receive). */
export const CONNECT_FLAGS = {
  server: { type: 'string' },
  'secret-file': { type: 'string' },
  secret: { type: 'string' },
  as: { type: 'string' },
  to: { type: 'string' },
  timeout: { type: 'string' },
} as const;

export interface ConnectFlags {
  server?: string | undefined;
  'secret-file'?: string | undefined;
  secret?: string | undefined;
  as?: string | undefined;
  to?: string | undefined;
  timeout?: string | undefined;
}

/** Checks the connection flags; call before any slow local checks so usage errors come first. */
export function checkConnectFlags(values: ConnectFlags): { server: string; name: string; peer: string; timeoutMs: number } {
  if (values.server === undefined) throw BurrowError.usage('--server HOST:PORT is required');
  if (values.as === undefined || values.to === undefined) throw BurrowError.usage('--as NAME and --to NAME are required');
  return { server: values.server, name: values.as, peer: values.to, timeoutMs: seconds('--timeout', values.timeout, 30) };
}

