/**
 * How the server answers: `Output` collects the actions of one input and counts every message and byte that leaves
 * (UDP on the main or alternate socket, or one STUN message down a TCP rendezvous connection), and `ConnTable`
 * remembers which registrations each TCP connection made, so that they go when it closes.
 */
import type { Endpoint } from '../codec/address.js';
import type { ServerStats } from './stats.js';
import type { Channel, Effect, Guard, Owner, ServerAction, ServerEvent, ServerSocketId } from './types.js';

export const UDP: Channel = { kind: 'udp' };

export class Output {
  readonly actions: ServerAction[] = [];

  constructor(private readonly stats: ServerStats) {}

  /** A datagram from one of the server's UDP sockets. */
  send(socket: ServerSocketId, to: Endpoint, data: Uint8Array): void {
    this.stats.datagramsOut++;
    this.stats.bytesOut += data.length;
    this.actions.push({ type: 'send', socket, to, data });
  }

  /** An answer or push on `channel`: the main UDP socket, or a TCP connection. */
  reply(channel: Channel, to: Endpoint, data: Uint8Array): void {
    if (channel.kind === 'udp') {
      this.send('main', to, data);
      return;
    }
    this.stats.datagramsOut++;
    this.stats.bytesOut += data.length;
    this.stats.streamMessagesOut++;
    this.stats.streamBytesOut += data.length;
    this.actions.push({ type: 'send-stream', conn: channel.conn, data });
  }

  /**
   * An answer to traffic that did not authenticate: sent only if it is no longer than the request, so that the
   * server can never be used to amplify (docs/protocol.md section 5).
   */
  replyUnauthenticated(channel: Channel, to: Endpoint, requestLength: number, data: Uint8Array): void {
    if (data.length > requestLength) return;
    this.stats.unauthBytesOut += data.length;
    this.reply(channel, to, data);
  }

  closeStream(conn: number): void {
    this.actions.push({ type: 'close-stream', conn });
  }

  event(event: ServerEvent): void {
    this.actions.push({ type: 'event', event });
  }

  rejected(from: Endpoint, reason: string): void {
    this.actions.push({ type: 'event', event: { type: 'rejected', from, reason } });
  }

  effect(ticket: number, effect: Effect, guard: Guard | undefined): void {
    this.actions.push({ type: 'effect', ticket, effect, guard });
  }

  toWgResponder(socket: ServerSocketId, from: Endpoint, data: Uint8Array): void {
    this.actions.push({ type: 'to-wg-responder', socket, from, data });
  }
}

/** Registrations made over each TCP connection (name space + name → session nonce), removed when it closes. */
export class ConnTable {
  private readonly conns = new Map<number, Map<string, { network: string; name: string; nonce: string }>>();

  get size(): number {
    return this.conns.size;
  }

  has(conn: number): boolean {
    return this.conns.has(conn);
  }

  add(conn: number, network: string, name: string, nonce: string): void {
    let regs = this.conns.get(conn);
    if (!regs) {
      regs = new Map<string, { network: string; name: string; nonce: string }>();
      this.conns.set(conn, regs);
    }
    // A connection carries one peer, which registers one or two names; a misbehaving one cannot grow this far.
    if (regs.size >= 16 && !regs.has(`${network}\u0000${name}`)) return;
    regs.set(`${network}\u0000${name}`, { network, name, nonce });
  }

  /** Forgets `conn` and returns what it had registered. */
  close(conn: number): { network: string; name: string; nonce: string }[] {
    const regs = this.conns.get(conn);
    this.conns.delete(conn);
    return regs ? [...regs.values()] : [];
  }
}

/** The owner of registrations made on `channel` of this server. */
export function ownerOf(server: string, channel: Channel, udpOwner: Owner): Owner {
  return channel.kind === 'udp' ? udpOwner : { server, channel };
}
