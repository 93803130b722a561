/**
 * `punch()`: the Node driver around PunchMachine. It owns one UDP socket and one timer, feeds the
 * machine datagrams and timer ticks, executes its actions, and always releases the socket before it
 * settles, so the caller can hand the same local port to another program at once.
 */
import { randomBytes } from 'node:crypto';
import type { Endpoint } from '../codec/address.js';
import { checkName } from '../codec/messages.js';
import { PunchMachine, type PunchAction, type PunchEvent, type PunchResult, type PunchTiming } from '../core/punch.js';
import { deriveNetworkKeys } from '../crypto/keys.js';
import { BurrowError } from '../errors.js';
import { hostCandidates } from './candidates.js';
import { bindUdp, closeUdp, endpointOf, parseLocal, resolveEndpoint, sendUdp } from './udp.js';

export const DEFAULT_PORT = 3478;

export interface PunchOptions {
  /** The rendezvous server, `HOST:PORT` (port defaults to 3478). */
  readonly server: string;
  /** The network secret (text as read from the secret file, or raw bytes). */
  readonly secret: string | Uint8Array;
  /** Our name and the partner's. */
  readonly name: string;
  readonly peer: string;
  /** Local `[ADDR:]PORT` to bind; default: any address, a free port. */
  readonly local?: string;
  /** Give up after this long (default 30 s). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Progress: registration, NAT finding, introduction, validated paths, connection. */
  readonly onEvent?: (event: PunchEvent) => void;
  readonly timing?: Partial<PunchTiming>;
}

export type { PunchEvent, PunchResult };

function validate(options: PunchOptions): void {
  for (const [option, value] of [['name', options.name], ['peer', options.peer]] as const) {
    const problem = checkName(value);
    if (problem !== undefined) throw BurrowError.invalidOption(option, `the name ${problem}`, value);
  }
  if (options.name === options.peer) throw BurrowError.invalidOption('peer', 'the same as name: each side names itself and the other', options.peer);
  const t = options.timeoutMs ?? 30_000;
  if (!Number.isFinite(t) || t <= 0) throw BurrowError.invalidOption('timeoutMs', 'not a positive number', String(t));
}

/** Punches a direct UDP path to `peer` through the rendezvous server. Resolves once both sides confirmed it. */
export async function punch(options: PunchOptions): Promise<PunchResult> {
  validate(options);
  options.signal?.throwIfAborted();
  const server = await resolveEndpoint(options.server, DEFAULT_PORT, 'server');
  const local = parseLocal(options.local, server.address.includes(':') ? 6 : 4);
  const secret = typeof options.secret === 'string' ? Buffer.from(options.secret, 'utf8') : options.secret;
  if (secret.length === 0) throw BurrowError.invalidOption('secret', 'the network secret is empty');
  let bound;
  try {
    bound = await bindUdp(local.address, local.port);
  } catch (err) {
    throw BurrowError.bindFailed({ transport: 'udp', address: local.address, port: local.port, role: 'local' }, err);
  }
  const machine = new PunchMachine({
    name: options.name,
    peer: options.peer,
    keys: deriveNetworkKeys(secret),
    server,
    localAddress: bound.local.address,
    localPort: bound.local.port,
    hosts: hostCandidates(bound.local, bound.family, server),
    timeoutMs: options.timeoutMs ?? 30_000,
    sessionNonce: randomBytes(16),
    randomBytes: (n) => randomBytes(n),
    ...(options.timing ? { timing: options.timing } : {}),
  });
  const { socket } = bound;

  return new Promise<PunchResult>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    let inFlight = 0;
    let closing: (() => void) | undefined;

    const settle = (finish: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.removeAllListeners('message');
      // Close only after the last datagrams (e.g. CLOSE to the partner) have left.
      const close = (): void => {
        void closeUdp(socket).then(finish);
      };
      if (inFlight === 0) close();
      else closing = close;
    };
    const execute = (actions: PunchAction[]): void => {
      for (const a of actions) {
        switch (a.type) {
          case 'send':
            inFlight++;
            sendUdp(bound, a.to, a.data, () => undefined, () => {
              inFlight--;
              if (inFlight === 0 && closing) closing();
            });
            break;
          case 'event':
            options.onEvent?.(a.event);
            break;
          case 'done': {
            const result = a.result;
            settle(() => {
              resolve(result);
            });
            break;
          }
          case 'fail': {
            const error = a.error;
            settle(() => {
              reject(error);
            });
            break;
          }
          default: {
            const never: never = a;
            throw new Error(`unknown action ${String(never)}`);
          }
        }
      }
      if (settled) return;
      if (timer) clearTimeout(timer);
      const at = machine.nextTimeoutAt();
      if (at !== undefined) {
        timer = setTimeout(() => {
          execute(machine.handle({ type: 'timer', now: Date.now() }));
        }, Math.max(0, at - Date.now()));
      }
    };
    const onAbort = (): void => {
      settle(() => {
        reject(BurrowError.aborted());
      });
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('message', (data, rinfo) => {
      const from: Endpoint = endpointOf(rinfo);
      execute(machine.handle({ type: 'datagram', from, data, now: Date.now() }));
    });
    socket.on('error', (err) => {
      settle(() => {
        reject(BurrowError.socket('the UDP socket failed', err));
      });
    });
    execute(machine.handle({ type: 'start', now: Date.now() }));
  });
}
