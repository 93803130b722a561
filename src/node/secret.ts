/** Where network secrets come from: a file, the environment, or (discouraged) the command line. */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { BurrowError } from '../errors.js';

/** A new random secret: 32 bytes, base64url (43 characters). */
export function generateSecret(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * Reads a secret file. The first non-empty line is the secret; a trailing newline (LF or CRLF) is
 * ignored. A server reads every non-empty line, so a file can hold the new and old secret while
 * clients move over (see README, "Rotating the secret").
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
    const code = (err as NodeJS.ErrnoException).code;
    throw BurrowError.usage(
      `cannot read the secret file ${path} (${code ?? String(err)})`,
      code === 'ENOENT' ? 'create it with `burrow keygen > FILE` or pass the right path.' : 'check its permissions.',
    );
  }
  const lines = text.split(/\r?\n/).filter((l) => l.length > 0);
  if (lines.length === 0) throw BurrowError.usage(`the secret file ${path} is empty`, 'put a secret in it with `burrow keygen > FILE`.');
  return lines;
}

export function checkSecret(secret: string, source: string): void {
  if (secret.length === 0) throw BurrowError.usage(`the secret from ${source} is empty`, 'make one with `burrow keygen`.');
}
