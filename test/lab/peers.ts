/** Helpers shared by the lab tests that run Burrow's CLI as peers: environment, files, digests. */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { appendFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/** The binary users run (package.json `bin`). */
export const CLI = fileURLToPath(new URL('../../src/cli/burrow.cjs', import.meta.url));

/** The environment for peers and servers: a shared secret, without the CA bundle Node would load for nothing. */
export function peerEnv(secret: string): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, BURROW_SECRET: secret };
  delete e.NODE_EXTRA_CA_CERTS;
  return e;
}

export async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Writes `bytes` of random data to `path` in 8 MiB pieces and returns its SHA-256. */
export async function randomFile(path: string, bytes: number): Promise<string> {
  await writeFile(path, Buffer.alloc(0));
  const piece = 8 * 1024 * 1024;
  for (let left = bytes; left > 0; left -= piece) await appendFile(path, randomBytes(Math.min(piece, left)));
  return sha256(path);
}
