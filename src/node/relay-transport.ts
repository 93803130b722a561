/**
 * A relay allocation as a datagram transport: the sans-IO TURN client (src/core/turn/client.ts) driven over the punch
 * socket itself. The socket's datagrams from the TURN server's address that are TURN (Allocate, Refresh, ChannelBind
 * answers, Data indications, ChannelData) are taken off the socket before the punch agent sees them; everything else
 * (the rendezvous server's answers, even when the built-in relay shares its address; the partner's probes) goes on as
 * before. So a relayed pair leaves from the very socket, and NAT mapping, the direct pairs use: one NAT mapping to the
 * relay, no second socket to keep alive.
 */
import { endpointKey, type Endpoint } from '../codec/address.js';
import { looksLikeStun } from '../codec/stun.js';
import { looksLikeChannelData, TurnMethod } from '../codec/turn.js';
import { TurnClient, type TurnAction, type TurnClientConfig, type TurnFailure } from '../core/turn/client.js';
import type { DatagramTransport, TransportHandlers, UdpTransport } from './transport.js';

const TURN_METHODS: ReadonlySet<number> = new Set(Object.values(TurnMethod));

/** Whether a datagram is TURN traffic: ChannelData, or a STUN message of a TURN method. */
export function isTurnDatagram(data: Uint8Array): boolean {
  if (looksLikeChannelData(data)) return true;
  if (!looksLikeStun(data)) return false;
  const type = ((data[0] ?? 0) << 8) | (data[1] ?? 0);
  const method = ((type & 0x3e00) >> 2) | ((type & 0x00e0) >> 1) | (type & 0x000f);
  return TURN_METHODS.has(method);
}

/** What the allocation gave. */
export interface Allocation {
  readonly relayed: Endpoint;
  readonly mapped: Endpoint | undefined;
  readonly lifetimeSeconds: number;
}

/** The allocation failed (or was lost): the TURN client's reason, and which server. */
export class RelayAllocationError extends Error {
  constructor(
    readonly server: string,
    readonly failure: TurnFailure,
  ) {
    super(`the relay at ${server} ${describeTurnFailure(failure)}`);
  }
}

/** Prose for a TURN failure: "refused the allocation: 401 Unauthorized", "did not answer (5 requests)". */
export function describeTurnFailure(f: TurnFailure): string {
  if (f.code === 0) return f.stage === 'allocate' ? `did not answer (${f.attempts} Allocate requests)` : `stopped answering (${f.reason})`;
  const what = f.stage === 'allocate' ? 'refused the allocation' : 'refused to refresh the allocation';
  return `${what}: ${f.code} ${f.reason}`;
}

export interface RelayTransportOptions {
  /** The TURN server. */
  readonly server: Endpoint;
  /** How it is named in messages (`turn:HOST:PORT`, "the built-in relay at HOST:PORT"). */
  readonly label: string;
  readonly client: TurnClientConfig;
  readonly now?: () => number;
}

export class RelayTransport implements DatagramTransport {
  readonly description: string;
  /** Datagrams for another user (the proxy's data): when one returns true the datagram is not delivered. */
  readonly intercepts: ((from: Endpoint, data: Uint8Array) => boolean)[] = [];
  private readonly client: TurnClient;
  private readonly clock: () => number;
  private readonly serverKey: string;
  private handlers: TransportHandlers | undefined;
  private timer: NodeJS.Timeout | undefined;
  private settle: { resolve: (a: Allocation) => void; reject: (e: RelayAllocationError) => void } | undefined;
  private readonly intercept = (from: Endpoint, data: Uint8Array): boolean => {
    if (endpointKey(from) !== this.serverKey || !isTurnDatagram(data)) return false;
    this.run({ type: 'datagram', data, now: this.clock() });
    return true;
  };
  private closed = false;
  /** While closing: resolves close() once the deallocation has left. */
  private flushed: (() => void) | undefined;
  /** Bytes relayed, both ways (payloads). */
  readonly counters = { sent: 0, received: 0 };

  constructor(
    private readonly udp: UdpTransport,
    private readonly options: RelayTransportOptions,
  ) {
    this.description = `the relay allocation on ${options.label}`;
    this.client = new TurnClient(options.client);
    this.clock = options.now ?? Date.now;
    this.serverKey = endpointKey(options.server);
    udp.intercepts.push(this.intercept);
  }

  get local(): Endpoint {
    return this.udp.local;
  }

  get server(): Endpoint {
    return this.options.server;
  }

  get label(): string {
    return this.options.label;
  }

  /** Allocates; rejects with RelayAllocationError. Call once. */
  allocate(): Promise<Allocation> {
    return new Promise<Allocation>((resolve, reject) => {
      this.settle = { resolve, reject };
      this.run({ type: 'start', now: this.clock() });
    });
  }

  send(to: Endpoint, data: Uint8Array, done: () => void): void {
    this.counters.sent += data.length;
    this.run({ type: 'send', peer: to, data, now: this.clock() });
    done();
  }

  listen(handlers: TransportHandlers): void {
    this.handlers = handlers;
  }

  /** Deletes the allocation (one Refresh with LIFETIME 0) and resolves once that has left the socket. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.settle) {
      this.settle.reject(new RelayAllocationError(this.options.label, { stage: 'allocate', code: 0, reason: 'closed before the allocation', attempts: 0 }));
      this.settle = undefined;
    }
    return new Promise<void>((resolve) => {
      this.flushed = resolve;
      this.run({ type: 'close', now: this.clock() });
      this.shutdown();
      // Nothing was sent (no allocation to delete): resolve now.
      if (this.takeFlushed()) resolve();
    });
  }

  /** Read through a call: execute() may have changed it (lint would assume it cannot). */
  private isClosed(): boolean {
    return this.closed;
  }

  private takeFlushed(): boolean {
    const had = this.flushed !== undefined;
    this.flushed = undefined;
    return had;
  }

  private shutdown(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const i = this.udp.intercepts.indexOf(this.intercept);
    if (i >= 0) this.udp.intercepts.splice(i, 1);
  }

  private run(input: Parameters<TurnClient['handle']>[0]): void {
    if (this.closed) return;
    let actions: TurnAction[];
    try {
      actions = this.client.handle(input);
    } catch {
      return; // a machine never throws on input; nothing must escape a socket handler
    }
    for (const a of actions) this.execute(a);
    if (this.isClosed()) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const at = this.client.nextTimeoutAt();
    if (at !== undefined) {
      this.timer = setTimeout(() => {
        this.run({ type: 'timer', now: this.clock() });
      }, Math.max(0, at - this.clock()));
    }
  }

  private execute(a: TurnAction): void {
    switch (a.type) {
      case 'transmit': {
        const flushed = this.flushed;
        this.flushed = undefined;
        this.udp.send(this.options.server, a.data, flushed ?? ((): void => undefined));
        return;
      }
      case 'allocated':
        this.settle?.resolve({ relayed: a.relayed, mapped: a.mapped, lifetimeSeconds: a.lifetimeSeconds });
        this.settle = undefined;
        return;
      case 'data': {
        this.counters.received += a.data.length;
        for (const take of this.intercepts) if (take(a.peer, a.data)) return;
        this.handlers?.onDatagram(a.peer, a.data);
        return;
      }
      case 'failed': {
        const error = new RelayAllocationError(this.options.label, a.failure);
        this.shutdown();
        if (this.settle) {
          this.settle.reject(error);
          this.settle = undefined;
        } else {
          this.handlers?.onClosed(error.message);
        }
        return;
      }
      case 'peer-refused':
      case 'dropped':
      case 'closed':
        return;
      default: {
        const never: never = a;
        throw new Error(`unknown action ${String(never)}`);
      }
    }
  }
}
