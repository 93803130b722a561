/**
 * The shared state of a multi-process server, over IPC: the primary holds the in-memory `SharedState` and serves
 * it (`serveSharedState`); each worker reaches it through `IpcSharedState`, an implementation of the same interface
 * that a Redis one implements. Calls and answers travel in batches, one message per event-loop turn each way, so
 * the cost per call is a few object copies, not a message.
 *
 * Each call is the effect the worker's core asked for (src/server/types.ts `Effect`), executed on the primary with
 * the same function a single process uses (src/server/machine.ts `executeEffect`).
 *
 * One short cut, and why it is right: a push for a registration that this server owns on UDP is delivered by the
 * worker itself, because every process of the server shares the UDP port (same address and port, so the peer's NAT
 * admits it). Pushes for anything else (a TCP connection, held by the primary; another server) go to the primary's
 * router.
 */
import type { ChildProcess } from 'node:child_process';
import type { Endpoint } from '../codec/address.js';
import { keyPairOf, type KeyPair } from '../crypto/wireguard.js';
import { executeEffect, isPromiseLike } from '../server/machine.js';
import type { ReplayGuard, ReplayVerdict } from '../server/replay.js';
import type { PushListener, Router } from '../server/router.js';
import type { SharedState } from '../server/shared.js';
import type { RegisterResult, Registration, RegistrationStore } from '../server/store.js';
import type { Effect, EffectOp, EffectResults, Owner, Push, WgFacts } from '../server/types.js';
import type { WgRegistry } from '../server/wg-registry.js';
import type { WgPeerInfo } from '../codec/wg-messages.js';

export interface Call {
  readonly id: number;
  readonly effect: Effect;
}

export type Answer = { readonly id: number; readonly ok: true; readonly value: EffectResults[EffectOp] } | { readonly id: number; readonly ok: false; readonly reason: string };

/** The raw private half of an X25519 key pair (PKCS#8 DER ends with it), to hand the proof key to another process. */
export function exportPrivateKey(pair: KeyPair): Uint8Array {
  const der = pair.privateKey.export({ format: 'der', type: 'pkcs8' });
  return new Uint8Array(der.subarray(der.length - 32));
}

export function importKeyPair(raw: Uint8Array): KeyPair {
  return keyPairOf(raw);
}

/**
 * The worker's side: `SharedState` whose every member is a call to the primary. `send` posts one batch of calls;
 * `answer` takes a batch of answers back.
 */
export class IpcSharedState implements SharedState {
  readonly store: RegistrationStore;
  readonly replays: ReplayGuard;
  readonly router: Router;
  readonly wg: WgRegistry;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: EffectResults[EffectOp]) => void; reject: (e: Error) => void }>();
  private queue: Call[] = [];
  private flushScheduled = false;
  private localListener: PushListener | undefined;
  private failed: string | undefined;

  constructor(
    private readonly send: (batch: Call[]) => void,
    private readonly serverId: string,
    private readonly key: KeyPair,
  ) {
    this.store = {
      register: (registration: Registration, now: number) => this.call<'register'>({ op: 'register', registration, now }) as Promise<RegisterResult>,
      lookup: (network: string, name: string, now: number) => this.call<'lookup'>({ op: 'lookup', network, name, now }) as Promise<Registration | undefined>,
      withdraw: (network: string, name: string, nonce: string, owner: Owner | undefined, now: number) =>
        this.call<'withdraw'>({ op: 'withdraw', network, name, nonce, owner, now }) as Promise<Registration | undefined>,
    };
    this.replays = { checkAndInsert: (fingerprint: Uint8Array, now: number) => this.call<'replay'>({ op: 'replay', fingerprint, now }) as Promise<ReplayVerdict> };
    this.router = {
      deliver: (push: Push) => {
        if (push.owner.server === this.serverId && push.owner.channel.kind === 'udp' && this.localListener) {
          this.localListener(push);
          return true;
        }
        return this.call<'deliver'>({ op: 'deliver', push }) as Promise<boolean>;
      },
      listen: (server: string, listener: PushListener) => {
        if (server !== this.serverId) throw new Error(`a worker listens for its own server only (${this.serverId}, not ${server})`);
        this.localListener = listener;
        return () => {
          if (this.localListener === listener) this.localListener = undefined;
        };
      },
    };
    this.wg = {
      announce: (network: string, key: Uint8Array, facts: WgFacts, now: number) => this.call<'wg-announce'>({ op: 'wg-announce', network, key, facts, now }) as Promise<undefined>,
      setEndpoint: (network: string, key: Uint8Array, endpoint: Endpoint, now: number) => this.call<'wg-endpoint'>({ op: 'wg-endpoint', network, key, endpoint, now }) as Promise<undefined>,
      lookup: (network: string, keys: readonly Uint8Array[], now: number) => this.call<'wg-lookup'>({ op: 'wg-lookup', network, keys, now }) as Promise<readonly WgPeerInfo[]>,
    };
  }

  proofKey(): KeyPair {
    return this.key;
  }

  /** Calls in flight. */
  get pending(): number {
    return this.waiting.size;
  }

  /** A batch of answers from the primary. */
  answer(batch: readonly Answer[]): void {
    for (const a of batch) {
      const w = this.waiting.get(a.id);
      if (!w) continue;
      this.waiting.delete(a.id);
      if (a.ok) w.resolve(a.value);
      else w.reject(new Error(a.reason));
    }
  }

  /** The link to the primary is gone: every call in flight, and every later one, fails. */
  fail(reason: string): void {
    this.failed = reason;
    for (const w of this.waiting.values()) w.reject(new Error(reason));
    this.waiting.clear();
    this.queue = [];
  }

  private call<K extends EffectOp>(effect: Extract<Effect, { op: K }>): Promise<EffectResults[K]> {
    if (this.failed !== undefined) return Promise.reject(new Error(this.failed));
    const id = this.nextId;
    this.nextId = id >= 0x7fffffff ? 1 : id + 1;
    const answer = new Promise<EffectResults[K]>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: EffectResults[EffectOp]) => void, reject });
    });
    this.queue.push({ id, effect });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        const batch = this.queue;
        this.queue = [];
        if (batch.length > 0) this.send(batch);
      });
    }
    return answer;
  }
}

/**
 * The primary's side: executes each worker's calls against `shared` and posts the answers back, those that come at
 * once in one message per batch, later ones batched per event-loop turn.
 */
export function serveSharedState(shared: SharedState, reply: (batch: Answer[]) => void): (calls: readonly Call[]) => void {
  let late: Answer[] = [];
  let lateScheduled = false;
  const answerLater = (a: Answer): void => {
    late.push(a);
    if (lateScheduled) return;
    lateScheduled = true;
    setImmediate(() => {
      lateScheduled = false;
      const batch = late;
      late = [];
      reply(batch);
    });
  };
  return (calls) => {
    const now: Answer[] = [];
    for (const { id, effect } of calls) {
      let result;
      try {
        result = executeEffect(shared, effect);
      } catch (err) {
        now.push({ id, ok: false, reason: err instanceof Error ? err.message : String(err) });
        continue;
      }
      if (isPromiseLike(result)) {
        result.then(
          (value) => { answerLater({ id, ok: true, value }); },
          (err: unknown) => { answerLater({ id, ok: false, reason: err instanceof Error ? err.message : String(err) }); },
        );
      } else {
        now.push({ id, ok: true, value: result });
      }
    }
    if (now.length > 0) reply(now);
  };
}

/** Sends `message` to a worker if its channel is still open (a dying worker is handled by its exit event). */
export function post(child: ChildProcess, message: unknown): void {
  if (child.connected) child.send(message as object);
}
