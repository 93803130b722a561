/** Pieces every command shares: the streams, stderr reporting (silenced by --quiet), secrets, and the server watch. */
import { endpointKey, type Endpoint } from '../codec/address.js';
import { BurrowError } from '../errors.js';
import { checkSecret, readSecretFile, secretWarning } from '../node/secret.js';
import { usageError } from './parse.js';

export interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  readonly signal: AbortSignal;
  /** --quiet: nothing on stderr but errors. */
  readonly quiet?: boolean;
}

/** A progress or diagnostic line on stderr (nothing with --quiet). */
export function say(io: Io, line: string): void {
  if (io.quiet !== true) io.stderr.write(`burrow: ${line}\n`);
}

export function warn(io: Io, line: string): void {
  if (io.quiet !== true) io.stderr.write(`burrow: warning: ${line}\n`);
}

export interface SecretFlags {
  readonly 'secret-file'?: string | undefined;
  readonly secret?: string | undefined;
}

/**
 * The network secret(s), from the first of: --secret-file FILE, --secret TEXT (with a warning: other users
 * can read command lines), BURROW_SECRET_FILE, BURROW_SECRET. A flag beats the environment. (The parser
 * already put BURROW_SECRET_FILE into values['secret-file'] when no flag was given; `secretFromEnv` says so.)
 * Whitespace around a secret is ignored; a secret shorter than 16 bytes draws a warning.
 */
export async function resolveSecrets(
  io: Io,
  values: SecretFlags,
  secretFileFromEnv = false,
  onWarning: (line: string) => void = (line) => { warn(io, line); },
): Promise<string[]> {
  let secrets: string[];
  let source: string;
  if (values['secret-file'] !== undefined && !(secretFileFromEnv && values.secret !== undefined)) {
    secrets = await readSecretFile(values['secret-file']);
    source = secretFileFromEnv ? `BURROW_SECRET_FILE (${values['secret-file']})` : values['secret-file'];
  } else if (values.secret !== undefined) {
    onWarning('--secret is visible to other users of this machine (ps, /proc); prefer --secret-file or BURROW_SECRET_FILE.');
    source = '--secret';
    secrets = [checkSecret(values.secret, source)];
  } else if (io.env.BURROW_SECRET !== undefined) {
    source = 'BURROW_SECRET';
    secrets = [checkSecret(io.env.BURROW_SECRET, source)];
  } else {
    throw usageError(
      'no network secret given',
      'pass --secret-file FILE (make one with `burrow keygen --out FILE`), or set BURROW_SECRET_FILE or BURROW_SECRET',
    );
  }
  for (const s of secrets) {
    const weak = secretWarning(s);
    if (weak !== undefined) onWarning(`the secret from ${source} ${weak}; \`burrow keygen\` makes a strong one.`);
  }
  return secrets;
}

/** Seconds (as parsed) to milliseconds. */
export function ms(seconds: number): number {
  return Math.round(seconds * 1000);
}

/** How long a command waits for its server's first answer before saying so. */
export const SERVER_SILENCE_MS = 3000;

/**
 * Says on stderr when the server has not answered within 3 s; the attempt itself goes on until its
 * timeout. Call `answered()` on the library's first sign of the server (e.g. the `registered` event), and
 * `stop()` when the attempt ends.
 */
export function watchServer(io: Io, server: string, timeoutMs: number, transport: string): { answered(): void; stop(): void } {
  let timer: NodeJS.Timeout | undefined = setTimeout(() => {
    timer = undefined;
    const left = Math.max(0, Math.round((timeoutMs - SERVER_SILENCE_MS) / 1000));
    say(io, `no answer yet from the server at ${server} after ${SERVER_SILENCE_MS / 1000} s; still trying for ${left} s more ` +
      `(is it running, and is ${transport} to that port open? \`burrow stun ${server}\` checks)`);
  }, SERVER_SILENCE_MS);
  const stop = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };
  return { answered: stop, stop };
}

/** The line every command prints when it moves to the next of `--server S1,S2` (the failover event). */
export function failoverLine(from: Endpoint, to: Endpoint): string {
  return `the server at ${endpointKey(from)} stopped answering; registering with ${endpointKey(to)}`;
}

/** Throws BurrowError.aborted() when the CLI's signal fired (before starting something slow). */
export function checkNotAborted(io: Io): void {
  if (io.signal.aborted) throw BurrowError.aborted();
}
