/** `burrow stun`: prints our public address as a STUN server sees it. */
import { endpointKey } from '../codec/address.js';
import { stunQuery } from '../node/stun.js';
import { ms, type Io } from './common.js';
import { checkServerAddress } from './parse.js';
import type { Parsed } from './schema.js';

export async function stunCommand(parsed: Parsed<'stun'>, io: Io): Promise<number> {
  const { values } = parsed;
  const [server = ''] = parsed.positionals;
  checkServerAddress('the STUN server', server);
  const mapped = await stunQuery({
    server,
    ...(values.local !== undefined ? { local: values.local } : {}),
    timeoutMs: ms(values.timeout),
    signal: io.signal,
  });
  io.stdout.write(values.format === 'json' ? `${JSON.stringify({ address: mapped.address, port: mapped.port })}\n` : `${endpointKey(mapped)}\n`);
  return 0;
}
