/**
 * Everything the processes and servers of one deployment must share, behind one interface: registrations, the
 * replay guard, the push router, the WireGuard registry and the WG-PROOF-KEY. A `ServerCore` never holds any of it;
 * it asks through `effect` actions that src/server/runner.ts carries out against a `SharedState`.
 *
 * Implementations:
 *  - `MemorySharedState` (here): one process, or the primary of a multi-process server, which serves it to its
 *    workers over IPC (src/node/server-ipc.ts, `IpcSharedState` on the worker side);
 *  - a Redis implementation (issue 12): the same five members over one Redis (docs/protocol.md, "Scaling out",
 *    lists the keys and scripts).
 */
import type { KeyPair } from '../crypto/wireguard.js';
import type { ServerLimits } from './config.js';
import { ReplayCache, type ReplayGuard } from './replay.js';
import { LocalRouter, type Router } from './router.js';
import { MemoryStore, type RegistrationStore } from './store.js';
import type { EffectOutcome } from './machine.js';
import type { Awaitable, Effect, Guard } from './types.js';
import { DEFAULT_WG_LIMITS, type WgLimits } from './wg.js';
import { MemoryWgRegistry, type WgRegistry } from './wg-registry.js';

export interface SharedState {
  readonly store: RegistrationStore;
  readonly replays: ReplayGuard;
  readonly router: Router;
  readonly wg: WgRegistry;
  /**
   * The WG-PROOF-KEY pair every server proves against. Made once — by the first server to ask — and the same for all
   * of them afterwards, so that a proof made for one server verifies on every other. Never derived from a network
   * secret: every member knows those, and could then forge any interface's proof.
   */
  proofKey(): Awaitable<KeyPair>;
  /**
   * Optional: carries out a guarded effect in one step with its replay guard (a Redis script does both in one round
   * trip); undefined when it cannot for this effect, and the guard and effect are then asked one after the other.
   */
  guarded?(effect: Effect, guard: Guard): Awaitable<EffectOutcome> | undefined;
}

export interface MemorySharedStateOptions {
  readonly limits: Pick<ServerLimits, 'maxRegistrations' | 'timestampWindowMs' | 'replayCapacity'>;
  readonly wgLimits?: Partial<WgLimits>;
  /** The WG-PROOF-KEY pair (the caller draws it: nothing here draws randomness). */
  readonly proofKey: KeyPair;
}

/** The whole shared state in this process's memory; every member answers at once. */
export class MemorySharedState implements SharedState {
  readonly store: MemoryStore;
  readonly replays: ReplayCache;
  readonly router = new LocalRouter();
  readonly wg: MemoryWgRegistry;
  private readonly key: KeyPair;

  constructor(options: MemorySharedStateOptions) {
    const wg = { ...DEFAULT_WG_LIMITS, maxPeers: options.limits.maxRegistrations, ...options.wgLimits };
    this.store = new MemoryStore(options.limits.maxRegistrations);
    // A message is accepted while |timestamp - now| ≤ window: up to 2 × window after it is first seen.
    // Tables rotating every 2 × window remember each fingerprint at least that long.
    this.replays = new ReplayCache(options.limits.replayCapacity, 2 * options.limits.timestampWindowMs);
    this.wg = new MemoryWgRegistry(wg.maxPeers, wg.peerLifetimeMs);
    this.key = options.proofKey;
  }

  proofKey(): KeyPair {
    return this.key;
  }

  /** Expires what has expired (registrations, WireGuard records); the host calls it about once a second. */
  sweep(now: number): void {
    this.store.sweep(now);
    this.wg.sweep(now);
  }
}
