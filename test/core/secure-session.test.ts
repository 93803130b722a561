/** The encrypted stream's state machine: handshake, records, and every way an attacker can meddle. */
import assert from 'node:assert/strict';
import { createHmac, diffieHellman, generateKeyPairSync, createPublicKey } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzRuns } from '../support/fuzz.js';
import { Cipher, decodeHello, encodeHello, MAX_RECORD_PAYLOAD, type CipherId } from '../../src/codec/secure.js';
import { SecureSession, type SessionOutput } from '../../src/core/secure-session.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';

const KEYS = deriveNetworkKeys(Buffer.from('stream test secret'));
const CONTEXT = Buffer.from('rendezvous context');
const SPKI = Buffer.from('302a300506032b656e032100', 'hex');

function party(name: string, peer: string, authKey: Uint8Array = KEYS.streamAuth, context: Uint8Array = CONTEXT, nonceByte = 1, ciphers?: readonly CipherId[]): SecureSession {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const der = publicKey.export({ format: 'der', type: 'spki' });
  return new SecureSession({
    name, peer, authKey, context, nonce: Buffer.alloc(32, nonceByte), ...(ciphers ? { ciphers } : {}),
    publicKey: der.subarray(der.length - 32),
    agree: (p) => diffieHellman({ privateKey, publicKey: createPublicKey({ key: Buffer.concat([SPKI, p]), format: 'der', type: 'spki' }) }),
  });
}

const sent = (o: SessionOutput[]): Buffer => Buffer.concat(o.flatMap((x) => (x.type === 'send' ? [x.data] : [])));
const of = <T extends SessionOutput['type']>(o: SessionOutput[], t: T) => o.filter((x): x is Extract<SessionOutput, { type: T }> => x.type === t);

/** Two sessions wired together; returns what each side's application saw. */
function connect(a: SecureSession, b: SecureSession): { toB: Buffer[]; toA: Buffer[] } {
  const toB = [sent(a.start())];
  const toA = [sent(b.start())];
  const fromA = b.receive(toB.pop()!);
  const fromB = a.receive(toA.pop()!);
  toB.push(sent(fromB));
  toA.push(sent(fromA));
  assert.equal(of(b.receive(toB.pop()!), 'established').length, 1);
  assert.equal(of(a.receive(toA.pop()!), 'established').length, 1);
  return { toB, toA };
}

describe('secure session', () => {
  it('establishes, carries data both ways, and confirms delivery', () => {
    const a = party('alice', 'bob');
    const b = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2);
    connect(a, b);
    const payload = Buffer.alloc(200_000, 7); // several records
    const got = b.receive(sent([...a.write(payload), ...a.end()]));
    assert.deepEqual(Buffer.concat(of(got, 'data').map((d) => d.data)), payload);
    assert.deepEqual(of(got, 'peer-eof'), [{ type: 'peer-eof', bytes: 200_000 }]);
    const ack = a.receive(sent(b.acknowledgeEnd()));
    assert.deepEqual(of(ack, 'delivered'), [{ type: 'delivered', bytes: 200_000 }]);
  });

  it('refuses a peer without the secret, a peer with another name, and its own reflected HELLO', () => {
    const a = party('alice', 'bob');
    const outsider = party('bob', 'alice', deriveNetworkKeys(Buffer.from('other')).streamAuth);
    a.start();
    assert.equal(of(a.receive(sent(outsider.start())), 'error')[0]?.error.kind, 'handshake');
    const a2 = party('alice', 'bob');
    const mallory = party('mallory', 'alice');
    a2.start();
    assert.match(of(a2.receive(sent(mallory.start())), 'error')[0]?.error.detail ?? '', /from "mallory"/);
    const a3 = party('alice', 'bob');
    const hello = sent(a3.start());
    assert.equal(of(a3.receive(hello), 'error')[0]?.error.kind, 'handshake');
  });

  it('refuses a HELLO made for another rendezvous session (context)', () => {
    const a = party('alice', 'bob');
    const b = party('bob', 'alice', KEYS.streamAuth, Buffer.from('another session'));
    a.start();
    assert.equal(of(a.receive(sent(b.start())), 'error')[0]?.error.kind, 'handshake');
  });

  it('detects any flipped byte in a record and releases no data from it (property)', () => {
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: 1, max: 255 }), (at, x) => {
        const a = party('alice', 'bob');
        const b = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2);
        connect(a, b);
        const wire = sent(a.write(Buffer.from('attack at dawn, not at dusk')));
        const i = at % wire.length;
        wire[i] = (wire[i] ?? 0) ^ x;
        const out = b.receive(wire);
        assert.equal(of(out, 'data').length, 0);
        // Either the record fails now, or (a longer length field) it waits for bytes that never come.
        if (of(out, 'error').length === 0) assert.equal(of(b.transportEnded(), 'error')[0]?.error.kind, 'truncated');
        else assert.equal(of(out, 'error')[0]?.error.kind, 'tampered');
      }),
      { numRuns: fuzzRuns(300) },
    );
  });

  it('detects reordered and replayed records', () => {
    const a = party('alice', 'bob');
    const b = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2);
    connect(a, b);
    const r1 = sent(a.write(Buffer.from('one')));
    const r2 = sent(a.write(Buffer.from('two')));
    assert.equal(of(b.receive(r2), 'error')[0]?.error.kind, 'tampered');
    const c = party('alice', 'bob');
    const d = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2);
    connect(c, d);
    const s1 = sent(c.write(Buffer.from('one')));
    assert.equal(of(d.receive(s1), 'data').length, 1);
    assert.equal(of(d.receive(s1), 'error')[0]?.error.kind, 'tampered');
    assert.ok(r1.length > 0);
  });

  it('reports truncation when the transport ends before the authenticated EOF', () => {
    const a = party('alice', 'bob');
    const b = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2);
    connect(a, b);
    b.receive(sent(a.write(Buffer.from('partial'))));
    assert.equal(of(b.transportEnded(), 'error')[0]?.error.kind, 'truncated');
  });

  it('reports a dropped record as a count mismatch at EOF', () => {
    const a = party('alice', 'bob');
    const b = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2);
    connect(a, b);
    a.write(Buffer.from('lost')); // never delivered
    const out = b.receive(sent(a.end()));
    assert.equal(of(out, 'error')[0]?.error.kind, 'tampered'); // sequence number mismatch
  });

  it('reports a delivery failure when the transport ends before the peer confirmed our data', () => {
    const a = party('alice', 'bob');
    const b = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2);
    connect(a, b);
    b.receive(sent([...a.write(Buffer.from('data')), ...a.end()]));
    a.receive(sent(b.end()));
    a.acknowledgeEnd(); // alice confirmed bob's end, but bob never confirms alice's data
    assert.equal(of(a.transportEnded(), 'error')[0]?.error.kind, 'delivery');
  });

  it('negotiates the cipher from both preferences, and both sides use the same one', () => {
    const cases: [CipherId[], CipherId[], CipherId][] = [
      [[Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305], [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305], Cipher.AES_256_GCM],
      [[Cipher.CHACHA20_POLY1305, Cipher.AES_256_GCM], [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305], Cipher.CHACHA20_POLY1305],
      [[Cipher.CHACHA20_POLY1305], [Cipher.CHACHA20_POLY1305, Cipher.AES_256_GCM], Cipher.CHACHA20_POLY1305],
    ];
    for (const [ca, cb, want] of cases) {
      const a = party('alice', 'bob', KEYS.streamAuth, CONTEXT, 1, ca);
      const b = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2, cb);
      connect(a, b);
      assert.deepEqual(a.negotiated, { version: 2, cipher: want });
      assert.deepEqual(b.negotiated, { version: 2, cipher: want });
      const got = b.receive(sent(a.write(Buffer.from('over the agreed cipher'))));
      assert.equal(Buffer.concat(of(got, 'data').map((d) => d.data)).toString(), 'over the agreed cipher');
    }
  });

  it('carries many chunks (writev) in records of at most 256 KiB, whatever pieces the transport delivers (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 700_000 }), { minLength: 1, maxLength: 6 }), fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 200_000 })), (sizes, step) => {
        const a = party('alice', 'bob');
        const b = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2);
        connect(a, b);
        const chunks = sizes.map((n, i) => Buffer.alloc(n, i + 1));
        const wire = sent([...a.writev(chunks), ...a.end()]);
        const got: SessionOutput[] = [];
        for (let at = 0; at < wire.length; at += step) for (const o of b.receive(wire.subarray(at, at + step))) got.push(o);
        // However fine the pieces, a record comes out in a bounded number of buffers (small ones are gathered).
        assert.ok(of(got, 'data').length <= Math.ceil(Buffer.concat(chunks).length / 4096) + 2 * chunks.length + 2);
        assert.deepEqual(Buffer.concat(of(got, 'data').map((d) => d.data)), Buffer.concat(chunks));
        const total = sizes.reduce((x, y) => x + y, 0);
        assert.deepEqual(of(got, 'peer-eof'), [{ type: 'peer-eof', bytes: total }]);
        // Record count: as few as the size limit allows (plus EOF).
        const records = Math.ceil(total / MAX_RECORD_PAYLOAD) + 1;
        assert.ok(wire.length <= total + records * 21 + 21, `framing overhead ${wire.length - total}`);
      }),
      { numRuns: fuzzRuns(40) },
    );
  });

  it('receive(transient): bytes it keeps (a HELLO in pieces, records behind FINISHED) are copies, so the caller may reuse its buffer', () => {
    const a = party('alice', 'bob');
    const b = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2);
    const helloA = sent(a.start());
    const helloB = sent(b.start());
    // One reused buffer, as a socket reading into it would deliver: B's HELLO in two pieces.
    const reused = Buffer.alloc(256 * 1024);
    const feed = (session: SecureSession, bytes: Buffer): SessionOutput[] => {
      bytes.copy(reused);
      const out = session.receive(reused.subarray(0, bytes.length), true);
      reused.fill(0xee);
      return out;
    };
    assert.deepEqual(feed(a, helloB.subarray(0, 10)), []);
    const finishedA = sent(feed(a, helloB.subarray(10)));
    const finishedB = sent(b.receive(helloA));
    assert.equal(of(b.receive(finishedA), 'established').length, 1);
    // B's FINISHED with data records right behind it: A stops after FINISHED and keeps the rest.
    const payload = Buffer.alloc(100_000).map((_, i) => i % 251);
    const out = feed(a, Buffer.concat([finishedB, sent(b.write(payload)), sent(b.end())]));
    assert.equal(of(out, 'established').length, 1);
    assert.equal(of(out, 'data').length, 0);
    const rest = a.drain();
    assert.ok(Buffer.concat(of(rest, 'data').map((d) => d.data)).equals(payload));
    assert.deepEqual(of(rest, 'peer-eof'), [{ type: 'peer-eof', bytes: payload.length }]);
  });

  it('a peer on stream protocol 1 (Burrow 0.1) gets a clear version error, not a tampering alarm', () => {
    const a = party('alice', 'bob');
    a.start();
    const body = Buffer.concat([Buffer.from('BRW1'), Buffer.from([0x01, 3]), Buffer.from('bob'), Buffer.from([5]), Buffer.from('alice'), Buffer.alloc(32, 1), Buffer.alloc(32, 9)]);
    const v1 = Buffer.concat([body, createHmac('sha256', KEYS.streamAuth).update('burrow/v1 hello').update(CONTEXT).update(body).digest()]);
    const err = of(a.receive(v1), 'error')[0]?.error;
    assert.equal(err?.kind, 'version');
    assert.match(err.detail, /"bob" runs an older Burrow \(stream protocol 1/);
  });

  it('a peer that only speaks a newer stream protocol gets a version error naming both ranges', () => {
    const a = party('alice', 'bob');
    a.start();
    const future = encodeHello({ name: 'bob', peer: 'alice', versions: { min: 3, max: 4 }, ciphers: [Cipher.AES_256_GCM], nonce: Buffer.alloc(32, 3), publicKey: Buffer.alloc(32, 9) }, KEYS.streamAuth, CONTEXT);
    const err = of(a.receive(future), 'error')[0]?.error;
    assert.equal(err?.kind, 'version');
    assert.match(err.detail, /speaks stream protocol 3–4, this Burrow 2–2/);
  });

  it('a man in the middle who rewrites the cipher list (a downgrade) fails the HELLO MAC', () => {
    const a = party('alice', 'bob');
    const b = party('bob', 'alice', KEYS.streamAuth, CONTEXT, 2);
    a.start();
    const hello = sent(b.start());
    hello[8] = Cipher.CHACHA20_POLY1305; // first cipher id
    assert.equal(of(a.receive(hello), 'error')[0]?.error.kind, 'handshake');
  });

  it('refuses a HELLO with an invalid (low-order) X25519 key without throwing', () => {
    const a = party('alice', 'bob');
    a.start();
    const evil = encodeHello({ name: 'bob', peer: 'alice', versions: { min: 2, max: 2 }, ciphers: [1, 2], nonce: Buffer.alloc(32, 9), publicKey: Buffer.alloc(32) }, KEYS.streamAuth, CONTEXT);
    const out = a.receive(evil);
    assert.equal(of(out, 'error')[0]?.error.kind, 'handshake');
  });

  it('decodeHello never throws on arbitrary bytes (fuzz)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        const d = decodeHello(bytes, KEYS.streamAuth, CONTEXT);
        assert.ok(d.ok || typeof d.reason === 'string');
      }),
      { numRuns: fuzzRuns(10_000) },
    );
    const good = encodeHello({ name: 'a', peer: 'b', versions: { min: 2, max: 2 }, ciphers: [1, 2], nonce: Buffer.alloc(32), publicKey: Buffer.alloc(32) }, KEYS.streamAuth, CONTEXT);
    // Every proper prefix of a valid HELLO asks for more bytes; the whole one decodes.
    for (let cut = 0; cut < good.length; cut++) assert.deepEqual(decodeHello(good.subarray(0, cut), KEYS.streamAuth, CONTEXT), { ok: false, reason: 'need-more' });
    assert.equal(decodeHello(good, KEYS.streamAuth, CONTEXT).ok, true);
  });
});
