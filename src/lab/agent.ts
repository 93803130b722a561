/** Drives a udp-agent (programs/udp-agent.ts) inside a lab namespace: bind sockets, send datagrams, watch what arrives. */

import { fileURLToPath } from 'node:url';
import { LabError } from './errors.js';
import type { LabNode } from './plan.js';
import type { LabProcess } from './process.js';
import type { Lab } from './topology.js';

const AGENT_PROGRAM = fileURLToPath(new URL('./programs/udp-agent.js', import.meta.url));

export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

export interface Datagram extends Endpoint {
  /** The agent socket that received it. */
  readonly id: string;
  readonly data: string;
}

type AgentEvent =
  | { readonly ev: 'ready' | 'closed'; readonly id: string }
  | { readonly ev: 'bound'; readonly id: string; readonly address: string; readonly port: number }
  | { readonly ev: 'sent'; readonly id: string; readonly seq: number }
  | { readonly ev: 'recv'; readonly id: string; readonly address: string; readonly port: number; readonly data: string }
  | { readonly ev: 'error'; readonly id: string; readonly message: string };

const DEFAULT_WAIT_MS = 3_000;

function parseEvents(text: string): AgentEvent[] {
  const events: AgentEvent[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      events.push(JSON.parse(line) as AgentEvent);
    } catch {
      // A line still being written; it is complete on the next look.
    }
  }
  return events;
}

export class UdpAgent {
  readonly node: LabNode;
  readonly #process: LabProcess;
  #seq = 0;

  private constructor(node: LabNode, child: LabProcess) {
    this.node = node;
    this.#process = child;
  }

  /** Starts an agent in `node` and waits until it is ready. It lives at most `maxSeconds` (default 60). */
  static async start(lab: Lab, node: LabNode, maxSeconds = 60): Promise<UdpAgent> {
    const child = lab.spawn(node, process.execPath, [AGENT_PROGRAM, '--max-seconds', String(maxSeconds)]);
    const agent = new UdpAgent(node, child);
    await agent.#waitFor((event) => event.ev === 'ready', DEFAULT_WAIT_MS, 'agent start');
    return agent;
  }

  #events(): AgentEvent[] {
    return parseEvents(this.#process.stdout);
  }

  async #waitFor(match: (event: AgentEvent) => boolean, timeoutMs: number, what: string): Promise<AgentEvent> {
    const found = (): AgentEvent | undefined => this.#events().find(match);
    try {
      await this.#process.waitForOutput('stdout', () => found() !== undefined, timeoutMs);
    } catch (err) {
      throw new LabError('LAB_TIMEOUT', `udp-agent in ${this.node}: ${what} did not happen: ${(err as Error).message}`, { cause: err });
    }
    const event = found();
    if (event === undefined) throw new LabError('LAB_TIMEOUT', `udp-agent in ${this.node}: ${what} did not happen`);
    return event;
  }

  #failIfError(id: string): void {
    const error = this.#events().find((event) => event.ev === 'error' && event.id === id);
    if (error?.ev === 'error') throw new LabError('LAB_COMMAND_FAILED', `udp-agent in ${this.node}, socket ${id}: ${error.message}`);
  }

  /** Binds socket `id` and returns its local address. */
  async bind(id: string, address = '0.0.0.0', port = 0): Promise<Endpoint> {
    this.#process.write(`${JSON.stringify({ op: 'bind', id, address, port })}\n`);
    const event = await this.#waitFor((e) => (e.ev === 'bound' || e.ev === 'error') && e.id === id, DEFAULT_WAIT_MS, `bind ${id}`);
    if (event.ev !== 'bound') {
      this.#failIfError(id);
      throw new LabError('LAB_COMMAND_FAILED', `udp-agent in ${this.node}: bind ${id} failed`);
    }
    return { address: event.address, port: event.port };
  }

  /** Sends one datagram from socket `id` and resolves once the kernel has taken it. */
  async send(id: string, to: Endpoint, data: string): Promise<void> {
    const seq = ++this.#seq;
    this.#process.write(`${JSON.stringify({ op: 'send', id, seq, address: to.address, port: to.port, data })}\n`);
    await this.#waitFor(
      (e) => (e.ev === 'sent' && e.seq === seq) || (e.ev === 'error' && e.id === id),
      DEFAULT_WAIT_MS,
      `send ${seq} from ${id}`,
    );
    this.#failIfError(id);
  }

  /** Every datagram received so far, optionally only those carrying `data`. */
  received(data?: string): Datagram[] {
    const datagrams: Datagram[] = [];
    for (const event of this.#events()) {
      if (event.ev === 'recv' && (data === undefined || event.data === data)) datagrams.push(event);
    }
    return datagrams;
  }

  /** Waits for a datagram carrying `data` and returns it. */
  async receive(data: string, timeoutMs = DEFAULT_WAIT_MS): Promise<Datagram> {
    const event = await this.#waitFor((e) => e.ev === 'recv' && e.data === data, timeoutMs, `receipt of ${JSON.stringify(data)}`);
    if (event.ev !== 'recv') throw new LabError('LAB_TIMEOUT', `udp-agent in ${this.node}: no ${JSON.stringify(data)}`);
    return event;
  }

  /** Closes stdin, which closes every socket and ends the agent, and waits for it to exit. */
  async stop(): Promise<void> {
    this.#process.endInput();
    const timer = setTimeout(() => {
      this.#process.kill('SIGKILL');
    }, 2_000);
    await this.#process.exited;
    clearTimeout(timer);
  }
}
