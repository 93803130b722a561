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
