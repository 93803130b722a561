/**
 * The one shape every sans-IO client machine has (the punch agent, the STUN client, the TCP punch), so that one
 * Node driver loop (src/node/driver.ts `runMachine`) runs them all.
 *
 * A machine is driven by inputs that carry the time (`now`, milliseconds) and answers each with a list of actions.
 * It never reads a clock, draws randomness it was not given, or touches a socket: the driver owns the transports
 * (each named by a `TransportId`), the one timer (`nextTimeoutAt()`), cancellation and shutdown.
 */
import type { Endpoint } from '../codec/address.js';
import type { BurrowError } from '../errors.js';

/** Names one of the driver's datagram transports: a UDP socket, a relay allocation, a stream to the server, ... */
export type TransportId = string;

/** The inputs the driver itself produces; machines add their own. */
export type DriverInput =
  | { readonly type: 'start'; readonly now: number }
  /** `nextTimeoutAt()` has come (or passed). Machines must tolerate early and repeated timers. */
  | { readonly type: 'timer'; readonly now: number }
  /** A datagram (or, on a stream transport, one framed message) arrived on `transport`. */
  | { readonly type: 'datagram'; readonly transport: TransportId; readonly from: Endpoint; readonly data: Uint8Array; readonly now: number }
  /** A transport went away on its own (a stream closed by the far end, a relay allocation lost). */
  | { readonly type: 'transport-closed'; readonly transport: TransportId; readonly reason: string; readonly now: number }
  /**
   * The caller cancelled (its AbortSignal). The machine ends now, with a `fail` (ABORTED) after whatever it must say
   * first (a punch withdraws its registration); the driver sends that, then closes the transports.
   */
  | { readonly type: 'abort'; readonly now: number };

/** Send a datagram from `transport` to `to`; the driver never throws on a failed send (it is like a lost datagram). */
export interface SendAction {
  readonly type: 'send';
  readonly transport: TransportId;
  readonly to: Endpoint;
  readonly data: Uint8Array;
}

/** Progress for the caller (`onEvent`). */
export interface EventAction<E> {
  readonly type: 'event';
  readonly event: E;
}

/** The machine finished with a result; the driver flushes pending sends, closes its transports and resolves. */
export interface DoneAction<R> {
  readonly type: 'done';
  readonly result: R;
}

/** The machine failed; the driver flushes pending sends, closes its transports and rejects. */
export interface FailAction {
  readonly type: 'fail';
  readonly error: BurrowError;
}

/** The actions the driver executes itself; machines may add their own, which the driver hands to its caller. */
export type DriverAction<R, E> = SendAction | EventAction<E> | DoneAction<R> | FailAction;

/** What `runMachine` drives. */
export interface ClientMachine<Input, Action> {
  handle(input: Input): Action[];
  /** When the machine wants a `timer` input next; undefined when it needs none (finished, or waiting for input). */
  nextTimeoutAt(): number | undefined;
  readonly isFinished: boolean;
}

/** Anything a sub-machine can push actions into (an action list of a wider type). */
export interface Outbox<A> {
  push(...actions: A[]): number;
}
