/**
 * A whole rendezvous server in one process and in memory: a core, the in-memory shared state and the machine
 * between them. Every effect is answered at once, so `handle` returns everything an input causes, pushes included.
 * For tests and simulations (test/support/sim-punch.ts drives the client machines against it on a fake clock);
 * `startServer` composes the same pieces around real sockets.
 */
import { keyPairOf, type KeyPair } from '../crypto/wireguard.js';
import { resolveLimits, type ServerConfig } from './config.js';
import { ServerCore } from './core.js';
import { ServerMachine, sharedStateRunner } from './machine.js';
import { MemorySharedState } from './shared.js';
import type { ServerAction, ServerInput } from './types.js';

export interface LocalServerOptions extends Omit<ServerConfig, 'serverId' | 'proofKey'> {
  readonly serverId?: string;
  /** Default: made from `randomBytes`, so that a seeded test stays deterministic. */
  readonly proofKey?: KeyPair;
  /** Share another server's state (several servers over one in-memory store); default a new one. */
  readonly shared?: MemorySharedState;
  /** What this server does when another one's input delivers it a push (several servers over one store). */
  readonly onLater?: (actions: ServerAction[]) => void;
  /** The clock: the time of the latest input to any server that shares it (several servers over one store). */
  readonly clock?: { now: number };
}

export class LocalServer extends ServerMachine {
  readonly memory: MemorySharedState;
  private readonly clock: { now: number };

  constructor(options: LocalServerOptions) {
    const limits = resolveLimits(options.limits);
    const proofKey = options.proofKey ?? options.shared?.proofKey() ?? keyPairOf(options.randomBytes(32));
    const memory = options.shared ?? new MemorySharedState({ limits, ...(options.wgLimits ? { wgLimits: options.wgLimits } : {}), proofKey });
    const clock = options.clock ?? { now: 0 };
    super(new ServerCore({ ...options, serverId: options.serverId ?? 'local', proofKey }), { runner: sharedStateRunner(memory), router: memory.router, now: () => clock.now, onLater: options.onLater ?? (() => undefined) });
    this.memory = memory;
    this.clock = clock;
  }

  override handle(input: ServerInput): ServerAction[] {
    this.clock.now = input.now;
    return super.handle(input);
  }
}
