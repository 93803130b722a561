/**
 * The generic driver loop (src/node/driver.ts) with scripted machines and in-memory transports: sends leave before
 * the transports close and before the promise settles, one timer, abort, transport failures, the machine's own
 * actions and their outcomes fed back, and a machine bug that must not escape.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import type { ClientMachine, DriverAction, DriverInput } from '../../src/core/machine.js';
import { BurrowError } from '../../src/errors.js';
import { runMachine } from '../../src/node/driver.js';
import type { DatagramTransport, TransportHandlers } from '../../src/node/transport.js';

const PEER: Endpoint = { address: '127.0.0.1', port: 9 };

/** An in-memory transport whose sends complete a tick later; records what happened, in order. */
class FakeTransport implements DatagramTransport {
  readonly description = 'the fake transport';
  readonly local: Endpoint = { address: '127.0.0.1', port: 1 };
  handlers: TransportHandlers | undefined;
  readonly log: string[];

  constructor(log: string[], private readonly name: string) {
    this.log = log;
  }

  send(_to: Endpoint, data: Uint8Array, done: () => void): void {
    setImmediate(() => {
      this.log.push(`${this.name} sent ${Buffer.from(data).toString()}`);
      done();
    });
  }

  listen(handlers: TransportHandlers): void {
    this.handlers = handlers;
  }

  close(): Promise<void> {
    this.log.push(`${this.name} closed`);
    return Promise.resolve();
  }
}

type Custom = { readonly type: 'ask'; readonly question: string };
type Input = DriverInput | { readonly type: 'answer'; readonly text: string; readonly now: number };
type Action = DriverAction<string, string> | Custom;

/** A machine made of a script: each input type maps to the actions it returns. */
function scripted(script: (input: Input, self: { finished: boolean; next: number | undefined }) => Action[]): ClientMachine<Input, Action> & { inputs: Input[] } {
  const self = { finished: false, next: undefined as number | undefined };
  const inputs: Input[] = [];
  return {
    inputs,
    get isFinished() {
      return self.finished;
    },
    nextTimeoutAt: () => self.next,
    handle(input) {
      inputs.push(input);
      const out = script(input, self);
      if (out.some((a) => a.type === 'done' || a.type === 'fail')) self.finished = true;
      return out;
    },
  };
}

const send = (text: string, transport = 'a'): Action => ({ type: 'send', transport, to: PEER, data: Buffer.from(text) });

describe('runMachine', () => {
  it('flushes every send before closing the transports (the last attached first), and settles only after they closed', async () => {
    const log: string[] = [];
    const machine = scripted((input) => (input.type === 'start' ? [send('one'), send('two', 'b'), { type: 'event', event: 'progress' }, { type: 'done', result: 'ok' }] : []));
    const events: string[] = [];
    const run = runMachine(machine, { transports: { a: new FakeTransport(log, 'a'), b: new FakeTransport(log, 'b') }, onEvent: (e) => events.push(e) });
    const result = await run.result;
    log.push('settled');
    assert.equal(result, 'ok');
    assert.deepEqual(events, ['progress']);
    // Last attached first: a relay allocation deletes itself through the socket it shares before that closes.
    assert.deepEqual(log, ['a sent one', 'b sent two', 'b closed', 'a closed', 'settled']);
    assert.equal(run.settled, true);
  });

  it('delivers datagrams with their transport, runs the one timer, and hears of a transport the far end closed', async () => {
    const log: string[] = [];
    const a = new FakeTransport(log, 'a');
    let clock = 1000;
    const machine = scripted((input, self) => {
      if (input.type === 'start') self.next = 1005;
      if (input.type === 'timer') {
        self.next = undefined;
        a.handlers?.onDatagram(PEER, Buffer.from('hello'));
      }
      if (input.type === 'datagram') a.handlers?.onClosed('gone');
      if (input.type === 'transport-closed') return [{ type: 'fail', error: BurrowError.socket('closed', input.reason) }];
      return [];
    });
    const run = runMachine(machine, { transports: { a }, now: () => (clock += 1) });
    await assert.rejects(run.result, (e: unknown) => e instanceof BurrowError && e.code === 'SOCKET');
    assert.deepEqual(machine.inputs.map((i) => i.type), ['start', 'timer', 'datagram', 'transport-closed']);
    const d = machine.inputs[2];
    assert.ok(d?.type === 'datagram' && d.transport === 'a' && Buffer.from(d.data).toString() === 'hello');
    assert.deepEqual(log, ['a closed']);
  });

  it('hands the machine\'s own actions to onAction, whose outcomes come back through feed', async () => {
    const machine = scripted((input) => {
      if (input.type === 'start') return [{ type: 'ask', question: 'name?' }];
      if (input.type === 'answer') return [{ type: 'done', result: `hello ${input.text}` }];
      return [];
    });
    const run = runMachine<Input, Custom, string, string>(machine, {
      transports: {},
      onAction: (action, r) => {
        assert.equal(action.question, 'name?');
        setImmediate(() => {
          r.feed({ type: 'answer', text: 'burrow', now: Date.now() });
        });
      },
    });
    assert.equal(await run.result, 'hello burrow');
  });

  it('an abort rejects with ABORTED and releases the transports; an aborted signal never starts the machine', async () => {
    const log: string[] = [];
    const controller = new AbortController();
    const machine = scripted((input, self) => {
      if (input.type === 'start') self.next = Date.now() + 60_000;
      return [];
    });
    const run = runMachine(machine, { transports: { a: new FakeTransport(log, 'a') }, signal: controller.signal });
    controller.abort();
    await assert.rejects(run.result, (e: unknown) => e instanceof BurrowError && e.code === 'ABORTED');
    assert.deepEqual(log, ['a closed']);
    const never = scripted(() => []);
    await assert.rejects(runMachine(never, { transports: {}, signal: AbortSignal.abort() }).result, (e: unknown) => e instanceof BurrowError && e.code === 'ABORTED');
    assert.equal(never.inputs.length, 0);
  });

  it('on abort the machine says its last words (a withdrawal) and they leave before the transports close', async () => {
    const log: string[] = [];
    const controller = new AbortController();
    const machine = scripted((input, self) => {
      if (input.type === 'start') self.next = Date.now() + 60_000;
      if (input.type === 'abort') return [send('withdraw'), { type: 'fail', error: BurrowError.aborted({ by: 'machine' }) }];
      return [];
    });
    const run = runMachine(machine, { transports: { a: new FakeTransport(log, 'a') }, signal: controller.signal });
    controller.abort();
    await assert.rejects(run.result, (e: unknown) => e instanceof BurrowError && e.code === 'ABORTED' && e.details.by === 'machine');
    assert.deepEqual(log, ['a sent withdraw', 'a closed']);
    assert.deepEqual(machine.inputs.map((i) => i.type), ['start', 'abort']);
  });

  it('a transport error fails the run with SOCKET; a machine that throws fails it instead of escaping a handler', async () => {
    const log: string[] = [];
    const a = new FakeTransport(log, 'a');
    const machine = scripted((input) => {
      if (input.type === 'start') setImmediate(() => a.handlers?.onError(new Error('EPERM')));
      return [];
    });
    await assert.rejects(runMachine(machine, { transports: { a } }).result, (e: unknown) => e instanceof BurrowError && e.code === 'SOCKET' && e.message === 'the fake transport failed: EPERM');
    const b = new FakeTransport([], 'b');
    const buggy = scripted((input) => {
      if (input.type === 'start') setImmediate(() => b.handlers?.onDatagram(PEER, Buffer.from('x')));
      if (input.type === 'datagram') throw new Error('bug');
      return [];
    });
    await assert.rejects(runMachine(buggy, { transports: { b } }).result, /bug/);
  });

  it('sends to a transport it does not have are dropped like lost datagrams; one attached later is used and closed', async () => {
    const log: string[] = [];
    const machine = scripted((input) => {
      if (input.type === 'start') return [send('nowhere', 'relay')];
      if (input.type === 'datagram') return [send('via relay', 'relay'), { type: 'done', result: 'done' }];
      return [];
    });
    const run = runMachine(machine, { transports: {} });
    const relay = new FakeTransport(log, 'relay');
    run.attach('relay', relay);
    relay.handlers?.onDatagram(PEER, Buffer.from('hi'));
    assert.equal(await run.result, 'done');
    assert.deepEqual(log, ['relay sent via relay', 'relay closed']);
  });
});
