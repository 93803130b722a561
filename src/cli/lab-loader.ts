/** Loads `burrow lab` (src/cli/lab.ts and src/lab), which ships with a source checkout only. */
import { usageError } from './parse.js';

export async function loadLab(): Promise<typeof import('./lab.js')> {
  try {
    return await import('./lab.js');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') {
      throw usageError('the NAT lab is not part of the installed package', 'run `burrow lab` and `burrow demo --lab` from a source checkout (git clone, npm ci), as root');
    }
    throw err;
  }
}
