/** The transfer state machines (protocol v3), driven by hand: order, chunking, resume offsets, remote errors, no throws on input. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzRuns } from '../support/fuzz.js';
import { decodeFrame, encodeFrame, type ManifestEntry, type ResumeOffer } from '../../src/transfer/codec.js';
import { ReceiverSession, SenderSession, type ReceiverEvent, type SenderEvent } from '../../src/transfer/session.js';

const ENTRIES: ManifestEntry[] = [
  { kind: 'directory', path: 'd', size: 0, mode: 0o755 },
  { kind: 'file', path: 'd/a.txt', size: 5, mode: 0o644 },
  { kind: 'directory', path: 'd/empty', size: 0, mode: 0o700 },
  { kind: 'file', path: 'zero', size: 0, mode: 0o600 },
  { kind: 'file', path: 'b.bin', size: 70_000, mode: 0o755 },
  { kind: 'stream', path: 'stdin', size: 0, mode: 0o644 },
];
const DATA = new Map<number, Buffer>([
  [1, Buffer.from('hello')],
  [3, Buffer.alloc(0)],
  [4, Buffer.alloc(70_000, 7)],
  [5, Buffer.from('from a pipe')],
]);
const CHECK = (i: number): Uint8Array => new Uint8Array(16).fill(i + 1);
const KEY = new Uint8Array(32).fill(0x42);
const frame = (f: Parameters<typeof encodeFrame>[0]): Buffer => encodeFrame(f);

/** What a correct sender writes after ACCEPT: each data entry in DATA frames of at most `piece` bytes. */
function body(piece = 30_000, offsets = new Map<number, number>()): Buffer {
  const parts: Buffer[] = [];
  for (const [index, data] of DATA) {
    const offset = offsets.get(index) ?? 0;
    parts.push(frame({ type: 'file-start', index, offset }));
    for (let at = offset; at < data.length; at += piece) {
      const p = data.subarray(at, Math.min(data.length, at + piece));
      parts.push(frame({ type: 'data', length: p.length }), p);
    }
    parts.push(frame({ type: 'file-end', index, size: data.length, check: CHECK(index) }));
  }
  return Buffer.concat(parts);
}

/** Events with data joined per entry, so different chunkings compare equal. */
function summarize(events: ReceiverEvent[]): unknown[] {
  const out: unknown[] = [];
  for (const e of events) {
    const last = out.at(-1) as { type?: string; index?: number; data?: string } | undefined;
    if (e.type === 'data') {
      if (last?.type === 'data' && last.index === e.index) last.data = (last.data ?? '') + e.data.toString('hex');
      else out.push({ type: 'data', index: e.index, data: e.data.toString('hex') });
    } else if (e.type === 'file-end') {
      out.push({ type: 'file-end', index: e.index, size: e.size });
    } else {
      out.push(e);
    }
  }
  return out;
}

function feed(session: ReceiverSession, input: Buffer, cuts: number[]): ReceiverEvent[] {
  const events: ReceiverEvent[] = [];
  let at = 0;
  for (const cut of [...cuts.filter((c) => c > 0 && c < input.length)].sort((a, b) => a - b).concat(input.length)) {
    for (const e of session.receive(input.subarray(at, cut))) events.push(e);
    at = cut;
  }
  return events;
}

function accepted(offers: ResumeOffer[] = []): ReceiverSession {
  const r = new ReceiverSession();
  assert.equal(r.receive(frame({ type: 'manifest', entries: ENTRIES, checkKey: KEY }))[0]?.type, 'manifest');
  r.accept(offers);
  return r;
}

const errorOf = (events: ReceiverEvent[] | SenderEvent[]): string | undefined => {
  const e = events.find((x) => x.type === 'error');
  return e?.type === 'error' ? e.error.problem : undefined;
};

describe('ReceiverSession (v3)', () => {
  it('manifest, then after accept: each data entry started, its data, its end; complete; EOF ends cleanly', () => {
    const r = new ReceiverSession();
    assert.deepEqual(r.receive(frame({ type: 'manifest', entries: ENTRIES, checkKey: KEY })), [{ type: 'manifest', entries: ENTRIES, checkKey: KEY }]);
    const ack = r.accept();
    assert.equal(ack.toString('hex'), '110000000400000000');
    const events = summarize(r.receive(body()));
    assert.deepEqual(events, [
      { type: 'file-start', index: 1, offset: 0 },
      { type: 'data', index: 1, data: DATA.get(1)?.toString('hex') },
      { type: 'file-end', index: 1, size: 5 },
      { type: 'file-start', index: 3, offset: 0 },
      { type: 'file-end', index: 3, size: 0 },
      { type: 'file-start', index: 4, offset: 0 },
      { type: 'data', index: 4, data: DATA.get(4)?.toString('hex') },
      { type: 'file-end', index: 4, size: 70_000 },
      { type: 'file-start', index: 5, offset: 0 },
      { type: 'data', index: 5, data: DATA.get(5)?.toString('hex') },
      { type: 'file-end', index: 5, size: 11 },
      { type: 'complete' },
    ]);
    assert.deepEqual(r.end(), []);
  });

  it('the same events however the stream is cut (property), and data arrives as slices, never copied', () => {
    const input = body(4096);
    const whole = summarize(accepted().receive(input));
    fc.assert(fc.property(fc.array(fc.nat({ max: input.length }), { maxLength: 40 }), (cuts) => {
      assert.deepEqual(summarize(feed(accepted(), input, cuts)), whole);
    }), { numRuns: fuzzRuns(300) });
    const r = accepted();
    for (const e of r.receive(input)) if (e.type === 'data') assert.equal(e.data.buffer, input.buffer);
  });

  it('a resumed file starts at the offered offset and sends only the rest', () => {
    const r = accepted([{ index: 4, offset: 60_000, sha256: new Uint8Array(32) }]);
    const events = summarize(r.receive(body(30_000, new Map([[4, 60_000]]))));
    assert.deepEqual(events.filter((e) => (e as { index?: number }).index === 4), [
      { type: 'file-start', index: 4, offset: 60_000 },
      { type: 'data', index: 4, data: DATA.get(4)?.subarray(60_000).toString('hex') },
      { type: 'file-end', index: 4, size: 70_000 },
    ]);
  });

  it('only directories: accepting completes at once', () => {
    const r = new ReceiverSession();
    r.receive(frame({ type: 'manifest', entries: [{ kind: 'directory', path: 'only', size: 0, mode: 0o755 }], checkKey: KEY }));
    r.accept();
    assert.deepEqual(r.end(), []);
  });

  it('accept() refuses to offer what cannot be resumed (local misuse throws)', () => {
    const r = new ReceiverSession();
    assert.throws(() => r.accept());
    r.receive(frame({ type: 'manifest', entries: ENTRIES, checkKey: KEY }));
    assert.throws(() => r.accept([{ index: 0, offset: 1, sha256: new Uint8Array(32) }]), /entry 0/); // a directory
    assert.throws(() => r.accept([{ index: 5, offset: 1, sha256: new Uint8Array(32) }]), /entry 5/); // a stream
    assert.throws(() => r.accept([{ index: 1, offset: 6, sha256: new Uint8Array(32) }]), /entry 1/); // past its size
  });

  const remote: [string, (r: ReceiverSession) => ReceiverEvent[], string][] = [
    ['data before accept', () => {
      const s = new ReceiverSession();
      s.receive(frame({ type: 'manifest', entries: ENTRIES, checkKey: KEY }));
      return s.receive(frame({ type: 'file-start', index: 1, offset: 0 }));
    }, 'unexpected-frame'],
    ['the wrong entry started', (r) => r.receive(frame({ type: 'file-start', index: 3, offset: 0 })), 'wrong-index'],
    ['a directory started', (r) => r.receive(frame({ type: 'file-start', index: 0, offset: 0 })), 'wrong-index'],
    ['an offset nobody offered', (r) => r.receive(frame({ type: 'file-start', index: 1, offset: 2 })), 'bad-offset'],
    ['more bytes than the manifest says', (r) => r.receive(Buffer.concat([frame({ type: 'file-start', index: 1, offset: 0 }), frame({ type: 'data', length: 6 }), Buffer.alloc(6)])), 'size-mismatch'],
    ['a file ended short', (r) => r.receive(Buffer.concat([frame({ type: 'file-start', index: 1, offset: 0 }), frame({ type: 'data', length: 4 }), Buffer.alloc(4), frame({ type: 'file-end', index: 1, size: 4, check: CHECK(1) })])), 'size-mismatch'],
    ['FILE_END announcing another size than arrived', (r) => r.receive(Buffer.concat([frame({ type: 'file-start', index: 1, offset: 0 }), frame({ type: 'data', length: 5 }), Buffer.alloc(5), frame({ type: 'file-end', index: 1, size: 6, check: CHECK(1) })])), 'size-mismatch'],
    ['the wrong entry ended', (r) => r.receive(Buffer.concat([frame({ type: 'file-start', index: 1, offset: 0 }), frame({ type: 'file-end', index: 4, size: 0, check: CHECK(1) })])), 'wrong-index'],
    ['a receiver frame from the sender', (r) => r.receive(frame({ type: 'done' })), 'unexpected-frame'],
    ['a second manifest', (r) => r.receive(frame({ type: 'manifest', entries: ENTRIES, checkKey: KEY })), 'unexpected-frame'],
    ['a malformed frame', (r) => r.receive(Buffer.from('7f00000000', 'hex')), 'malformed-frame'],
    ['bytes after the last entry', (r) => r.receive(Buffer.concat([body(), Buffer.from([0])])), 'trailing-data'],
    ['EOF in the middle of a file', (r) => [...r.receive(frame({ type: 'file-start', index: 1, offset: 0 })), ...r.end()], 'ended-early'],
  ];
  for (const [what, act, problem] of remote) {
    it(`a remote error: ${what}`, () => {
      assert.equal(errorOf(act(accepted())), problem);
    });
  }

  it('an unsafe path in the manifest is a remote error naming the entry', () => {
    const r = new ReceiverSession();
    const raw = Buffer.from('0100000015' + '42525746' + '03' + '42'.repeat(32) + '00000001' + '000005' + '2e2e2f6161' + '0000000000000000' + '01a4', 'hex');
    raw.writeUInt32BE(raw.length - 5, 1);
    const events = r.receive(raw);
    assert.equal(errorOf(events), 'unsafe-name');
  });

  it('never throws on arbitrary input in any state (fuzz)', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 5 }), fc.boolean(), (chunks, accept) => {
      const r = accept ? accepted() : new ReceiverSession();
      for (const c of chunks) r.receive(Buffer.from(c));
      r.end();
    }), { numRuns: fuzzRuns(2000) });
  });
});

describe('SenderSession (v3)', () => {
  it('manifest → ACCEPT (with offers) → entries in order → FILE_OK each → DONE completes', () => {
    const s = new SenderSession(ENTRIES, KEY);
    const m = decodeFrame(s.manifest());
    assert.ok(m.ok && m.frame.type === 'manifest');
    assert.deepEqual(m.frame.entries, ENTRIES);
    assert.deepEqual(m.frame.checkKey, KEY, 'the manifest carries the check key');
    const offers = [{ index: 4, offset: 100, sha256: new Uint8Array(32).fill(9) }];
    const ev = s.receive(encodeFrame({ type: 'accept', offers }));
    assert.equal(ev[0]?.type, 'accepted');
    for (const [index, data] of DATA) {
      s.fileStart(index, index === 4 ? 100 : 0);
      if (data.length > 0) s.data(Math.min(data.length, 1000));
      s.fileEnd(index, data.length, CHECK(index));
    }
    const oks = Buffer.concat([...DATA.keys()].map((index) => encodeFrame({ type: 'file-ok', index })));
    assert.deepEqual(s.receive(oks).map((e) => e.type), ['file-ok', 'file-ok', 'file-ok', 'file-ok']);
    assert.deepEqual(s.receive(encodeFrame({ type: 'done' })), [{ type: 'complete' }]);
    assert.deepEqual(s.end(), []);
  });

  it('local misuse throws: out of order, unoffered offsets, data outside an entry', () => {
    const s = new SenderSession(ENTRIES, KEY);
    s.manifest();
    assert.throws(() => s.manifest());
    assert.throws(() => s.fileStart(1, 0), /out of order/); // before ACCEPT
    s.receive(encodeFrame({ type: 'accept', offers: [] }));
    assert.throws(() => s.data(1), /outside/);
    assert.throws(() => s.fileStart(3, 0), /out of order/);
    assert.throws(() => s.fileStart(1, 2), /not offered/);
    s.fileStart(1, 0);
    assert.throws(() => s.fileEnd(3, 0, CHECK(3)), /out of order/);
  });

  const remote: [string, Buffer[], string][] = [
    ['FILE_OK before its FILE_END', [encodeFrame({ type: 'accept', offers: [] }), encodeFrame({ type: 'file-ok', index: 1 })], 'wrong-index'],
    ['DONE before every FILE_OK', [encodeFrame({ type: 'accept', offers: [] }), encodeFrame({ type: 'done' })], 'unexpected-frame'],
    ['an offer for a directory', [encodeFrame({ type: 'accept', offers: [{ index: 0, offset: 1, sha256: new Uint8Array(32) }] })], 'bad-offset'],
    ['an offer past the end of a file', [encodeFrame({ type: 'accept', offers: [{ index: 1, offset: 6, sha256: new Uint8Array(32) }] })], 'bad-offset'],
    ['a second ACCEPT', [encodeFrame({ type: 'accept', offers: [] }), encodeFrame({ type: 'accept', offers: [] })], 'unexpected-frame'],
    ['a sender frame from the receiver', [encodeFrame({ type: 'file-start', index: 1, offset: 0 })], 'unexpected-frame'],
    ['a malformed frame', [Buffer.from('7f00000000', 'hex')], 'malformed-frame'],
  ];
  for (const [what, input, problem] of remote) {
    it(`a remote error: ${what}`, () => {
      const s = new SenderSession(ENTRIES, KEY);
      s.manifest();
      const events: SenderEvent[] = [];
      for (const b of input) for (const e of s.receive(b)) events.push(e);
      assert.equal(errorOf(events), problem);
    });
  }

  it('a FAIL at any time is a refusal with its reason (declined included)', () => {
    const s = new SenderSession(ENTRIES, KEY);
    s.manifest();
    assert.deepEqual(s.receive(encodeFrame({ type: 'fail', reason: 'declined', index: undefined, detail: 'no' })), [{ type: 'refused', reason: 'declined', index: undefined, detail: 'no' }]);
  });

  it('only directories: ACCEPT then DONE completes without any entry sent', () => {
    const s = new SenderSession([{ kind: 'directory', path: 'only', size: 0, mode: 0o755 }], KEY);
    s.manifest();
    s.receive(encodeFrame({ type: 'accept', offers: [] }));
    assert.deepEqual(s.receive(encodeFrame({ type: 'done' })), [{ type: 'complete' }]);
  });

  it('the receiver ending early is reported with a count', () => {
    const s = new SenderSession(ENTRIES, KEY);
    s.manifest();
    const [e] = s.end();
    assert.ok(e?.type === 'error');
    assert.match(e.error.detail, /after confirming 0 of 4 files/);
  });
});
