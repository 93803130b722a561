/**
 * Runs a whole punch (rendezvous server core + punch agents) on the in-memory SimNet with a fake clock. Nothing here
 * touches a socket or a real timer. A peer may have several UDP sockets (transports 'udp', 'udp1', 'udp2', ...), a
 * relay allocation on a SimRelay (transport 'relay', added when the allocation is answered), and inputs scheduled at
 * given times (trickled candidates, `close`).
 */
import type { Endpoint } from '../../src/codec/address.js';
import type { PeerMode } from '../../src/codec/messages.js';
import { BirthdayGate, PunchAgent, udpTransport, type BirthdayOptions, type PunchAction, type PunchEvent, type PunchInput, type PunchMode, type PunchResult, type PunchTiming, type RelayPolicy, type TransportSpec } from '../../src/core/punch/index.js';
import { candidatePriority } from '../../src/core/punch/index.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import type { BurrowError } from '../../src/errors.js';
import { LocalServer } from '../../src/server/local.js';
import { counterBytes, SimRelay, type SimNet, type SimNatKind, type SimSocket } from './simnet.js';

export const SERVER: Endpoint = { address: '203.0.113.1', port: 3478 };
export const SERVER_ALT: Endpoint = { address: '203.0.113.1', port: 3479 };
export const RELAY: Endpoint = { address: '203.0.113.50', port: 3478 };
export const SECRET = 'correct horse battery staple';

export interface PeerSpec {
  readonly name: string;
  readonly peer: string;
  /** The main socket ('udp'), which registers. */
  readonly at: Endpoint;
  /** More sockets of this host: transports 'udp1', 'udp2', ..., each advertising its own address as a host candidate. */
  readonly sockets?: readonly Endpoint[];
  /** Allocate on the sim relay at this time (from a socket of its own, `at.port + 1000`): transport 'relay'. */
  readonly relayAt?: number;
  readonly startAt?: number;
  readonly secret?: string;
  readonly timeoutMs?: number;
  readonly mode?: PunchMode;
  readonly relay?: RelayPolicy;
  readonly timing?: Partial<PunchTiming>;
  /** Inputs delivered at given times (trickled candidates, close). */
  readonly inputs?: readonly { readonly at: number; readonly input: (now: number) => PunchInput }[];
  /** What the peer runs (MODE); default the agent's (`punch`). */
  readonly purpose?: PeerMode;
  /** SIGKILL at this time: from then on the agent gets no input and sends nothing (and never finishes). */
  readonly killAt?: number;
  /** Birthday probing options (false: off); the gate defaults to one per sim (one "process"). */
  readonly birthday?: false | Partial<BirthdayOptions> & { readonly gate?: BirthdayGate };
}

export interface PeerOutcome {
  readonly result?: PunchResult;
  readonly error?: BurrowError;
  readonly finishedAt?: number;
  readonly events: PunchEvent[];
  /** Every event with the time it was emitted. */
  readonly timeline: { readonly at: number; readonly event: PunchEvent }[];
  /** Every send action with its time and transport. */
  readonly sends: { readonly at: number; readonly transport: string; readonly to: Endpoint; readonly data: Uint8Array }[];
}

export interface Sim {
  readonly net: SimNet;
  readonly server: LocalServer;
  /** The sim relay, when a peer allocates. */
  readonly relay: SimRelay | undefined;
  /** The agents, in the order of the specs. */
  readonly agents: readonly PunchAgent[];
  /** Runs until every peer finished or `untilMs` passed. `tick` runs after every step (attacks, restarts). */
  run(untilMs: number, tick?: (now: number) => void): PeerOutcome[];
  /** Replaces the server with a fresh one (a restart that loses all state). */
  restartServer(): void;
}

const ROUTER_A = { publicIp: '198.51.100.2', lan: '192.0.2.1' };
const ROUTER_B = { publicIp: '198.51.100.6', lan: '192.0.2.2' };

/** Host addresses: behind A (192.0.2.10, .11), behind B (192.0.2.20), or public when the kind is 'none'. */
export function topology(kindA: SimNatKind, kindB: SimNatKind, net: SimNet, opts: { hairpinA?: boolean } = {}): { a: Endpoint; a2: Endpoint; b: Endpoint; routerA: string; routerB: string } {
  if (kindA !== 'none') net.addRouter(ROUTER_A.publicIp, kindA, ROUTER_A.lan, { hairpin: opts.hairpinA ?? false });
  if (kindB !== 'none') net.addRouter(ROUTER_B.publicIp, kindB, ROUTER_B.lan);
  return {
    a: { address: kindA === 'none' ? '198.51.100.130' : '192.0.2.10', port: 5000 },
    a2: { address: kindA === 'none' ? '198.51.100.131' : '192.0.2.11', port: 5001 },
    b: { address: kindB === 'none' ? '198.51.100.160' : '192.0.2.20', port: 5002 },
    routerA: ROUTER_A.publicIp,
    routerB: ROUTER_B.publicIp,
  };
}

interface PeerState {
  readonly spec: PeerSpec;
  readonly agent: PunchAgent;
  started: boolean;
  relayRequested: boolean;
  readonly pendingInputs: { at: number; input: (now: number) => PunchInput }[];
  readonly outcome: { result?: PunchResult; error?: BurrowError; finishedAt?: number; events: PunchEvent[]; timeline: { at: number; event: PunchEvent }[]; sends: { at: number; transport: string; to: Endpoint; data: Uint8Array }[] };
  readonly sockets: Map<string, SimSocket>;
  relaySocket: SimSocket | undefined;
  killed: boolean;
}

export function createSim(net: SimNet, peers: readonly PeerSpec[], serverSecrets: readonly string[] = [SECRET]): Sim {
  let server = newServer(serverSecrets);
  for (const [socket, at] of [['main', SERVER], ['alternate', SERVER_ALT]] as const) {
    net.listen(at, (from, data) => {
      for (const a of server.handle({ type: 'datagram', socket, from, data, now: net.now })) {
        if (a.type === 'send') net.send(a.socket === 'main' ? SERVER : SERVER_ALT, a.to, a.data);
      }
    });
  }
  const relay = peers.some((p) => p.relayAt !== undefined) ? new SimRelay(net, RELAY) : undefined;
  const gate = new BirthdayGate();

  const states: PeerState[] = peers.map((spec, i) => {
    const extra = spec.sockets ?? [];
    const transports: TransportSpec[] = [udpTransport(spec.at, [spec.at], 'udp'), ...extra.map((e, j) => udpTransport(e, [e], `udp${j + 1}`))];
    const agent = new PunchAgent({
      name: spec.name,
      peer: spec.peer,
      keys: deriveNetworkKeys(Buffer.from(spec.secret ?? SECRET)),
      server: SERVER,
      transports,
      timeoutMs: spec.timeoutMs ?? 10_000,
      sessionNonce: counterBytes(`nonce-${spec.name}-${i}`)(16),
      randomBytes: counterBytes(`tx-${spec.name}-${i}`),
      ...(spec.mode ? { mode: spec.mode } : {}),
      ...(spec.relay ? { relay: spec.relay } : {}),
      ...(spec.timing ? { timing: spec.timing } : {}),
      ...(spec.purpose ? { purpose: spec.purpose } : {}),
      birthday: spec.birthday === false ? false : { gate, ...spec.birthday },
    });
    const state: PeerState = {
      spec,
      agent,
      killed: false,
      started: false,
      relayRequested: false,
      pendingInputs: [...(spec.inputs ?? [])],
      outcome: { events: [], timeline: [], sends: [] },
      sockets: new Map(),
      relaySocket: undefined,
    };
    const feed = (input: PunchInput): void => {
      if (state.started && !state.killed && !agent.isFinished) execute(state, agent.handle(input));
    };
    [spec.at, ...extra].forEach((e, j) => {
      const id = j === 0 ? 'udp' : `udp${j}`;
      state.sockets.set(id, net.socket(e, (from, data) => {
        feed({ type: 'datagram', transport: id, from, data, now: net.now });
      }));
    });
    if (relay && spec.relayAt !== undefined) {
      const local = { address: spec.at.address, port: spec.at.port + 1000 };
      state.relaySocket = net.socket(local, (from, data) => {
        if (from.address !== RELAY.address || from.port !== RELAY.port) return;
        const f = SimRelay.parse(data);
        if (f.type === 1) {
          const candidate = { kind: 'relayed' as const, priority: candidatePriority('relayed'), endpoint: f.peer };
          feed({ type: 'add-transport', transport: { id: 'relay', kind: 'relay', local, candidates: [candidate] }, now: net.now });
        } else if (f.type === 3) {
          feed({ type: 'datagram', transport: 'relay', from: f.peer, data: f.payload, now: net.now });
        }
      });
    }
    return state;
  });

  /** Read through a call: an input can finish the agent between two reads (lint would assume it cannot). */
  function finished(state: PeerState): boolean {
    return state.agent.isFinished;
  }

  let birthdayPorts = 0;
  function execute(state: PeerState, actions: PunchAction[]): void {
    for (const a of actions) {
      switch (a.type) {
        case 'send': {
          state.outcome.sends.push({ at: net.now, transport: a.transport, to: a.to, data: a.data });
          if (a.transport === 'relay') state.relaySocket?.send(RELAY, SimRelay.frame(2, a.to, a.data));
          else state.sockets.get(a.transport)?.send(a.to, a.data);
          break;
        }
        case 'event':
          state.outcome.events.push(a.event);
          state.outcome.timeline.push({ at: net.now, event: a.event });
          break;
        case 'done':
          Object.assign(state.outcome, { result: a.result, finishedAt: net.now });
          break;
        case 'fail':
          Object.assign(state.outcome, { error: a.error, finishedAt: net.now });
          break;
        case 'birthday-open': {
          // Sockets on free ports of the host (the sim has no TTL: the opening datagram reaches the partner's NAT,
          // which drops it unsolicited, as a port-restricted NAT does).
          const specs: TransportSpec[] = [];
          for (let i = 0; i < a.sockets; i++) {
            const id = `${a.prefix}${i}`;
            const local = { address: state.spec.at.address, port: 30000 + (birthdayPorts++ % 30000) };
            const sock = net.socket(local, (from, data) => {
              if (state.started && !state.killed && !state.agent.isFinished) execute(state, state.agent.handle({ type: 'datagram', transport: id, from, data, now: net.now }));
            });
            state.sockets.set(id, sock);
            sock.send(a.to, a.data);
            state.outcome.sends.push({ at: net.now, transport: id, to: a.to, data: a.data });
            specs.push({ id, kind: 'udp', local, candidates: [], checks: 'passive' });
          }
          execute(state, state.agent.handle({ type: 'birthday-opened', attempt: a.attempt, transports: specs, now: net.now }));
          break;
        }
        case 'birthday-close':
          for (const id of a.transports) {
            state.sockets.get(id)?.close();
            state.sockets.delete(id);
          }
          break;
        default: {
          const never: never = a;
          throw new Error(`unknown action ${String(never)}`);
        }
      }
    }
  }

  return {
    net,
    get server() {
      return server;
    },
    relay,
    agents: states.map((s) => s.agent),
    restartServer() {
      server = newServer(serverSecrets);
    },
    run(untilMs, tick) {
      for (let guard = 0; guard < 1_000_000; guard++) {
        for (const s of states) if (!s.killed && s.spec.killAt !== undefined && net.now >= s.spec.killAt) s.killed = true;
        const pending = states.filter((s) => !s.agent.isFinished && !s.killed);
        if (pending.length === 0) break;
        const times: number[] = [];
        for (const s of pending) {
          if (s.spec.killAt !== undefined) times.push(s.spec.killAt);
          if (!s.started) times.push(s.spec.startAt ?? 0);
          else {
            const t = s.agent.nextTimeoutAt();
            if (t !== undefined) times.push(t);
            for (const p of s.pendingInputs) times.push(p.at);
            if (!s.relayRequested && s.spec.relayAt !== undefined) times.push(s.spec.relayAt);
          }
        }
        const d = net.nextDeliveryAt();
        if (d !== undefined) times.push(d);
        const serverAt = server.nextTimeoutAt();
        if (serverAt !== undefined) times.push(serverAt);
        const next = Math.max(net.now, Math.min(...times, untilMs));
        if (next >= untilMs && net.now >= untilMs) break;
        net.runUntil(next);
        for (const s of pending) {
          if (s.spec.killAt !== undefined && net.now >= s.spec.killAt) {
            s.killed = true;
            continue;
          }
          if (!s.started && net.now >= (s.spec.startAt ?? 0)) {
            s.started = true;
            execute(s, s.agent.handle({ type: 'start', now: net.now }));
          }
          if (!s.started || s.agent.isFinished) continue;
          if (!s.relayRequested && s.spec.relayAt !== undefined && net.now >= s.spec.relayAt) {
            s.relayRequested = true;
            s.relaySocket?.send(RELAY, SimRelay.frame(0, RELAY));
          }
          for (const p of [...s.pendingInputs]) {
            if (net.now < p.at || finished(s)) continue;
            s.pendingInputs.splice(s.pendingInputs.indexOf(p), 1);
            execute(s, s.agent.handle(p.input(net.now)));
          }
          const t = s.agent.nextTimeoutAt();
          if (t !== undefined && t <= net.now && !finished(s)) execute(s, s.agent.handle({ type: 'timer', now: net.now }));
        }
        const due = server.nextTimeoutAt();
        if (due !== undefined && due <= net.now) for (const a of server.handle({ type: 'timer', now: net.now })) if (a.type === 'send') net.send(SERVER, a.to, a.data);
        tick?.(net.now);
        if (net.now >= untilMs) break;
      }
      return states.map((s) => s.outcome);
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
