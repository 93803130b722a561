/**
 * Both ends of the transfer protocol as sans-IO state machines: bytes from the stream in, events out;
 * the frames to send come back as bytes. No files, sockets or clocks here (./send.ts and ./receive.ts
 * drive them).
 *
 * Theory of operation
 * -------------------
 * The receiver's input alternates between two modes. In *frame* mode (before the manifest, and after
 * each file's last byte) it buffers until one whole frame has arrived; a frame's header is checked
 * before its payload is waited for, so a hostile length cannot make it buffer more than
 * MAX_MANIFEST_BYTES. In *data* mode it knows from the manifest how many bytes of file i remain and
 * hands out slices of the input without copying or buffering them: memory stays constant for any size.
 *
 *   expect-manifest ──MANIFEST──▶ data(0) ──size₀ bytes──▶ expect-file-end(0) ──FILE_END 0──▶ data(1) …
 *        … ──FILE_END n-1──▶ complete ──stream EOF──▶ (done)
 *
 * (A file of size 0 goes straight to expect-file-end.) Anything else, including bytes after the last
 * FILE_END or an EOF before it, fails the session: these are *remote* protocol errors, reported as
 * events. Calling a method out of order is a *local* error and throws.
 *
 * The sender's machine checks the receiver's answers: one ACCEPT, then FILE_OK for each file in order,
 * and only for files whose FILE_END it has already sent; or a FAIL at any time.
 */
import { decodeFrame, describeFrameProblem, describeNameProblem, encodeFrame, type FailReason, type Frame, type ManifestEntry } from './codec.js';

/** Problems in what the other side sent. */
export type RemoteProblem =
  | 'malformed-frame'
  | 'unsafe-name'
  | 'unexpected-frame'
  | 'wrong-index'
  | 'trailing-data'
  | 'ended-early';

export interface RemoteError {
  readonly problem: RemoteProblem;
  /** A sentence fragment for messages, e.g. "the sender ended after 2 of 3 files". */
  readonly detail: string;
}

export type ReceiverEvent =
  | { readonly type: 'manifest'; readonly files: readonly ManifestEntry[] }
  | { readonly type: 'data'; readonly index: number; readonly data: Buffer }
  | { readonly type: 'file-end'; readonly index: number; readonly sha256: Uint8Array }
  | { readonly type: 'complete' }
  | { readonly type: 'error'; readonly error: RemoteError };

type ReceiverState =
  | { readonly kind: 'expect-manifest' }
  | { readonly kind: 'data'; readonly index: number; remaining: number }
  | { readonly kind: 'expect-file-end'; readonly index: number }
  | { readonly kind: 'complete' }
  | { readonly kind: 'ended' }
  | { readonly kind: 'failed' };

const EMPTY = Buffer.alloc(0);

/** Input a frame-mode state could not use yet (at most one frame). */
class FrameBuffer {
  private pending: Buffer = EMPTY;

  /** Appends `input` and decodes one frame; `rest` is whatever follows that frame. */
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
    return { problem: 'unsafe-name', detail: `${who} offered a file name that ${describeNameProblem(result.problem)} (file ${result.index + 1})` };
  }
  return { problem: 'malformed-frame', detail: `${who} sent a malformed frame: ${describeFrameProblem(result.reason)}` };
}

export class ReceiverSession {
  private state: ReceiverState = { kind: 'expect-manifest' };
  private files: readonly ManifestEntry[] = [];
  private readonly frames = new FrameBuffer();

  get manifest(): readonly ManifestEntry[] {
    return this.files;
  }

  /** Bytes from the sender. Data events are slices of `chunk`, valid as long as it is. */
  receive(chunk: Buffer): ReceiverEvent[] {
    const out: ReceiverEvent[] = [];
    let input = chunk;
    while (input.length > 0) {
      const state = this.state;
      switch (state.kind) {
        case 'data': {
          const n = Math.min(state.remaining, input.length);
          out.push({ type: 'data', index: state.index, data: input.subarray(0, n) });
          input = input.subarray(n);
          state.remaining -= n;
          if (state.remaining === 0) this.state = { kind: 'expect-file-end', index: state.index };
          break;
        }
        case 'expect-manifest':
        case 'expect-file-end': {
          const { result, rest } = this.frames.take(input);
          input = rest;
          if (!result.ok) {
            if (result.reason !== 'need-more') return this.fail(out, malformed(result, 'the sender'));
            break;
          }
          if (!this.handleFrame(result.frame, out)) return out;
          break;
        }
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
    switch (this.state.kind) {
      case 'complete':
        this.state = { kind: 'ended' };
        return out;
      case 'ended':
      case 'failed':
        return out;
      case 'expect-manifest':
        return this.fail(out, { problem: 'ended-early', detail: 'the sender ended the stream before sending its list of files' });
      case 'data':
      case 'expect-file-end':
        return this.fail(out, {
          problem: 'ended-early',
          detail: `the sender ended the stream in file ${this.state.index + 1} of ${this.files.length} ("${this.files[this.state.index]?.name ?? ''}")`,
        });
    }
  }

  /** ACCEPT, once the driver found every name free. */
  accept(): Buffer {
    if (this.state.kind === 'expect-manifest') throw new Error('accept before the manifest');
    return encodeFrame({ type: 'accept' });
  }

  /** FILE_OK, once file `index` is verified and in place. */
  fileOk(index: number): Buffer {
    return encodeFrame({ type: 'file-ok', index });
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

  private handleFrame(frame: Frame, out: ReceiverEvent[]): boolean {
    const state = this.state;
    switch (frame.type) {
      case 'manifest':
        if (state.kind !== 'expect-manifest') break;
        this.files = frame.files;
        out.push({ type: 'manifest', files: frame.files });
        this.startFile(0, out);
        return true;
      case 'file-end':
        if (state.kind !== 'expect-file-end') break;
        if (frame.index !== state.index) {
          this.fail(out, { problem: 'wrong-index', detail: `the sender ended file ${frame.index + 1} while sending file ${state.index + 1}` });
          return false;
        }
        out.push({ type: 'file-end', index: frame.index, sha256: frame.sha256 });
        this.startFile(frame.index + 1, out);
        return true;
      case 'accept':
      case 'file-ok':
      case 'fail':
        break;
      default:
        return assertNever(frame);
    }
    this.fail(out, { problem: 'unexpected-frame', detail: `the sender sent a ${frame.type} frame where it may not` });
    return false;
  }

  private startFile(index: number, out: ReceiverEvent[]): void {
    const file = this.files[index];
    if (file === undefined) {
      this.state = { kind: 'complete' };
      out.push({ type: 'complete' });
    } else if (file.size === 0) {
      this.state = { kind: 'expect-file-end', index };
    } else {
      this.state = { kind: 'data', index, remaining: file.size };
    }
  }
}

export type SenderEvent =
  | { readonly type: 'accepted' }
  | { readonly type: 'file-ok'; readonly index: number }
  /** Every file verified and in place. */
  | { readonly type: 'complete' }
  | { readonly type: 'refused'; readonly reason: FailReason; readonly index: number | undefined; readonly detail: string }
  | { readonly type: 'error'; readonly error: RemoteError };

type SenderState = 'idle' | 'awaiting-accept' | 'sending' | 'complete' | 'failed';

export class SenderSession {
  private state: SenderState = 'idle';
  /** Files whose FILE_END went out, and files the receiver confirmed. */
  private ended = 0;
  private confirmed = 0;
  private readonly frames = new FrameBuffer();

  constructor(private readonly files: readonly ManifestEntry[]) {}

  /** The MANIFEST frame: the first thing to send. */
  manifest(): Buffer {
    if (this.state !== 'idle') throw new Error('manifest sent twice');
    this.state = 'awaiting-accept';
    return encodeFrame({ type: 'manifest', files: this.files });
  }

  /** FILE_END for file `index`, once exactly its size in bytes has been written. */
  fileEnd(index: number, sha256: Uint8Array): Buffer {
    if (this.state !== 'sending' || index !== this.ended) throw new Error(`file ${index} ended out of order`);
    this.ended++;
    return encodeFrame({ type: 'file-end', index, sha256 });
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
      detail: `the receiver ended the stream after confirming ${this.confirmed} of ${this.files.length} files`,
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
        this.state = 'sending';
        out.push({ type: 'accepted' });
        if (this.files.length === 0) this.complete(out);
        return;
      case 'file-ok':
        if (this.state !== 'sending') break;
        if (frame.index !== this.confirmed || frame.index >= this.ended) {
          this.fail(out, { problem: 'wrong-index', detail: `the receiver confirmed file ${frame.index + 1} out of order` });
          return;
        }
        this.confirmed++;
        out.push({ type: 'file-ok', index: frame.index });
        if (this.confirmed === this.files.length) this.complete(out);
        return;
      case 'manifest':
      case 'file-end':
        break;
      default:
        assertNever(frame);
    }
    this.fail(out, { problem: 'unexpected-frame', detail: `the receiver sent a ${frame.type} frame where it may not` });
  }

  private complete(out: SenderEvent[]): void {
    this.state = 'complete';
    out.push({ type: 'complete' });
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
