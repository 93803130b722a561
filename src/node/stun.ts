/** `stunQuery()`: asks any STUN server (Burrow's or coturn's) for our public address. */
import { randomBytes } from 'node:crypto';
import type { Endpoint } from '../codec/address.js';
import { DEFAULT_PORT } from '../codec/messages.js';
import { StunClientMachine } from '../core/stun-client.js';
import { BurrowError } from '../errors.js';
import { runMachine } from './driver.js';
import { UdpTransport } from './transport.js';
import { parseLocal, resolveEndpoint } from './udp.js';

export interface StunQueryOptions {
  readonly server: string;
  readonly local?: string;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export async function stunQuery(options: StunQueryOptions): Promise<Endpoint> {
  options.signal?.throwIfAborted();
  const server = await resolveEndpoint(options.server, DEFAULT_PORT, 'STUN server');
  const local = parseLocal(options.local, server.address.includes(':') ? 6 : 4);
  const udp = await UdpTransport.bind(local.address, local.port).catch((err: unknown) => {
    throw BurrowError.bindFailed({ transport: 'udp', address: local.address, port: local.port, role: 'local' }, err);
  });
  const machine = new StunClientMachine({ server, transport: 'udp', timeoutMs: options.timeoutMs ?? 5000, randomBytes: (n) => randomBytes(n) });
  return runMachine(machine, { transports: { udp }, signal: options.signal }).result;
}
