/**
 * The server's RFC 5780 answers (src/server/binding.ts) on a fake clock: which socket answers, to where, with which
 * attributes, how long the answers are, and the per-source bound on answers longer than their request.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Endpoint } from '../../src/codec/address.js';
import { encodeTestRequest, readRfc5780Answer, rfc5780AnswerLength } from '../../src/codec/rfc5780.js';
import { Attr, decodeErrorCode, decodeStun, encodeStun, findAttribute } from '../../src/codec/stun.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import type { Rfc5780Sockets } from '../../src/server/config.js';
import type { ServerLimits, ServerSocketId } from '../../src/server/core.js';
import { decodeMessage, encodeMessage } from '../../src/codec/messages.js';
import { bindingRequest } from '../../src/core/stun-client.js';
import { counterBytes } from '../support/simnet.js';
import { sends, TestServer } from './harness.js';

const KEYS = deriveNetworkKeys(Buffer.from('rfc 5780 secret'));
const SOCKETS: Rfc5780Sockets = {
  main: { address: '203.0.113.1', port: 3478 },
  alternate: { address: '203.0.113.1', port: 3479 },
  'other-ip': { address: '203.0.113.2', port: 3478 },
  'other-ip-port': { address: '203.0.113.2', port: 3479 },
};
const CLIENT: Endpoint = { address: '198.51.100.7', port: 40123 };
const TXID = Uint8Array.from([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2]);

function server(opts: { rfc5780?: boolean; limits?: Partial<ServerLimits> } = {}): TestServer {
  return new TestServer({
    networks: [KEYS],
    alternate: SOCKETS.alternate,
    ...(opts.rfc5780 === false ? {} : { rfc5780: SOCKETS }),
    ...(opts.limits ? { limits: opts.limits } : {}),
    seed: 1,
    randomBytes: counterBytes('srv'),
  });
}

function answer(s: TestServer, socket: ServerSocketId, request: Uint8Array, now = 0): { socket: ServerSocketId; to: Endpoint; data: Uint8Array } {
  const out = sends(s.datagram(socket, CLIENT, request, now));
  assert.equal(out.length, 1, 'exactly one answer');
  const [a] = out;
  assert.ok(a);
  return { socket: a.socket, to: a.to, data: a.data };
}

function read(data: Uint8Array): ReturnType<typeof readRfc5780Answer> {
  const d = decodeStun(data);
  assert.ok(d.ok);
  return readRfc5780Answer(d.msg);
}

describe('RFC 5780 answers with two IPs × two ports', () => {
  it('a bare Binding gets XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS, nothing else (56 bytes)', () => {
    const s = server();
    const a = answer(s, 'main', encodeStun(1, 'request', TXID, []));
    assert.equal(a.socket, 'main');
    assert.deepEqual(a.to, CLIENT);
    assert.equal(a.data.length, 56);
    assert.deepEqual(read(a.data), { ok: true, answer: { mapped: CLIENT, origin: SOCKETS.main, other: SOCKETS['other-ip-port'] } });
    const d = decodeStun(a.data);
    assert.ok(d.ok);
    assert.deepEqual(d.msg.attributes.map((x) => x.type), [Attr.XOR_MAPPED_ADDRESS, Attr.RESPONSE_ORIGIN, Attr.OTHER_ADDRESS]);
    assert.equal(s.stats.stunRfc5780Answers, 1);
  });

  const cases: [ServerSocketId, { ip: boolean; port: boolean }, ServerSocketId, ServerSocketId][] = [
    ['main', { ip: true, port: true }, 'other-ip-port', 'other-ip-port'],
    ['main', { ip: false, port: true }, 'alternate', 'other-ip-port'],
    ['main', { ip: true, port: false }, 'other-ip', 'other-ip-port'],
    ['other-ip', { ip: false, port: false }, 'other-ip', 'alternate'],
    ['other-ip', { ip: true, port: false }, 'main', 'alternate'],
    ['other-ip-port', { ip: true, port: true }, 'main', 'main'],
    ['alternate', { ip: true, port: false }, 'other-ip-port', 'other-ip'],
  ];
  for (const [on, change, via, other] of cases) {
    it(`on ${on}, change ip=${change.ip} port=${change.port}: answered from ${via}, OTHER-ADDRESS ${other}`, () => {
      const a = answer(server(), on, encodeTestRequest(TXID, { change }));
      assert.equal(a.socket, via);
      assert.deepEqual(read(a.data), { ok: true, answer: { mapped: CLIENT, origin: SOCKETS[via], other: SOCKETS[other] } });
    });
  }

  it('RESPONSE-PORT sends the answer to that port of the requesting IP', () => {
    const a = answer(server(), 'main', encodeTestRequest(TXID, { responsePort: 50000 }));
    assert.deepEqual(a.to, { address: CLIENT.address, port: 50000 });
  });

  it('FINGERPRINT in the request, FINGERPRINT in the answer', () => {
    const a = answer(server(), 'main', encodeStun(1, 'request', TXID, [{ type: Attr.CHANGE_REQUEST, value: new Uint8Array(4) }], { fingerprint: true }));
    assert.equal(a.data.length, 64);
    const d = decodeStun(a.data);
    assert.ok(d.ok && findAttribute(d.msg, Attr.FINGERPRINT));
  });

  it('a malformed CHANGE-REQUEST is dropped and counted', () => {
    const s = server();
    assert.equal(sends(s.datagram('main', CLIENT, encodeStun(1, 'request', TXID, [{ type: Attr.CHANGE_REQUEST, value: new Uint8Array(8) }]), 0)).length, 0);
    assert.equal(s.stats.malformed, 1);
  });

  it('per source, answers longer than their request take a second token: at most (burst + rate·t)/2', () => {
    const s = server({ limits: { perSourceRate: 10, perSourceBurst: 40 } });
    let answered = 0;
    for (let i = 0; i < 200; i++) answered += sends(s.datagram('main', CLIENT, encodeStun(1, 'request', TXID, []), 0)).length;
    assert.equal(answered, 20);
    // One second later: 10 tokens more, 5 answers.
    for (let i = 0; i < 200; i++) answered += sends(s.datagram('main', CLIENT, encodeStun(1, 'request', TXID, []), 1000)).length;
    assert.equal(answered, 25);
    assert.equal(s.stats.stunRfc5780Answers, 25);
    // A datagram that passes the rate limit with the bucket's last token gets no RFC 5780 answer: it needs two.
    const odd = server({ limits: { perSourceRate: 1, perSourceBurst: 3 } });
    assert.equal(sends(odd.datagram('main', CLIENT, encodeStun(1, 'request', TXID, []), 0)).length, 1);
    assert.equal(sends(odd.datagram('main', CLIENT, encodeStun(1, 'request', TXID, []), 0)).length, 0);
    assert.equal(odd.stats.stunBindingsUnanswered, 1);
    // Another source has its own budget.
    assert.equal(sends(s.datagram('main', { address: '198.51.100.8', port: 1 }, encodeStun(1, 'request', TXID, []), 1000)).length, 1);
  });

  it('a request padded to its answer\'s length (Burrow\'s own) costs no second token and is answered in strict mode', () => {
    const s = server({ limits: { perSourceRate: 10, perSourceBurst: 40, answerBareBindings: false } });
    const padded = encodeTestRequest(TXID, { change: { ip: true, port: true }, padTo: rfc5780AnswerLength(4) });
    let answered = 0;
    for (let i = 0; i < 100; i++) answered += sends(s.datagram('main', CLIENT, padded, 0)).length;
    assert.equal(answered, 40);
    // Strict mode: a bare request, whose answer would be longer, is not answered.
    assert.equal(sends(s.datagram('main', { address: '198.51.100.9', port: 1 }, encodeStun(1, 'request', TXID, []), 0)).length, 0);
  });

  it('strict mode: Burrow\'s own 44-byte Binding (punch, stun, the registration NAT probe) gets the minimal answer', () => {
    const s = server({ limits: { answerBareBindings: false } });
    const request = encodeMessage(bindingRequest(TXID));
    assert.equal(request.length, 44);
    const a = answer(s, 'alternate', request);
    assert.equal(a.socket, 'alternate');
    assert.equal(a.data.length, 32);
    assert.deepEqual(read(a.data), { ok: true, answer: { mapped: CLIENT, origin: undefined, other: undefined } });
  });
});

describe('RFC 5780 without a second IP: mapping tests only', () => {
  it('a bare Binding gets the minimal answer, without OTHER-ADDRESS (section 7.4)', () => {
    const a = answer(server({ rfc5780: false }), 'main', encodeStun(1, 'request', TXID, []));
    assert.equal(a.data.length, 32);
    assert.deepEqual(read(a.data), { ok: true, answer: { mapped: CLIENT, origin: undefined, other: undefined } });
  });

  it('the alternate port answers too (the port-only mapping test)', () => {
    const a = answer(server({ rfc5780: false }), 'alternate', encodeTestRequest(TXID));
    assert.equal(a.socket, 'alternate');
    assert.deepEqual(read(a.data), { ok: true, answer: { mapped: CLIENT, origin: undefined, other: undefined } });
  });

  it('a request to change IP or port gets 420 naming CHANGE-REQUEST, 36 bytes for 28', () => {
    for (const change of [{ ip: true, port: true }, { ip: false, port: true }, { ip: true, port: false }]) {
      const request = encodeTestRequest(TXID, { change });
      const a = answer(server({ rfc5780: false }), 'main', request);
      assert.equal(request.length, 28);
      assert.equal(a.data.length, 36);
      const d = decodeStun(a.data);
      assert.ok(d.ok);
      assert.equal(d.msg.cls, 'error');
      const code = findAttribute(d.msg, Attr.ERROR_CODE);
      assert.equal(code && decodeErrorCode(code.value)?.code, 420);
      assert.deepEqual([...(findAttribute(d.msg, Attr.UNKNOWN_ATTRIBUTES)?.value ?? [])], [0x00, 0x03]);
    }
  });

  it('RESPONSE-PORT works without a second IP', () => {
    const a = answer(server({ rfc5780: false }), 'main', encodeTestRequest(TXID, { responsePort: 1234 }));
    assert.deepEqual(a.to, { address: CLIENT.address, port: 1234 });
  });
});

describe('NAT findings travel from REGISTER to the partner\'s introduction', () => {
  it('mapping, port allocation and filtering (NAT-MAPPING bytes 0-2) reach the partner', () => {
    const s = server();
    const now = 1_700_000_000_000;
    const register = (name: string, target: string, n: number, facts: object): Uint8Array =>
      encodeMessage({
        kind: 'register', txid: Buffer.alloc(12, n), networkId: KEYS.networkId, name, target, sessionNonce: Buffer.alloc(16, n),
        timestamp: now, candidates: [], mapping: 'endpoint-dependent', ...facts,
      }, { key: KEYS.clientToServer });
    const alice: Endpoint = { address: '198.51.100.1', port: 1111 };
    const bob: Endpoint = { address: '198.51.100.2', port: 2222 };
    sends(s.datagram('main', alice, register('alice', 'bob', 1, { allocation: 'random', filtering: 'address-and-port-dependent' }), now));
    const toBob = sends(s.datagram('main', bob, register('bob', 'alice', 2, {}), now)).filter((a) => a.to.port === bob.port);
    const intros = toBob.map((a) => decodeMessage(a.data)).filter((d) => d.ok && d.msg.kind === 'register-ok');
    const first = intros[0];
    assert.ok(first?.ok && first.msg.kind === 'register-ok' && first.msg.intro);
    assert.equal(first.msg.intro.peerMapping, 'endpoint-dependent');
    assert.equal(first.msg.intro.peerAllocation, 'random');
    assert.equal(first.msg.intro.peerFiltering, 'address-and-port-dependent');
    // Golden: NAT-MAPPING 02 03 03 00.
    const bytes = Buffer.from(register('alice', 'bob', 1, { allocation: 'random', filtering: 'address-and-port-dependent' })).toString('hex');
    assert.ok(bytes.includes('4b08000402030300'));
  });
});
