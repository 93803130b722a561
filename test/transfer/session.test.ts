/** The transfer state machines, driven by hand: order, chunking, remote errors, and no throws on input. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzRuns } from '../support/fuzz.js';
import { encodeFrame, type ManifestEntry } from '../../src/transfer/codec.js';
import { ReceiverSession, SenderSession, type ReceiverEvent } from '../../src/transfer/session.js';

const FILES: ManifestEntry[] = [
  { name: 'a.txt', size: 5, mode: 0o644 },
  { name: 'empty', size: 0, mode: 0o600 },
  { name: 'b.bin', size: 70_000, mode: 0o755 },
];
const CONTENTS = [Buffer.from('hello'), Buffer.alloc(0), Buffer.alloc(70_000, 7)];
const SHA = (i: number): Uint8Array => new Uint8Array(32).fill(i + 1);

/** Everything a correct sender writes for FILES. */
function transcript(): Buffer {
  const parts: Buffer[] = [encodeFrame({ type: 'manifest', files: FILES })];
  FILES.forEach((_, i) => parts.push(CONTENTS[i] ?? Buffer.alloc(0), encodeFrame({ type: 'file-end', index: i, sha256: SHA(i) })));
  return Buffer.concat(parts);
}

/** Events with data joined per file, so different chunkings compare equal. */
function summarize(events: ReceiverEvent[]): unknown[] {
  const out: unknown[] = [];
  for (const e of events) {
    const last = out.at(-1) as { type?: string; index?: number; data?: string } | undefined;
    if (e.type === 'data') {
      if (last?.type === 'data' && last.index === e.index) last.data = (last.data ?? '') + e.data.toString('hex');
      else out.push({ type: 'data', index: e.index, data: e.data.toString('hex') });
    } else if (e.type === 'file-end') {
      out.push({ type: 'file-end', index: e.index, sha256: Buffer.from(e.sha256).toString('hex') });
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
    events.push(...session.receive(input.subarray(at, cut)));
    at = cut;
  }
  return events;
}

describe('ReceiverSession', () => {
  it('turns a whole transfer into manifest, data, file-end and complete; EOF then ends it cleanly', () => {
    const r = new ReceiverSession();
    const events = summarize(r.receive(transcript()));
    assert.deepEqual(events, [
      { type: 'manifest', files: FILES },
      { type: 'data', index: 0, data: CONTENTS[0]?.toString('hex') },
      { type: 'file-end', index: 0, sha256: Buffer.from(SHA(0)).toString('hex') },
      { type: 'file-end', index: 1, sha256: Buffer.from(SHA(1)).toString('hex') },
      { type: 'data', index: 2, data: CONTENTS[2]?.toString('hex') },
      { type: 'file-end', index: 2, sha256: Buffer.from(SHA(2)).toString('hex') },
      { type: 'complete' },
    ]);
    assert.deepEqual(r.end(), []);
  });

  it('property: any chunking gives the same events', () => {
    const whole = transcript();
    const expected = summarize(new ReceiverSession().receive(whole));
    fc.assert(fc.property(fc.array(fc.nat({ max: whole.length }), { maxLength: 30 }), (cuts) => {
      assert.deepEqual(summarize(feed(new ReceiverSession(), whole, cuts)), expected);
    }), { numRuns: fuzzRuns(300) });
  });

  it('data events are slices of the input, never copies (constant memory)', () => {
    const r = new ReceiverSession();
    r.receive(encodeFrame({ type: 'manifest', files: [{ name: 'x', size: 10, mode: 0o644 }] }));
    const chunk = Buffer.from('0123456789');
    const [e] = r.receive(chunk);
    assert.ok(e?.type === 'data');
    assert.equal(e.data.buffer, chunk.buffer);
  });

  const remote: [string, Buffer[], boolean, string, RegExp][] = [
    ['EOF before the manifest', [], true, 'ended-early', /before sending its list/],
    ['EOF in the middle of a file', [encodeFrame({ type: 'manifest', files: FILES }), Buffer.from('he')], true, 'ended-early', /in file 1 of 3 \("a\.txt"\)/],
    ['EOF before the last FILE_END', [encodeFrame({ type: 'manifest', files: FILES }), Buffer.from('hello')], true, 'ended-early', /in file 1 of 3/],
    ['bytes after the last file', [transcript(), Buffer.from([0])], false, 'trailing-data', /more after its last file/],
    ['FILE_END for the wrong file', [encodeFrame({ type: 'manifest', files: FILES }), Buffer.from('hello'), encodeFrame({ type: 'file-end', index: 1, sha256: SHA(0) })], false, 'wrong-index', /ended file 2 while sending file 1/],
    ['a second MANIFEST', [encodeFrame({ type: 'manifest', files: [{ name: 'e', size: 0, mode: 0 }] }), encodeFrame({ type: 'manifest', files: FILES })], false, 'unexpected-frame', /manifest frame/],
    ['a receiver’s frame from the sender', [encodeFrame({ type: 'accept' })], false, 'unexpected-frame', /accept frame/],
    ['garbage instead of a frame', [Buffer.from('GET / HTTP/1.1\r\n')], false, 'malformed-frame', /unknown type/],
    ['an unsafe name', [Buffer.from('010000001a4252574601000000010005' + '2e2e2f6574' + '0000000000000000' + '01a4', 'hex')], false, 'unsafe-name', /contains a path separator|contains "\.\."/],
  ];
  for (const [what, chunks, thenEnd, problem, detail] of remote) {
    it(`reports ${what} as a remote error (${problem}) and then ignores input`, () => {
      const r = new ReceiverSession();
      const events = chunks.flatMap((c) => r.receive(c));
      if (thenEnd) events.push(...r.end());
      const error = events.at(-1);
      assert.ok(error?.type === 'error', JSON.stringify(events.map((e) => e.type)));
      assert.equal(error.error.problem, problem);
      assert.match(error.error.detail, detail);
      assert.deepEqual(r.receive(transcript()), []);
      assert.deepEqual(r.end(), []);
    });
  }

  it('never throws on arbitrary input, however chunked', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 10 }), fc.boolean(), (chunks, end) => {
      const r = new ReceiverSession();
      for (const c of chunks) r.receive(Buffer.from(c));
      if (end) r.end();
    }), { numRuns: fuzzRuns(1000) });
    // Valid prefixes with garbage after them reach the deeper states.
    const whole = transcript();
    fc.assert(fc.property(fc.nat({ max: whole.length }), fc.uint8Array({ maxLength: 64 }), (cut, tail) => {
      const r = new ReceiverSession();
      r.receive(whole.subarray(0, cut));
      r.receive(Buffer.from(tail));
      r.end();
    }), { numRuns: fuzzRuns(1000) });
  });

  it('throws on local misuse: ACCEPT before a manifest', () => {
    assert.throws(() => new ReceiverSession().accept(), /before the manifest/);
  });
});

describe('SenderSession', () => {
  it('accepts ACCEPT, then FILE_OK in order for files already ended, then completes', () => {
    const s = new SenderSession(FILES);
    s.manifest();
    assert.deepEqual(s.receive(encodeFrame({ type: 'accept' })), [{ type: 'accepted' }]);
    s.fileEnd(0, SHA(0));
    s.fileEnd(1, SHA(1));
    assert.deepEqual(s.receive(Buffer.concat([encodeFrame({ type: 'file-ok', index: 0 }), encodeFrame({ type: 'file-ok', index: 1 })])), [
      { type: 'file-ok', index: 0 },
      { type: 'file-ok', index: 1 },
    ]);
    s.fileEnd(2, SHA(2));
    const ok = encodeFrame({ type: 'file-ok', index: 2 });
    // Split mid-frame: buffered until whole.
    assert.deepEqual(s.receive(ok.subarray(0, 3)), []);
    assert.deepEqual(s.receive(ok.subarray(3)), [{ type: 'file-ok', index: 2 }, { type: 'complete' }]);
    assert.deepEqual(s.end(), []);
  });

  it('reports a refusal with its reason, file and detail', () => {
    const s = new SenderSession(FILES);
    s.manifest();
    assert.deepEqual(s.receive(encodeFrame({ type: 'fail', reason: 'exists', index: 2, detail: 'taken' })), [
      { type: 'refused', reason: 'exists', index: 2, detail: 'taken' },
    ]);
    assert.deepEqual(s.end(), []);
  });

  const remote: [string, (s: SenderSession) => Buffer[], string][] = [
    ['FILE_OK before ACCEPT', () => [encodeFrame({ type: 'file-ok', index: 0 })], 'unexpected-frame'],
    ['FILE_OK for a file not yet sent', () => [encodeFrame({ type: 'accept' }), encodeFrame({ type: 'file-ok', index: 0 })], 'wrong-index'],
    ['FILE_OK out of order', (s) => {
      const accept = encodeFrame({ type: 'accept' });
      s.receive(accept);
      s.fileEnd(0, SHA(0));
      s.fileEnd(1, SHA(1));
      return [encodeFrame({ type: 'file-ok', index: 1 })];
    }, 'wrong-index'],
    ['a second ACCEPT', () => [encodeFrame({ type: 'accept' }), encodeFrame({ type: 'accept' })], 'unexpected-frame'],
    ['a sender’s frame from the receiver', () => [encodeFrame({ type: 'manifest', files: [] })], 'unexpected-frame'],
    ['garbage', () => [Buffer.from([0xee, 0, 0, 0, 0])], 'malformed-frame'],
  ];
  for (const [what, input, problem] of remote) {
    it(`reports ${what} as a remote error (${problem})`, () => {
      const s = new SenderSession(FILES);
      s.manifest();
      const events = input(s).flatMap((c) => s.receive(c));
      const last = events.at(-1);
      assert.ok(last?.type === 'error', JSON.stringify(events));
      assert.equal(last.error.problem, problem);
    });
  }

  it('reports an EOF before every file was confirmed', () => {
    const s = new SenderSession(FILES);
    s.manifest();
    s.receive(encodeFrame({ type: 'accept' }));
    const [e] = s.end();
    assert.ok(e?.type === 'error');
    assert.equal(e.error.problem, 'ended-early');
    assert.match(e.error.detail, /after confirming 0 of 3 files/);
  });

  it('throws on local misuse: FILE_END out of order or before ACCEPT', () => {
    const s = new SenderSession(FILES);
    s.manifest();
    assert.throws(() => s.fileEnd(0, SHA(0)), /out of order/);
    s.receive(encodeFrame({ type: 'accept' }));
    assert.throws(() => s.fileEnd(1, SHA(1)), /out of order/);
    assert.throws(() => s.manifest(), /twice/);
  });

  it('never throws on arbitrary input', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 10 }), (chunks) => {
      const s = new SenderSession(FILES);
      s.manifest();
      for (const c of chunks) s.receive(Buffer.from(c));
      s.end();
    }), { numRuns: fuzzRuns(1000) });
  });
});
