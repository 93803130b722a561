/**
 * The hard side's birthday sockets (src/core/punch/birthday.ts), as the Node driver opens and closes them for the
 * punch agent's `birthday-open` and `birthday-close` actions; and the process-wide gate every punch in this process
 * shares (at most one attempt at a time, at least 20 s between attempts with one peer).
 */
import type { Endpoint } from '../codec/address.js';
import { BirthdayGate, type BirthdayCloseAction, type BirthdayOpenAction, type PunchInput, type TransportSpec } from '../core/punch/index.js';
import type { MachineRun } from './driver.js';
import { UdpTransport } from './transport.js';

/** The one gate of this process. */
export const PROCESS_BIRTHDAY_GATE = new BirthdayGate();

/** The TTL a birthday socket goes back to after its opening packet (Linux's default). */
const DEFAULT_TTL = 64;

/**
 * Binds `count` UDP sockets on `address` (free ports), sends `data` once from each to `to` with IP TTL `ttl`, then
 * puts the TTL back. Stops early when the system refuses more sockets (EMFILE, ENOBUFS): what was bound is returned,
 * with the reason. Never throws.
 */
export async function openBirthdaySockets(address: string, count: number, ttl: number, to: Endpoint, data: Uint8Array): Promise<{ sockets: UdpTransport[]; error?: string }> {
  const sockets: UdpTransport[] = [];
  let error: string | undefined;
  // Bound in batches of 64: quick, and never hundreds of pending binds at once.
  for (let i = 0; i < count && error === undefined; i += 64) {
    const batch = await Promise.allSettled(Array.from({ length: Math.min(64, count - i) }, () => UdpTransport.bind(address, 0)));
    for (const r of batch) {
      if (r.status === 'fulfilled') sockets.push(r.value);
      else error ??= `only ${sockets.length} of ${count} birthday sockets could be opened: ${r.reason instanceof Error ? r.reason.message : String(r.reason)}`;
    }
  }
  await Promise.all(sockets.map((t) => new Promise<void>((resolve) => {
    const s = t.bound.socket;
    try {
      s.setTTL(ttl);
    } catch {
      // a platform without per-socket TTL: the opening packet goes out at the default TTL
    }
    t.send(to, data, () => {
      try {
        s.setTTL(DEFAULT_TTL);
      } catch {
        // closed meanwhile
      }
      resolve();
    });
  })));
  return error === undefined ? { sockets } : { sockets, error };
}

/** What a driver does with the agent's birthday actions; `onSocket` sees each socket attached (a proxy taps it). */
export function birthdayActions(
  localAddress: string,
  hooks: { readonly onOpen?: (id: string, t: UdpTransport) => void; readonly onClose?: (id: string) => void } = {},
): (action: BirthdayOpenAction | BirthdayCloseAction, r: MachineRun<unknown, PunchInput>) => void {
  return (action, r) => {
    if (action.type === 'birthday-close') {
      for (const id of action.transports) {
        hooks.onClose?.(id);
        r.detach(id);
      }
      return;
    }
    void openBirthdaySockets(localAddress, action.sockets, action.ttl, action.to, action.data).then(({ sockets, error }) => {
      const specs: TransportSpec[] = [];
      sockets.forEach((t, i) => {
        const id = `${action.prefix}${i}`;
        if (r.settled) {
          void t.close();
          return;
        }
        r.attach(id, t);
        hooks.onOpen?.(id, t);
        specs.push({ id, kind: 'udp', local: t.local, candidates: [], checks: 'passive' });
      });
      if (!r.settled) r.feed({ type: 'birthday-opened', attempt: action.attempt, transports: specs, ...(error !== undefined ? { error } : {}), now: Date.now() });
    });
  };
}
