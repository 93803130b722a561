/**
 * The shared state of a multi-process server, over IPC. The primary holds the in-memory `SharedState`; each worker
 * ships every effect its core asks for (src/server/types.ts `Effect`, with its replay guard) to the primary, which
 * carries it out with the same `sharedStateRunner` a single process uses (`serveEffects`) and sends the outcome
 * back. One effect is one call — the guarded REGISTER is a single round trip — and calls and answers travel in
 * batches, one message (one JSON text) per event-loop turn each way.
 *
 * With a shared store that every process can reach itself (Redis), a worker would run `sharedStateRunner` on its
 * own client instead, and this module would not be used.
 *
 * One short cut, and why it is right: a push for a registration that this server owns on UDP is delivered by the
 * worker itself, because every process of the server shares the UDP port (same address and port, so the peer's NAT
 * admits it). Pushes for anything else (a TCP connection, held by the primary; another server) go to the primary's
 * router.
 */
import type { ChildProcess } from 'node:child_process';
import { keyPairOf, type KeyPair } from '../crypto/wireguard.js';
import { isPromiseLike, type EffectOutcome, type EffectRunner } from '../server/machine.js';
import type { PushListener, Router } from '../server/router.js';
import type { WgPeerInfo } from '../codec/wg-messages.js';
import type { Effect, EffectOp, Guard } from '../server/types.js';

export interface Call {
  readonly id: number;
  readonly effect: Effect;
  readonly guard: Guard | undefined;
}

export type Answer = { readonly id: number; readonly outcome: EffectOutcome } | { readonly id: number; readonly failed: string };

/** The raw private half of an X25519 key pair (PKCS#8 DER ends with it), to hand the proof key to another process. */
export function exportPrivateKey(pair: KeyPair): Uint8Array {
  const der = pair.privateKey.export({ format: 'der', type: 'pkcs8' });
  return new Uint8Array(der.subarray(der.length - 32));
}

export function importKeyPair(raw: Uint8Array): KeyPair {
  return keyPairOf(raw);
}

// ------------------------------------------------------------------------------------------------
// The wire: each batch is one JSON text. For these small objects JSON is 2–4 times cheaper than Node's structured
// clone ('advanced' IPC serialization) on both sides; byte fields travel as base64.

type Wire<T> = T extends Uint8Array ? string : T extends readonly (infer E)[] ? readonly Wire<E>[] : T extends object ? { readonly [K in keyof T]: Wire<T[K]> } : T;

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
const bytes = (text: string): Buffer => Buffer.from(text, 'base64');

function effectToWire(effect: Effect): Wire<Effect> {
  switch (effect.op) {
    case 'deliver':
      return { ...effect, push: { ...effect.push, data: b64(effect.push.data) } };
    case 'wg-announce':
    case 'wg-endpoint':
      return { ...effect, key: b64(effect.key) };
    case 'wg-lookup':
      return { ...effect, keys: effect.keys.map(b64) };
    case 'register':
    case 'lookup':
    case 'withdraw':
      return effect;
  }
}

function effectFromWire(effect: Wire<Effect>): Effect {
  switch (effect.op) {
    case 'deliver':
      return { ...effect, push: { ...effect.push, data: bytes(effect.push.data) } };
    case 'wg-announce':
    case 'wg-endpoint':
      return { ...effect, key: bytes(effect.key) };
    case 'wg-lookup':
      return { ...effect, keys: effect.keys.map(bytes) };
    case 'register':
    case 'lookup':
    case 'withdraw':
      return effect;
  }
}

export function encodeCalls(batch: readonly Call[]): string {
  return JSON.stringify(batch.map((c) => ({ id: c.id, effect: effectToWire(c.effect), guard: c.guard ? { fingerprint: b64(c.guard.fingerprint), now: c.guard.now, timestamp: c.guard.timestamp } : undefined })));
}

export function decodeCalls(text: string): Call[] {
  return (JSON.parse(text) as Wire<Call>[]).map((c) => ({ id: c.id, effect: effectFromWire(c.effect), guard: c.guard ? { fingerprint: bytes(c.guard.fingerprint), now: c.guard.now, ...(c.guard.timestamp !== undefined ? { timestamp: c.guard.timestamp } : {}) } : undefined }));
}

/** WireGuard lookups answer with keys (bytes); everything else is strings and numbers already. */
export function encodeAnswers(batch: readonly Answer[]): string {
  return JSON.stringify(batch.map((a) => {
    if (!('outcome' in a) || !('value' in a.outcome) || !Array.isArray(a.outcome.value)) return a;
    const peers = a.outcome.value as readonly WgPeerInfo[];
    return { id: a.id, outcome: { value: peers.map((p) => ({ ...p, key: b64(p.key) })) } };
  }));
}

/** `opOf` says which effect each answer is for (the worker remembers what it asked). */
export function decodeAnswers(text: string, opOf: (id: number) => EffectOp | undefined): Answer[] {
  return (JSON.parse(text) as Answer[]).map((a) => {
    if (!('outcome' in a) || opOf(a.id) !== 'wg-lookup' || !('value' in a.outcome)) return a;
    const peers = a.outcome.value as unknown as readonly Wire<WgPeerInfo>[];
    return { id: a.id, outcome: { value: peers.map((p) => ({ ...p, key: bytes(p.key) })) } };
  });
}

/**
 * The worker's side: runs each effect on the primary. `send` posts one batch of calls; `answer` takes a batch of
 * answers back. It is also the worker's router for listening: pushes for this server's UDP registrations stay here.
 */
export class IpcEffects implements EffectRunner, Pick<Router, 'listen'> {
  private nextId = 1;
  private readonly waiting = new Map<number, { op: EffectOp; resolve: (v: EffectOutcome) => void; reject: (e: Error) => void }>();
  private queue: Call[] = [];
  private flushScheduled = false;
  private localListener: PushListener | undefined;
  private failed: string | undefined;

  constructor(
    /** Posts one batch of calls (`encodeCalls`) to the primary. */
    private readonly send: (calls: string) => void,
    private readonly serverId: string,
  ) {}

  /** Calls in flight. */
  get pending(): number {
    return this.waiting.size;
  }

  run(effect: Effect, guard: Guard | undefined): EffectOutcome | Promise<EffectOutcome> {
    if (effect.op === 'deliver' && effect.push.owner.server === this.serverId && effect.push.owner.channel.kind === 'udp' && this.localListener) {
      this.localListener(effect.push);
      return { value: true };
    }
    if (this.failed !== undefined) return Promise.reject(new Error(this.failed));
    const id = this.nextId;
    this.nextId = id >= 0x7fffffff ? 1 : id + 1;
    const answer = new Promise<EffectOutcome>((resolve, reject) => {
      this.waiting.set(id, { op: effect.op, resolve, reject });
    });
    this.queue.push({ id, effect, guard });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        const batch = this.queue;
        this.queue = [];
        if (batch.length > 0) this.send(encodeCalls(batch));
      });
    }
    return answer;
  }

  listen(server: string, listener: PushListener): () => void {
    if (server !== this.serverId) throw new Error(`a worker listens for its own server only (${this.serverId}, not ${server})`);
    this.localListener = listener;
    return () => {
      if (this.localListener === listener) this.localListener = undefined;
    };
  }

  /** A batch of answers from the primary (`encodeAnswers`). */
  answer(text: string): void {
    for (const a of decodeAnswers(text, (id) => this.waiting.get(id)?.op)) {
      const w = this.waiting.get(a.id);
      if (!w) continue;
      this.waiting.delete(a.id);
      if ('failed' in a) w.reject(new Error(a.failed));
      else w.resolve(a.outcome);
    }
  }

  /** The link to the primary is gone: every call in flight, and every later one, fails. */
  fail(reason: string): void {
    this.failed = reason;
    for (const w of this.waiting.values()) w.reject(new Error(reason));
    this.waiting.clear();
    this.queue = [];
  }
}

/**
 * The primary's side: carries out each worker's calls with `runner` and posts the answers back, those that come at
 * once in one message per batch, later ones batched per event-loop turn.
 */
export function serveEffects(runner: EffectRunner, reply: (answers: string) => void): (calls: string) => void {
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
      reply(encodeAnswers(batch));
    });
  };
  return (text) => {
    const now: Answer[] = [];
    for (const { id, effect, guard } of decodeCalls(text)) {
      let outcome;
      try {
        outcome = runner.run(effect, guard);
      } catch (err) {
        now.push({ id, failed: err instanceof Error ? err.message : String(err) });
        continue;
      }
      if (isPromiseLike(outcome)) {
        outcome.then(
          (o) => { answerLater({ id, outcome: o }); },
          (err: unknown) => { answerLater({ id, failed: err instanceof Error ? err.message : String(err) }); },
        );
      } else {
        now.push({ id, outcome });
      }
    }
    if (now.length > 0) reply(encodeAnswers(now));
  };
}

/**
 * Sends `message` to a worker if its channel is still open. A worker that dies meanwhile is handled by its exit event,
 * so a failed write (EPIPE) is dropped here rather than raised.
 */
export function post(child: ChildProcess, message: unknown): void {
  if (!child.connected) return;
  child.send(message as object, () => undefined);
}
