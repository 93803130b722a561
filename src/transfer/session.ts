/**
 * Both ends of the transfer protocol (version 3) as sans-IO state machines: bytes from the stream in,
 * events out; the frames to send come back as bytes. No files, sockets or clocks here (./send.ts and
 * ./receive.ts drive them).
 *
 * Theory of operation
 * -------------------
 * The manifest lists directories, files and streams (stdin). Directories carry no data; files and
 * streams ("data entries") are sent one after another, in manifest order:
 *
 *   FILE_START i, offset │ DATA … DATA │ FILE_END i, size, check
 *
 * `offset` is 0, or a resume offset the receiver offered in ACCEPT for that file (it already holds the
 * first `offset` bytes and their SHA-256; the sender checked its own) — then only the rest is sent.
 * `check` is the GMAC (./check.ts) of the bytes sent, under the key the manifest carries; the drivers
 * compute and compare it (this machine only carries it).
 *
 * The receiver's input alternates between two modes. In *frame* mode it buffers until one whole frame
 * has arrived; a frame's header is checked before its payload is waited for, so a hostile length cannot
 * make it buffer more than MAX_MANIFEST_BYTES. A DATA header switches to *data* mode for that many
 * bytes, handed out as slices of the input without copying or buffering: memory stays constant for any
 * size.
 *
 *   expect-manifest ─MANIFEST─▶ awaiting-accept ─accept()─▶ expect-start(first data entry)
 *   expect-start(i) ─FILE_START i─▶ in-entry(i) ─DATA*─▶ in-entry(i) ─FILE_END i─▶ expect-start(next) …
 *   … ─FILE_END last─▶ complete ─stream EOF─▶ (done)
 *
 * Anything else (a wrong index, an offset nobody offered, more bytes than the manifest announced, bytes
 * after the last FILE_END, an EOF before it) fails the session: these are *remote* protocol errors,
 * reported as events. Calling a method out of order is a *local* error and throws.
 *
 * The sender's machine checks the receiver's answers: one ACCEPT (whose offers must name files, within
 * their sizes), then FILE_OK for each data entry in order and only once its FILE_END went out, then DONE
 * (directory modes set); or a FAIL at any time.
 */
import {
  dataHeader,
  decodeFrame,
  describeFrameProblem,
  describeNameProblem,
  encodeFrame,
  MAX_FILE_SIZE,
  type FailReason,
  type Frame,
  type ManifestEntry,
  type ResumeOffer,
} from './codec.js';

/** Problems in what the other side sent. */
export type RemoteProblem =
  | 'malformed-frame'
  | 'unsafe-name'
  | 'unexpected-frame'
  | 'wrong-index'
  | 'bad-offset'
  | 'size-mismatch'
  | 'trailing-data'
  | 'ended-early';

export interface RemoteError {
  readonly problem: RemoteProblem;
  /** A sentence fragment for messages, e.g. "the sender ended after 2 of 3 files". */
  readonly detail: string;
}

export type ReceiverEvent =
  | { readonly type: 'manifest'; readonly entries: readonly ManifestEntry[]; readonly checkKey: Uint8Array }
  | { readonly type: 'file-start'; readonly index: number; readonly offset: number }
  | { readonly type: 'data'; readonly index: number; readonly data: Buffer }
  | { readonly type: 'file-end'; readonly index: number; readonly size: number; readonly check: Uint8Array }
  | { readonly type: 'complete' }
  | { readonly type: 'error'; readonly error: RemoteError };

type ReceiverState =
  | { readonly kind: 'expect-manifest' }
  | { readonly kind: 'awaiting-accept' }
  | { readonly kind: 'expect-start'; readonly index: number }
  | { readonly kind: 'in-entry'; readonly index: number; readonly offset: number; received: number; frameLeft: number }
  | { readonly kind: 'complete' }
  | { readonly kind: 'ended' }
  | { readonly kind: 'failed' };

const EMPTY = Buffer.alloc(0);

/** Input a frame-mode state could not use yet (at most one frame). */
class FrameBuffer {
  private pending: Buffer = EMPTY;

  /** Appends `input` and decodes one frame; `rest` is whatever follows that frame (DATA: its header). */
  take(input: Buffer): { result: ReturnType<typeof decodeFrame>; rest: Buffer } {
    const all = this.pending.length === 0 ? input : Buffer.concat([this.pending, input]);
    const result = decodeFrame(all);
    if (!result.ok && result.reason === 'need-more') {
      // Copied: the caller may reuse its chunk; bounded by the largest frame a header may declare.
      this.pending = Buffer.from(all);
      return { result, rest: EMPTY };
    }
    this.pending = EMPTY;
    return { result, rest: result.ok ? all.subarray(result.used) : EMPTY };
  }
}

function malformed(result: Exclude<ReturnType<typeof decodeFrame>, { ok: true }>, who: string): RemoteError {
  if (result.reason === 'bad-name') {
    return { problem: 'unsafe-name', detail: `${who} offered a path that ${describeNameProblem(result.problem)} (entry ${result.index + 1})` };
  }
  return { problem: 'malformed-frame', detail: `${who} sent a malformed frame: ${describeFrameProblem(result.reason)}` };
}

/** Indices of the entries that carry data (files and streams), in order. */
function dataIndices(entries: readonly ManifestEntry[]): number[] {
  return entries.flatMap((e, i) => (e.kind === 'directory' ? [] : [i]));
}

export class ReceiverSession {
  private state: ReceiverState = { kind: 'expect-manifest' };
  private entries: readonly ManifestEntry[] = [];
  private order: number[] = [];
  private readonly offers = new Map<number, number>();
  private readonly frames = new FrameBuffer();

  get manifest(): readonly ManifestEntry[] {
    return this.entries;
  }

  /** Bytes from the sender. Data events are slices of `chunk`, valid as long as it is. */
  receive(chunk: Buffer): ReceiverEvent[] {
    const out: ReceiverEvent[] = [];
    let input = chunk;
    while (input.length > 0) {
      const state = this.state;
      if (state.kind === 'in-entry' && state.frameLeft > 0) {
        const n = Math.min(state.frameLeft, input.length);
        out.push({ type: 'data', index: state.index, data: input.subarray(0, n) });
        input = input.subarray(n);
        state.frameLeft -= n;
        continue;
      }
      switch (state.kind) {
        case 'expect-manifest':
        case 'expect-start':
        case 'in-entry': {
          const { result, rest } = this.frames.take(input);
          input = rest;
          if (!result.ok) {
            if (result.reason !== 'need-more') return this.fail(out, malformed(result, 'the sender'));
            break;
          }
          if (!this.handleFrame(result.frame, out)) return out;
          break;
        }
        case 'awaiting-accept':
          return this.fail(out, { problem: 'unexpected-frame', detail: 'the sender sent data before the transfer was accepted' });
        case 'complete':
          return this.fail(out, { problem: 'trailing-data', detail: 'the sender sent more after its last file' });
        case 'ended':
        case 'failed':
          return out;
        default:
          return assertNever(state);
      }
    }
    return out;
  }

  /** The sender ended its stream. */
  end(): ReceiverEvent[] {
    const out: ReceiverEvent[] = [];
    const state = this.state;
    switch (state.kind) {
      case 'complete':
        this.state = { kind: 'ended' };
        return out;
      case 'ended':
      case 'failed':
        return out;
      case 'expect-manifest':
        return this.fail(out, { problem: 'ended-early', detail: 'the sender ended the stream before sending its list of files' });
      case 'awaiting-accept':
        return this.fail(out, { problem: 'ended-early', detail: 'the sender ended the stream before the transfer was accepted' });
      case 'expect-start':
      case 'in-entry': {
        const done = this.order.indexOf(state.index);
        return this.fail(out, {
          problem: 'ended-early',
          detail: `the sender ended the stream in file ${done + 1} of ${this.order.length} ("${this.entries[state.index]?.path ?? ''}")`,
        });
      }
    }
  }

  /** ACCEPT, once the driver found every path usable; `offers` are the files it can resume. */
  accept(offers: readonly ResumeOffer[] = []): Buffer {
    if (this.state.kind !== 'awaiting-accept') throw new Error('accept before the manifest, or twice');
    for (const o of offers) {
      const e = this.entries[o.index];
      if (e?.kind !== 'file' || o.offset <= 0 || o.offset > e.size) throw new Error(`cannot offer to resume entry ${o.index} at ${o.offset}`);
      this.offers.set(o.index, o.offset);
    }
    const out: ReceiverEvent[] = [];
    this.nextEntry(-1, out);
    return encodeFrame({ type: 'accept', offers });
  }

  /** FILE_OK, once entry `index` is verified and in place. */
  fileOk(index: number): Buffer {
    return encodeFrame({ type: 'file-ok', index });
  }

  /** DONE, once every entry is in place and every directory has its mode. */
  done(): Buffer {
    return encodeFrame({ type: 'done' });
  }

  /** FAIL: the driver refuses the transfer (the session accepts no more input). */
  refuse(reason: FailReason, index: number | undefined, detail: string): Buffer {
    this.state = { kind: 'failed' };
    return encodeFrame({ type: 'fail', reason, index, detail });
  }

  private fail(out: ReceiverEvent[], error: RemoteError): ReceiverEvent[] {
    this.state = { kind: 'failed' };
    out.push({ type: 'error', error });
    return out;
  }

  /** Moves to the data entry after `index` (or completes); a 'complete' event when none is left. */
  private nextEntry(index: number, out: ReceiverEvent[]): void {
    const next = this.order.find((i) => i > index);
    if (next === undefined) {
      this.state = { kind: 'complete' };
      out.push({ type: 'complete' });
    } else {
      this.state = { kind: 'expect-start', index: next };
    }
  }

  private handleFrame(frame: Frame, out: ReceiverEvent[]): boolean {
    const state = this.state;
    switch (frame.type) {
      case 'manifest':
        if (state.kind !== 'expect-manifest') break;
        this.entries = frame.entries;
        this.order = dataIndices(frame.entries);
        this.state = { kind: 'awaiting-accept' };
        out.push({ type: 'manifest', entries: frame.entries, checkKey: frame.checkKey });
        return true;
      case 'file-start': {
        if (state.kind !== 'expect-start') break;
        if (frame.index !== state.index) {
          this.fail(out, { problem: 'wrong-index', detail: `the sender started entry ${frame.index + 1} where entry ${state.index + 1} was due` });
          return false;
        }
        if (frame.offset !== 0 && frame.offset !== this.offers.get(frame.index)) {
          this.fail(out, { problem: 'bad-offset', detail: `the sender resumed "${this.entries[frame.index]?.path ?? ''}" at byte ${frame.offset}, which was not offered` });
          return false;
        }
        this.state = { kind: 'in-entry', index: frame.index, offset: frame.offset, received: 0, frameLeft: 0 };
        out.push({ type: 'file-start', index: frame.index, offset: frame.offset });
        return true;
      }
      case 'data': {
        if (state.kind !== 'in-entry') break;
        const entry = this.entries[state.index];
        const limit = entry?.kind === 'file' ? entry.size : MAX_FILE_SIZE;
        if (state.offset + state.received + frame.length > limit) {
          this.fail(out, { problem: 'size-mismatch', detail: `the sender sent more of "${entry?.path ?? ''}" than the ${limit} bytes it announced` });
          return false;
        }
        state.received += frame.length;
        state.frameLeft = frame.length;
        return true;
      }
      case 'file-end': {
        if (state.kind !== 'in-entry') break;
        if (frame.index !== state.index) {
          this.fail(out, { problem: 'wrong-index', detail: `the sender ended entry ${frame.index + 1} while sending entry ${state.index + 1}` });
          return false;
        }
        const entry = this.entries[state.index];
        const got = state.offset + state.received;
        if (frame.size !== got || (entry?.kind === 'file' && frame.size !== entry.size)) {
          this.fail(out, { problem: 'size-mismatch', detail: `"${entry?.path ?? ''}" ended after ${got} bytes, announced as ${frame.size}${entry?.kind === 'file' ? ` (manifest: ${entry.size})` : ''}` });
          return false;
        }
        out.push({ type: 'file-end', index: frame.index, size: frame.size, check: frame.check });
        this.nextEntry(frame.index, out);
        return true;
      }
      case 'accept':
      case 'file-ok':
      case 'fail':
      case 'done':
        break;
      default:
        return assertNever(frame);
    }
    this.fail(out, { problem: 'unexpected-frame', detail: `the sender sent a ${frame.type} frame where it may not` });
    return false;
  }
}

export type SenderEvent =
  | { readonly type: 'accepted'; readonly offers: readonly ResumeOffer[] }
  | { readonly type: 'file-ok'; readonly index: number }
  /** Every entry verified and in place, directory modes set. */
  | { readonly type: 'complete' }
  | { readonly type: 'refused'; readonly reason: FailReason; readonly index: number | undefined; readonly detail: string }
  | { readonly type: 'error'; readonly error: RemoteError };

type SenderState = 'idle' | 'awaiting-accept' | 'sending' | 'awaiting-done' | 'complete' | 'failed';

export class SenderSession {
  private state: SenderState = 'idle';
  private readonly order: number[];
  /** Data entries whose FILE_END went out, and those the receiver confirmed (positions in `order`). */
  private ended = 0;
  private confirmed = 0;
  private started = -1;
  private offers = new Map<number, number>();
  private readonly frames = new FrameBuffer();

  /** `checkKey`: the key of the per-file checks (32 random bytes, ./check.ts), sent in the manifest. */
  constructor(
    private readonly entries: readonly ManifestEntry[],
    private readonly checkKey: Uint8Array,
  ) {
    this.order = dataIndices(entries);
  }

  /** The MANIFEST frame: the first thing to send. */
  manifest(): Buffer {
    if (this.state !== 'idle') throw new Error('manifest sent twice');
    this.state = 'awaiting-accept';
    return encodeFrame({ type: 'manifest', entries: this.entries, checkKey: this.checkKey });
  }

  /** FILE_START for the next data entry, at 0 or at an offset the receiver offered. */
  fileStart(index: number, offset: number): Buffer {
    if (this.state !== 'sending' || index !== this.order[this.ended] || this.started === index) throw new Error(`entry ${index} started out of order`);
    if (offset !== 0 && offset !== this.offers.get(index)) throw new Error(`entry ${index} resumed at ${offset}, which was not offered`);
    this.started = index;
    return encodeFrame({ type: 'file-start', index, offset });
  }

  /** The header of a DATA frame; the caller sends the `length` bytes right after it. */
  data(length: number): Buffer {
    if (this.state !== 'sending' || this.started !== this.order[this.ended]) throw new Error('data outside an entry');
    return dataHeader(length);
  }

  /** FILE_END for the entry in progress, once all its bytes went out. */
  fileEnd(index: number, size: number, check: Uint8Array): Buffer {
    if (this.state !== 'sending' || index !== this.order[this.ended] || this.started !== index) throw new Error(`entry ${index} ended out of order`);
    this.ended++;
    if (this.ended === this.order.length) this.state = 'awaiting-done';
    return encodeFrame({ type: 'file-end', index, size, check });
  }

  /** Bytes from the receiver. */
  receive(chunk: Buffer): SenderEvent[] {
    const out: SenderEvent[] = [];
    let input = chunk;
    while (input.length > 0 && this.state !== 'failed') {
      const { result, rest } = this.frames.take(input);
      input = rest;
      if (!result.ok) {
        if (result.reason !== 'need-more') return this.fail(out, malformed(result, 'the receiver'));
        break;
      }
      this.handleFrame(result.frame, out);
    }
    return out;
  }

  /** The receiver ended its stream. */
  end(): SenderEvent[] {
    if (this.state === 'complete' || this.state === 'failed') return [];
    return this.fail([], {
      problem: 'ended-early',
      detail: `the receiver ended the stream after confirming ${this.confirmed} of ${this.order.length} files`,
    });
  }

  private handleFrame(frame: Frame, out: SenderEvent[]): void {
    switch (frame.type) {
      case 'fail':
        this.state = 'failed';
        out.push({ type: 'refused', reason: frame.reason, index: frame.index, detail: frame.detail });
        return;
      case 'accept':
        if (this.state !== 'awaiting-accept') break;
        for (const o of frame.offers) {
          const e = this.entries[o.index];
          if (e?.kind !== 'file' || o.offset > e.size) {
            this.fail(out, { problem: 'bad-offset', detail: `the receiver offered to resume entry ${o.index + 1} at byte ${o.offset}, past its end or not a file` });
            return;
          }
        }
        this.offers = new Map(frame.offers.map((o) => [o.index, o.offset]));
        this.state = this.order.length === 0 ? 'awaiting-done' : 'sending';
        out.push({ type: 'accepted', offers: frame.offers });
        return;
      case 'file-ok': {
        if (this.state !== 'sending' && this.state !== 'awaiting-done') break;
        if (frame.index !== this.order[this.confirmed] || this.confirmed >= this.ended) {
          this.fail(out, { problem: 'wrong-index', detail: `the receiver confirmed entry ${frame.index + 1} out of order` });
          return;
        }
        this.confirmed++;
        out.push({ type: 'file-ok', index: frame.index });
        return;
      }
      case 'done':
        if (this.state !== 'awaiting-done' || this.confirmed !== this.order.length) break;
        this.state = 'complete';
        out.push({ type: 'complete' });
        return;
      case 'manifest':
      case 'file-start':
      case 'data':
      case 'file-end':
        break;
      default:
        assertNever(frame);
    }
    this.fail(out, { problem: 'unexpected-frame', detail: `the receiver sent a ${frame.type} frame where it may not` });
  }

  private fail(out: SenderEvent[], error: RemoteError): SenderEvent[] {
    this.state = 'failed';
    out.push({ type: 'error', error });
    return out;
  }
}

function assertNever(x: never): never {
  throw new Error(`unhandled: ${JSON.stringify(x)}`);
}
