/** `burrow stun`: prints our public address as a STUN server sees it. */
import { parseArgs } from 'node:util';
import { BurrowError } from '../errors.js';
import { stunQuery } from '../node/stun.js';
import { oneOf, seconds, type Io } from './common.js';
import { endpointKey } from '../codec/address.js';

export const STUN_USAGE = 'burrow stun HOST:PORT [--local [ADDR:]PORT] [--format text|json] [--timeout SECONDS]';

export async function runStun(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { local: { type: 'string' }, format: { type: 'string' }, timeout: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  const server = positionals[0];
  if (server === undefined || positionals.length > 1) throw BurrowError.usage('give exactly one STUN server, HOST:PORT');
  const format = oneOf('--format', values.format, ['text', 'json'] as const, 'text');
  const mapped = await stunQuery({
    server,
    ...(values.local !== undefined ? { local: values.local } : {}),
    timeoutMs: seconds('--timeout', values.timeout, 5),
    signal: io.signal,
  });
  io.stdout.write(format === 'json' ? `${JSON.stringify({ address: mapped.address, port: mapped.port })}\n` : `${endpointKey(mapped)}\n`);
  return 0;
}
