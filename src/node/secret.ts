/** Where network secrets come from: a file, the environment, or the command line; and new ones. */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { BurrowError } from '../errors.js';

/** A new random secret: 32 bytes, base64url (43 characters). */
export function generateSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** Secrets shorter than this (in bytes) can be guessed offline from one captured message. */
export const MIN_SECRET_BYTES = 16;

/**
 * Reads a secret file. Each non-empty line, without the whitespace around it, is a secret; the first is
 * the one a client uses. A server accepts every line, so a file can hold the new and old secret while
 * clients move over (see README, "Secret rotation").
 */
export function readSecretFile(path: string): Promise<string[]> {
  try {
    return Promise.resolve(readSecretLines(path));
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

function readSecretLines(path: string): string[] {
  let text: string;
  try {
    // Synchronous on purpose: a tiny file, and node:fs/promises would cost the CLI start-up time.
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw BurrowError.invalidOption('secret', `cannot read the secret file ${path} (${code})`, undefined, { path, errno: code });
  }
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  if (lines.length === 0) throw BurrowError.invalidOption('secret', `the secret file ${path} is empty`, undefined, { path });
  return lines;
}

/** The secret without the whitespace around it; an empty one is refused. `source` names where it came from. */
export function checkSecret(secret: string, source: string): string {
  const trimmed = secret.trim();
  if (trimmed.length === 0) throw BurrowError.invalidOption('secret', `the secret from ${source} is empty`, undefined, { source });
  return trimmed;
}

/** Why a secret is weak (too short), or undefined. */
export function secretWarning(secret: string): string | undefined {
  const bytes = Buffer.byteLength(secret, 'utf8');
  return bytes < MIN_SECRET_BYTES ? `is only ${bytes} byte${bytes === 1 ? '' : 's'} long (fewer than ${MIN_SECRET_BYTES}), so it can be guessed` : undefined;
}
