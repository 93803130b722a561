/** `burrow keygen`: a new network secret, on stdout or into a new file that only its owner can read. */
import { open } from 'node:fs/promises';
import { generateSecret } from '../node/secret.js';
import { say, type Io } from './common.js';
import { usageError } from './parse.js';
import type { Parsed } from './schema.js';

export async function keygenCommand(parsed: Parsed<'keygen'>, io: Io): Promise<number> {
  const { values } = parsed;
  const secret = generateSecret();
  if (values.out === undefined) {
    io.stdout.write(values.format === 'json' ? `${JSON.stringify({ secret })}\n` : `${secret}\n`);
    return 0;
  }
  const path = values.out;
  let file;
  try {
    // 'wx': create, never replace (O_EXCL); the mode applies at creation, so the secret is never readable by others.
    file = await open(path, 'wx', 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    if (code === 'EEXIST') throw usageError(`--out ${path} already exists; it was left as it is`, 'choose another file name, or remove the old file first if you really mean to replace that secret');
    throw usageError(`cannot create --out ${path} (${code})`, 'check that its directory exists and that you may write there');
  }
  try {
    await file.chmod(0o600); // in case a umask or ACL widened the mode
    await file.writeFile(`${secret}\n`);
  } finally {
    await file.close();
  }
  if (values.format === 'json') io.stdout.write(`${JSON.stringify({ file: path, mode: '0600' })}\n`);
  say(io, `wrote a new secret to ${path} (mode 0600); share it with the server and the peers over a safe channel`);
  return 0;
}
