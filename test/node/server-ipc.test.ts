/**
 * The multi-process server's pieces without processes: worker cores whose effects travel to a primary's in-memory
 * shared state through the real IPC code (src/node/server-ipc.ts), with messages copied the way Node's 'advanced'
 * IPC serialization copies them (v8.serialize/deserialize), one batch per event-loop turn. Pairs whose REGISTERs
 * reach different workers meet, replays are caught across workers, pushes leave from the right process, a lost link
 * fails cleanly, and split limits add up.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import v8 from 'node:v8';
import type { Endpoint } from '../../src/codec/address.js';
import { decodeMessage, encodeMessage, type BurrowMessage } from '../../src/codec/messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { keyPairOf } from '../../src/crypto/wireguard.js';
import { splitLimits } from '../../src/node/cluster.js';
import { exportPrivateKey, importKeyPair, IpcEffects, serveEffects } from '../../src/node/server-ipc.js';
import { DEFAULT_LIMITS, ServerCore } from '../../src/server/core.js';
import { ServerMachine, sharedStateRunner } from '../../src/server/machine.js';
import { MemorySharedState } from '../../src/server/shared.js';
import { sumStats } from '../../src/server/stats.js';
import type { ServerAction } from '../../src/server/types.js';
import { counterBytes } from '../support/simnet.js';

const KEYS = deriveNetworkKeys(Buffer.from('ipc secret'));
const PROOF_KEY = keyPairOf(counterBytes('ipc proof key')(32));
const A: Endpoint = { address: '198.51.100.2', port: 40000 };
const B: Endpoint = { address: '198.51.100.6', port: 40001 };
const SERVER = 'srv-1';

let tx = 0;
function register(name: string, target: string, nonce: number, transport?: 'tcp'): Buffer {
  const txid = Buffer.alloc(12);
  txid.writeUInt32BE(++tx, 8);
  // A pooled Buffer, as sockets hand them over: a view into a shared 8 KiB slab.
  return Buffer.from(encodeMessage({
    kind: 'register', txid, networkId: KEYS.networkId, name, target, sessionNonce: Buffer.alloc(16, nonce),
    timestamp: Date.now(), candidates: [{ kind: 'host', priority: 2130706431, endpoint: { address: '192.0.2.10', port: 5000 } }], mapping: 'unknown', ...(transport ? { transport } : {}),
  }, { key: KEYS.clientToServer }));
}

const kinds = (actions: readonly ServerAction[]): string[] =>
  actions.flatMap((a) => (a.type === 'send' || a.type === 'send-stream' ? [(decodeMessage(a.data) as { msg: BurrowMessage }).msg.kind] : []));

/** A message through Node's 'advanced' IPC: serialized and deserialized, delivered on a later turn. */
function overIpc<T>(message: T, deliver: (copy: T) => void, sizes?: number[]): void {
  const bytes = v8.serialize(message);
  sizes?.push(bytes.length);
  setImmediate(() => { deliver(v8.deserialize(bytes) as T); });
}

/** A primary (in-memory shared state, its own core for TCP) and `n` worker cores linked to it by IPC. */
function deployment(n: number, sizes?: number[]) {
  const shared = new MemorySharedState({ limits: { ...DEFAULT_LIMITS, maxRegistrations: 1000, replayCapacity: 4096 }, proofKey: PROOF_KEY });
  const primaryOut: ServerAction[] = [];
  const primaryCore = new ServerCore({ networks: [KEYS], serverId: SERVER, proofKey: PROOF_KEY, seed: 1, randomBytes: counterBytes('p') });
  const primary = new ServerMachine(primaryCore, { runner: sharedStateRunner(shared), router: shared.router, now: Date.now, onLater: (a) => { primaryOut.push(...a); } });
  const runner = sharedStateRunner(shared);
  const workers = Array.from({ length: n }, (_, i) => {
    const out: ServerAction[] = [];
    const holder: { link?: IpcEffects } = {};
    const serve = serveEffects(runner, (batch: string) => { overIpc(batch, (copy) => { holder.link?.answer(copy); }, sizes); });
    const link = new IpcEffects((batch: string) => { overIpc(batch, serve, sizes); }, SERVER);
    holder.link = link;
    // The proof key travels to workers as raw bytes.
    const proofKey = importKeyPair(exportPrivateKey(PROOF_KEY));
    const core = new ServerCore({ networks: [KEYS], serverId: SERVER, proofKey, seed: 10 + i, randomBytes: counterBytes(`w${i}`), wgResponder: false });
    const machine = new ServerMachine(core, { runner: link, router: link, now: Date.now, onLater: (a) => { out.push(...a); } });
    return { core, machine, link, out, datagram: (from: Endpoint, data: Uint8Array) => { out.push(...machine.handle({ type: 'datagram', socket: 'main', from, data, now: Date.now() })); } };
  });
  return { shared, primary, primaryCore, primaryOut, workers };
}

/** Lets the IPC round trips finish. */
async function settle(turns = 6): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}

describe('workers over IPC (no processes)', () => {
  it('pairs whose REGISTERs reach different workers meet; the push is sent by a worker (same UDP port)', async () => {
    const d = deployment(2);
    const [w1, w2] = d.workers as [typeof d.workers[0], typeof d.workers[0]];
    for (let p = 0; p < 20; p++) {
      const [first, second] = p % 2 === 0 ? [w1, w2] : [w2, w1];
      first.datagram({ address: A.address, port: 1000 + p }, register(`a${p}`, `b${p}`, 1));
      await settle();
      second.datagram({ address: B.address, port: 2000 + p }, register(`b${p}`, `a${p}`, 2));
      await settle();
    }
    const total = sumStats([w1.core.stats, w2.core.stats]);
    assert.equal(total.introductions, 20);
    assert.equal(total.registrationsTotal, 40);
    assert.equal(d.shared.store.size, 40);
    // Every peer was told: the first of each pair by a push, the second in its answer. The primary sent nothing.
    const told = [...kinds(w1.out), ...kinds(w2.out)];
    assert.equal(told.filter((k) => k === 'introduce').length, 20);
    assert.equal(told.filter((k) => k === 'register-ok').length, 40);
    assert.deepEqual(kinds(d.primaryOut), []);
  });

  it('a REGISTER taken by one worker is refused as a replay by the other', async () => {
    const d = deployment(2);
    const [w1, w2] = d.workers as [typeof d.workers[0], typeof d.workers[0]];
    const req = register('alice', 'bob', 1);
    w1.datagram(A, req);
    await settle();
    assert.deepEqual(kinds(w1.out), ['register-ok']);
    w2.datagram({ address: '203.0.113.66', port: 9 }, req);
    await settle();
    assert.deepEqual(kinds(w2.out), []);
    assert.equal(w2.core.stats.replaysRejected, 1);
    assert.deepEqual(d.shared.store.lookup(KEYS.networkIdHex, 'alice', Date.now())?.mapped, A);
  });

  it('a push for a TCP registration goes to the primary, which holds the connection', async () => {
    const d = deployment(1);
    const w = d.workers[0]!;
    // carol registers over TCP with the primary (connection 7); a registration for her partner is made by a worker on
    // the TCP name space only through the primary, so here the partner's push is made by the primary's own core.
    d.primaryOut.push(...d.primary.handle({ type: 'stream-message', conn: 7, from: A, data: register('carol', 'dave', 3, 'tcp'), now: Date.now() }));
    d.primaryOut.push(...d.primary.handle({ type: 'stream-message', conn: 8, from: B, data: register('dave', 'carol', 4, 'tcp'), now: Date.now() }));
    const streams = d.primaryOut.filter((a): a is Extract<ServerAction, { type: 'send-stream' }> => a.type === 'send-stream');
    assert.deepEqual(streams.map((a) => [a.conn, (decodeMessage(a.data) as { msg: BurrowMessage }).msg.kind]), [[7, 'register-ok'], [7, 'introduce'], [8, 'register-ok']]);
    // And a worker's router sends anything that is not this server's UDP to the primary's router.
    const delivered = w.link.run({ op: 'deliver', push: { network: 'n', recipient: 'x', version: 'v', owner: { server: SERVER, channel: { kind: 'tcp', conn: 99 } }, to: A, data: new Uint8Array(4) } }, undefined);
    assert.ok(delivered instanceof Promise);
    await settle();
    assert.deepEqual(await delivered, { value: true }, 'the primary listens for its server');
    const elsewhere = w.link.run({ op: 'deliver', push: { network: 'n', recipient: 'x', version: 'v', owner: { server: 'gone', channel: { kind: 'udp' } }, to: A, data: new Uint8Array(4) } }, undefined);
    await settle();
    assert.deepEqual(await elsewhere, { value: false }, 'nobody listens for a server that is gone');
  });

  it('a lost link to the primary fails every request: the client is told 503, the worker stays up', async () => {
    const d = deployment(1);
    const w = d.workers[0]!;
    w.datagram(A, register('alice', 'bob', 1));
    w.link.fail('the primary is gone');
    await settle();
    const [msg] = w.out.flatMap((a) => (a.type === 'send' ? [(decodeMessage(a.data) as { msg: BurrowMessage }).msg] : []));
    assert.ok(msg?.kind === 'error' && msg.code === 503);
    assert.equal(w.core.stats.storeErrors, 1);
  });

  it('ships only the bytes it needs: a pooled datagram view does not drag its 8 KiB slab over IPC', async () => {
    const sizes: number[] = [];
    const d = deployment(1, sizes);
    const w = d.workers[0]!;
    w.datagram(A, register('alice', 'bob', 1));
    await settle();
    assert.deepEqual(kinds(w.out), ['register-ok']);
    assert.ok(sizes.length >= 2 && sizes.every((n) => n < 2048), `IPC messages of ${sizes.join(', ')} bytes`);
  });

  it('split limits add up to the configured ones; counters add up across processes', () => {
    const parts = splitLimits(DEFAULT_LIMITS, 3);
    assert.ok(parts.perSourceRate * 3 <= DEFAULT_LIMITS.perSourceRate + 1e-9);
    assert.ok(parts.perSourceBurst * 3 <= DEFAULT_LIMITS.perSourceBurst);
    const total = sumStats([{ ...sumStats([]), registrationsTotal: 2, stunBindings: 1 }, { ...sumStats([]), registrationsTotal: 3 }]);
    assert.equal(total.registrationsTotal, 5);
    assert.equal(total.stunBindings, 1);
  });
});
