/** `stunQuery()`: asks any STUN server (Burrow's or coturn's) for our public address. */
import { randomBytes } from 'node:crypto';
import type { Endpoint } from '../codec/address.js';
import { StunClientMachine, type StunClientAction } from '../core/stun-client.js';
import { BurrowError } from '../errors.js';
import { DEFAULT_PORT } from './punch.js';
import { bindUdp, closeUdp, endpointOf, parseLocal, resolveEndpoint, sendUdp } from './udp.js';

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
  const bound = await bindUdp(local.address, local.port).catch((err: unknown) => {
    throw BurrowError.bindFailed({ transport: 'udp', address: local.address, port: local.port, role: 'local' }, err);
  });
  const timeoutMs = options.timeoutMs ?? 5000;
  const machine = new StunClientMachine((n) => randomBytes(n), server, timeoutMs);
  return new Promise<Endpoint>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const settle = (finish: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      void closeUdp(bound.socket).then(finish);
    };
    const execute = (actions: StunClientAction[]): void => {
      for (const a of actions) {
        if (a.type === 'send') sendUdp(bound, server, a.data, () => undefined);
        else if (a.type === 'done') {
          const mapped = a.mapped;
          settle(() => {
            resolve(mapped);
          });
        } else {
          const detail = a.detail;
          const timedOut = a.reason === 'timeout';
          settle(() => {
            reject(
              timedOut
                ? BurrowError.serverUnreachable(`${server.address}:${server.port}`, machine.attempts, timeoutMs / 1000)
                : new BurrowError('SERVER_UNREACHABLE', `the STUN server at ${server.address}:${server.port} answered with an error (${detail}); it may not serve Binding requests on this port.`),
            );
          });
        }
      }
      if (settled) return;
      if (timer) clearTimeout(timer);
      const at = machine.nextTimeoutAt();
      if (at !== undefined) timer = setTimeout(() => {
        execute(machine.timer(Date.now()));
      }, Math.max(0, at - Date.now()));
    };
    const onAbort = (): void => {
      settle(() => {
        reject(BurrowError.aborted());
      });
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    bound.socket.on('message', (data, rinfo) => {
      execute(machine.datagram(endpointOf(rinfo), data));
    });
    bound.socket.on('error', (err) => {
      settle(() => {
        reject(BurrowError.socket('the UDP socket failed', err));
      });
    });
    execute(machine.start(Date.now()));
  });
}
