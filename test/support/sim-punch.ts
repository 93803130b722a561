/**
 * Runs a whole punch (rendezvous server core + two punch machines) on the in-memory SimNet with a fake
 * clock. Nothing here touches a socket or a real timer.
 */
import type { Endpoint } from '../../src/codec/address.js';
import { PunchMachine, type PunchAction, type PunchResult, type PunchEvent } from '../../src/core/punch.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import type { BurrowError } from '../../src/errors.js';
import { LocalServer } from '../../src/server/local.js';
import { counterBytes, SimNet, type SimNatKind } from './simnet.js';

export const SERVER: Endpoint = { address: '203.0.113.1', port: 3478 };
export const SERVER_ALT: Endpoint = { address: '203.0.113.1', port: 3479 };
export const SECRET = 'correct horse battery staple';

export interface PeerSpec {
  readonly name: string;
  readonly peer: string;
  readonly at: Endpoint;
  readonly startAt?: number;
  readonly secret?: string;
  readonly timeoutMs?: number;
}

export interface PeerOutcome {
  readonly result?: PunchResult;
  readonly error?: BurrowError;
  readonly finishedAt?: number;
  readonly events: PunchEvent[];
}

export interface Sim {
  readonly net: SimNet;
  readonly server: LocalServer;
  /** Runs until every peer finished or `untilMs` passed. `tick` runs after every step (attacks, restarts). */
  run(untilMs: number, tick?: (now: number) => void): PeerOutcome[];
  /** Replaces the server with a fresh one (a restart that loses all state). */
  restartServer(): void;
}

const ROUTER_A = { publicIp: '198.51.100.2', lan: '192.0.2.1' };
const ROUTER_B = { publicIp: '198.51.100.6', lan: '192.0.2.2' };

/** Host addresses: behind A (192.0.2.10, .11), behind B (192.0.2.20), or public when the kind is 'none'. */
export function topology(kindA: SimNatKind, kindB: SimNatKind, net: SimNet): { a: Endpoint; a2: Endpoint; b: Endpoint } {
  if (kindA !== 'none') net.addRouter(ROUTER_A.publicIp, kindA, ROUTER_A.lan);
  if (kindB !== 'none') net.addRouter(ROUTER_B.publicIp, kindB, ROUTER_B.lan);
  return {
    a: { address: kindA === 'none' ? '198.51.100.130' : '192.0.2.10', port: 5000 },
    a2: { address: kindA === 'none' ? '198.51.100.131' : '192.0.2.11', port: 5001 },
    b: { address: kindB === 'none' ? '198.51.100.160' : '192.0.2.20', port: 5002 },
  };
}

export function createSim(net: SimNet, peers: readonly PeerSpec[], serverSecrets: readonly string[] = [SECRET]): Sim {
  let server = newServer(serverSecrets);
  const listenServer = (): void => {
    for (const [socket, at] of [['main', SERVER], ['alternate', SERVER_ALT]] as const) {
      net.listen(at, (from, data) => {
        for (const a of server.handle({ type: 'datagram', socket, from, data, now: net.now })) {
          if (a.type === 'send') net.send(a.socket === 'main' ? SERVER : SERVER_ALT, a.to, a.data);
        }
      });
    }
  };
  listenServer();
  const states = peers.map((spec, i) => {
    const machine = new PunchMachine({
      name: spec.name,
      peer: spec.peer,
      keys: deriveNetworkKeys(Buffer.from(spec.secret ?? SECRET)),
      server: SERVER,
      localAddress: spec.at.address,
      localPort: spec.at.port,
      hosts: [spec.at],
      timeoutMs: spec.timeoutMs ?? 10_000,
      sessionNonce: counterBytes(`nonce-${spec.name}-${i}`)(16),
      randomBytes: counterBytes(`tx-${spec.name}-${i}`),
    });
    const state: { machine: PunchMachine; started: boolean; outcome: { result?: PunchResult; error?: BurrowError; finishedAt?: number; events: PunchEvent[] } } = {
      machine,
      started: false,
      outcome: { events: [] },
    };
    const execute = (actions: PunchAction[]): void => {
      for (const a of actions) {
        if (a.type === 'send') net.send(spec.at, a.to, a.data);
        else if (a.type === 'event') state.outcome.events.push(a.event);
        else if (a.type === 'done') Object.assign(state.outcome, { result: a.result, finishedAt: net.now });
        else Object.assign(state.outcome, { error: a.error, finishedAt: net.now });
      }
    };
    net.listen(spec.at, (from, data) => {
      if (state.started) execute(machine.handle({ type: 'datagram', from, data, now: net.now }));
    });
    return { spec, state, execute };
  });

  return {
    net,
    get server() {
      return server;
    },
    restartServer() {
      server = newServer(serverSecrets);
    },
    run(untilMs, tick) {
      for (let guard = 0; guard < 1_000_000; guard++) {
        const pending = states.filter((s) => !s.state.machine.isFinished);
        if (pending.length === 0) break;
        const times: number[] = [];
        for (const s of pending) {
          if (!s.state.started) times.push(s.spec.startAt ?? 0);
          else {
            const t = s.state.machine.nextTimeoutAt();
            if (t !== undefined) times.push(t);
          }
        }
        const d = net.nextDeliveryAt();
        if (d !== undefined) times.push(d);
        const serverAt = server.nextTimeoutAt();
        if (serverAt !== undefined) times.push(serverAt);
        const next = Math.min(...times, untilMs);
        if (next >= untilMs && net.now >= untilMs) break;
        net.runUntil(next);
        for (const s of pending) {
          if (!s.state.started && net.now >= (s.spec.startAt ?? 0)) {
            s.state.started = true;
            s.execute(s.state.machine.handle({ type: 'start', now: net.now }));
          } else if (s.state.started && !s.state.machine.isFinished) {
            const t = s.state.machine.nextTimeoutAt();
            if (t !== undefined && t <= net.now) s.execute(s.state.machine.handle({ type: 'timer', now: net.now }));
          }
        }
        const due = server.nextTimeoutAt();
        if (due !== undefined && due <= net.now) for (const a of server.handle({ type: 'timer', now: net.now })) if (a.type === 'send') net.send(SERVER, a.to, a.data);
        tick?.(net.now);
        if (net.now >= untilMs) break;
      }
      return states.map((s) => s.state.outcome);
    },
  };

  function newServer(secrets: readonly string[]): LocalServer {
    return new LocalServer({
      networks: secrets.map((s) => deriveNetworkKeys(Buffer.from(s))),
      alternate: SERVER_ALT,
      seed: 7,
      randomBytes: counterBytes('server'),
    });
  }
}
