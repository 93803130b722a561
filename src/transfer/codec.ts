/**
 * Wire format of `burrow send` / `burrow receive`, carried inside an encrypted SecureStream (which
 * already authenticates, orders and delivery-confirms every byte; this layer adds names, sizes, modes
 * and end-to-end SHA-256). Pure: bytes in, values or a named reason out.
 *
 * Every control message is a frame:
 *
 *    0      1                 5
 *   +------+-----------------+---------------------+
 *   | type | length (u32 BE) | payload (length B)  |
 *   +------+-----------------+---------------------+
 *
 *   sender → receiver                          receiver → sender
 *   0x01 MANIFEST  (below)                     0x11 ACCEPT   (empty): the names are free, send the data
 *   0x02 FILE_END  index u32 | SHA-256 (32 B)  0x12 FILE_OK  index u32: verified and renamed into place
 *                                              0x13 FAIL     reason u8 | index u32 (0xffffffff: none) |
 *                                                            detail (UTF-8, ≤ 1024 B)
 *
 *   MANIFEST payload:
 *   +--------+---------+-------------+----------------------------------------------------------+
 *   | "BRWF" | version | count u32   | count × ( name length u16 | name UTF-8 | size u64 | mode u16 ) |
 *   +--------+---------+-------------+----------------------------------------------------------+
 *
 * File contents are not framed: after ACCEPT the sender writes exactly `size` bytes of file 0, then
 * FILE_END 0, then file 1's bytes, FILE_END 1, and so on, then ends the stream. The receiver knows every
 * length from the manifest, so data costs no per-chunk header and flows from disk to socket unchanged.
 * See ./README.md for the sequence.
 */

export const FRAME_HEADER_BYTES = 5;
export const MANIFEST_MAGIC = Buffer.from('BRWF', 'ascii');
export const PROTOCOL_VERSION = 1;
/** Bounds what a receiver buffers before the data starts. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_FILES = 10_000;
/** NAME_MAX on Linux and the BSDs. */
export const MAX_NAME_BYTES = 255;
export const MAX_DETAIL_BYTES = 1024;
/** File sizes travel as u64 but must stay exact in a JavaScript number. */
export const MAX_FILE_SIZE = Number.MAX_SAFE_INTEGER;
export const SHA256_BYTES = 32;
const NO_INDEX = 0xffff_ffff;

export const FrameType = {
  MANIFEST: 0x01,
  FILE_END: 0x02,
  ACCEPT: 0x11,
  FILE_OK: 0x12,
  FAIL: 0x13,
} as const;

export interface ManifestEntry {
  /** A bare file name, checked by `checkFileName`. */
  readonly name: string;
  readonly size: number;
  /** Permission bits only (mode & 0o777). */
  readonly mode: number;
}

/** Why the receiver refused; the sender turns it into its own error. */
export type FailReason = 'exists' | 'write-failed' | 'hash-mismatch' | 'protocol';
const FAIL_REASONS: readonly FailReason[] = ['exists', 'write-failed', 'hash-mismatch', 'protocol'];

export type Frame =
  | { readonly type: 'manifest'; readonly files: readonly ManifestEntry[] }
  | { readonly type: 'file-end'; readonly index: number; readonly sha256: Uint8Array }
  | { readonly type: 'accept' }
  | { readonly type: 'file-ok'; readonly index: number }
  | { readonly type: 'fail'; readonly reason: FailReason; readonly index: number | undefined; readonly detail: string };

/** Why a name may not become a file in the output directory. */
export type NameProblem = 'empty' | 'too-long' | 'separator' | 'dot-dot' | 'dot' | 'control-character';

export type FrameProblem =
  | 'need-more'
  | 'unknown-type'
  | 'frame-too-large'
  | 'bad-length'
  | 'bad-magic'
  | 'unsupported-version'
  | 'too-many-files'
  | 'truncated-entry'
  | 'trailing-bytes'
  | 'size-too-large'
  | 'bad-mode'
  | 'duplicate-name'
  | 'bad-utf8'
  | 'bad-fail-reason';

export type DecodeResult =
  | { readonly ok: true; readonly frame: Frame; readonly used: number }
  | { readonly ok: false; readonly reason: FrameProblem }
  | { readonly ok: false; readonly reason: 'bad-name'; readonly problem: NameProblem; readonly index: number };

/**
 * The receiver joins this name to its output directory, so anything that could leave the directory
 * or name something else is refused: separators (both kinds, for peers on Windows), any "..", ".",
 * control characters (NUL ends a C path; the rest could rewrite the terminal when names are printed).
 */
export function checkFileName(name: string): NameProblem | undefined {
  if (name.length === 0) return 'empty';
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) return 'too-long';
  if (name.includes('/') || name.includes('\\')) return 'separator';
  if (name.includes('..')) return 'dot-dot';
  if (name === '.') return 'dot';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'control-character';
  return undefined;
}

export function describeNameProblem(problem: NameProblem): string {
  switch (problem) {
    case 'empty':
      return 'is empty';
    case 'too-long':
      return `is longer than ${MAX_NAME_BYTES} bytes`;
    case 'separator':
      return 'contains a path separator (/ or \\)';
    case 'dot-dot':
      return 'contains ".."';
    case 'dot':
      return 'is "."';
    case 'control-character':
      return 'contains a control character';
  }
}

function header(type: number, length: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(length, 1);
  return h;
}

/** Encodes a frame. Throws RangeError on values no valid peer would send (local misuse). */
export function encodeFrame(frame: Frame): Buffer {
  switch (frame.type) {
    case 'manifest':
      return encodeManifest(frame.files);
    case 'file-end': {
      if (frame.sha256.length !== SHA256_BYTES) throw new RangeError('sha256 must be 32 bytes');
      const b = Buffer.concat([header(FrameType.FILE_END, 4 + SHA256_BYTES), Buffer.alloc(4), frame.sha256]);
      b.writeUInt32BE(checkIndex(frame.index), FRAME_HEADER_BYTES);
      return b;
    }
    case 'accept':
      return header(FrameType.ACCEPT, 0);
    case 'file-ok': {
      const b = Buffer.concat([header(FrameType.FILE_OK, 4), Buffer.alloc(4)]);
      b.writeUInt32BE(checkIndex(frame.index), FRAME_HEADER_BYTES);
      return b;
    }
    case 'fail': {
      // Truncate the detail on a character boundary so it always decodes.
      let detail = Buffer.from(frame.detail, 'utf8');
      if (detail.length > MAX_DETAIL_BYTES) detail = Buffer.from(new TextDecoder().decode(detail.subarray(0, MAX_DETAIL_BYTES)).replace(/\uFFFD$/, ''), 'utf8');
      const b = Buffer.concat([header(FrameType.FAIL, 5 + detail.length), Buffer.alloc(5), detail]);
      b.writeUInt8(FAIL_REASONS.indexOf(frame.reason), FRAME_HEADER_BYTES);
      b.writeUInt32BE(frame.index === undefined ? NO_INDEX : checkIndex(frame.index), FRAME_HEADER_BYTES + 1);
      return b;
    }
  }
}

function checkIndex(index: number): number {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_FILES) throw new RangeError(`file index ${index} out of range`);
  return index;
}

function encodeManifest(files: readonly ManifestEntry[]): Buffer {
  if (files.length > MAX_FILES) throw new RangeError(`at most ${MAX_FILES} files per transfer`);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(files.length);
  const parts: Buffer[] = [MANIFEST_MAGIC, Buffer.from([PROTOCOL_VERSION]), count];
  const seen = new Set<string>();
  for (const f of files) {
    const problem = checkFileName(f.name);
    if (problem !== undefined) throw new RangeError(`file name "${f.name}" ${describeNameProblem(problem)}`);
    if (seen.has(f.name)) throw new RangeError(`file name "${f.name}" appears twice`);
    seen.add(f.name);
    if (!Number.isSafeInteger(f.size) || f.size < 0) throw new RangeError(`size ${f.size} out of range`);
    if (!Number.isInteger(f.mode) || f.mode < 0 || f.mode > 0o777) throw new RangeError(`mode ${f.mode} is not a permission mask`);
    const name = Buffer.from(f.name, 'utf8');
    const entry = Buffer.alloc(2 + name.length + 8 + 2);
    entry.writeUInt16BE(name.length, 0);
    name.copy(entry, 2);
    entry.writeBigUInt64BE(BigInt(f.size), 2 + name.length);
    entry.writeUInt16BE(f.mode, 2 + name.length + 8);
    parts.push(entry);
  }
  const payload = Buffer.concat(parts);
  if (payload.length > MAX_MANIFEST_BYTES) throw new RangeError('manifest too large');
  return Buffer.concat([header(FrameType.MANIFEST, payload.length), payload]);
}

/** The largest payload each frame type may declare; checked on the header, before buffering it. */
function lengthAllowed(type: number, length: number): 'ok' | 'unknown-type' | 'frame-too-large' | 'bad-length' {
  switch (type) {
    case FrameType.MANIFEST:
      return length > MAX_MANIFEST_BYTES ? 'frame-too-large' : 'ok';
    case FrameType.FILE_END:
      return length === 4 + SHA256_BYTES ? 'ok' : 'bad-length';
    case FrameType.ACCEPT:
      return length === 0 ? 'ok' : 'bad-length';
    case FrameType.FILE_OK:
      return length === 4 ? 'ok' : 'bad-length';
    case FrameType.FAIL:
      return length > 5 + MAX_DETAIL_BYTES ? 'frame-too-large' : length < 5 ? 'bad-length' : 'ok';
    default:
      return 'unknown-type';
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Decodes the frame at the start of `bytes`; `used` says how many bytes it took. Never throws. */
export function decodeFrame(bytes: Uint8Array): DecodeResult {
  if (bytes.length < FRAME_HEADER_BYTES) return { ok: false, reason: 'need-more' };
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = b.readUInt8(0);
  const length = b.readUInt32BE(1);
  const allowed = lengthAllowed(type, length);
  if (allowed !== 'ok') return { ok: false, reason: allowed };
  if (b.length < FRAME_HEADER_BYTES + length) return { ok: false, reason: 'need-more' };
  const p = b.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length);
  const used = FRAME_HEADER_BYTES + length;
  switch (type) {
    case FrameType.MANIFEST: {
      const m = decodeManifest(p);
      return m.ok ? { ok: true, frame: { type: 'manifest', files: m.files }, used } : m;
    }
    case FrameType.FILE_END: {
      const index = p.readUInt32BE(0);
      if (index >= MAX_FILES) return { ok: false, reason: 'too-many-files' };
      return { ok: true, frame: { type: 'file-end', index, sha256: Uint8Array.from(p.subarray(4)) }, used };
    }
    case FrameType.ACCEPT:
      return { ok: true, frame: { type: 'accept' }, used };
    case FrameType.FILE_OK: {
      const index = p.readUInt32BE(0);
      if (index >= MAX_FILES) return { ok: false, reason: 'too-many-files' };
      return { ok: true, frame: { type: 'file-ok', index }, used };
    }
    default: {
      // FAIL (lengthAllowed admits no other type).
      const reason = FAIL_REASONS[p.readUInt8(0)];
      if (reason === undefined) return { ok: false, reason: 'bad-fail-reason' };
      const raw = p.readUInt32BE(1);
      if (raw !== NO_INDEX && raw >= MAX_FILES) return { ok: false, reason: 'too-many-files' };
      const detail = decodeUtf8(p.subarray(5));
      if (detail === undefined) return { ok: false, reason: 'bad-utf8' };
      return { ok: true, frame: { type: 'fail', reason, index: raw === NO_INDEX ? undefined : raw, detail }, used };
    }
  }
}

type ManifestResult = { ok: true; files: ManifestEntry[] } | Exclude<DecodeResult, { ok: true }>;

function decodeManifest(p: Buffer): ManifestResult {
  if (p.length < 9) return { ok: false, reason: 'truncated-entry' };
  if (!p.subarray(0, 4).equals(MANIFEST_MAGIC)) return { ok: false, reason: 'bad-magic' };
  if (p.readUInt8(4) !== PROTOCOL_VERSION) return { ok: false, reason: 'unsupported-version' };
  const count = p.readUInt32BE(5);
  if (count > MAX_FILES) return { ok: false, reason: 'too-many-files' };
  const files: ManifestEntry[] = [];
  const seen = new Set<string>();
  let at = 9;
  for (let index = 0; index < count; index++) {
    if (at + 2 > p.length) return { ok: false, reason: 'truncated-entry' };
    const nameLength = p.readUInt16BE(at);
    if (at + 2 + nameLength + 10 > p.length) return { ok: false, reason: 'truncated-entry' };
    const name = decodeUtf8(p.subarray(at + 2, at + 2 + nameLength));
    if (name === undefined) return { ok: false, reason: 'bad-utf8' };
    const problem = checkFileName(name);
    if (problem !== undefined) return { ok: false, reason: 'bad-name', problem, index };
    if (seen.has(name)) return { ok: false, reason: 'duplicate-name' };
    seen.add(name);
    const size = p.readBigUInt64BE(at + 2 + nameLength);
    if (size > BigInt(MAX_FILE_SIZE)) return { ok: false, reason: 'size-too-large' };
    const mode = p.readUInt16BE(at + 2 + nameLength + 8);
    if (mode > 0o777) return { ok: false, reason: 'bad-mode' };
    files.push({ name, size: Number(size), mode });
    at += 2 + nameLength + 10;
  }
  if (at !== p.length) return { ok: false, reason: 'trailing-bytes' };
  return { ok: true, files };
}

export function describeFrameProblem(reason: FrameProblem | 'bad-name'): string {
  switch (reason) {
    case 'need-more':
      return 'the frame is incomplete';
    case 'unknown-type':
      return 'a frame of unknown type arrived (is the other side running `burrow send`/`burrow receive`?)';
    case 'frame-too-large':
      return 'a frame is larger than allowed';
    case 'bad-length':
      return 'a frame has the wrong length for its type';
    case 'bad-magic':
      return 'the manifest does not start with the transfer protocol’s magic';
    case 'unsupported-version':
      return 'the manifest uses another version of the transfer protocol (update both sides)';
    case 'too-many-files':
      return `more than ${MAX_FILES} files`;
    case 'truncated-entry':
      return 'a manifest entry is cut short';
    case 'trailing-bytes':
      return 'the manifest has bytes after its last entry';
    case 'size-too-large':
      return 'a file size is larger than 2^53 - 1 bytes';
    case 'bad-mode':
      return 'a file mode has bits other than the permission bits';
    case 'duplicate-name':
      return 'two files in the manifest have the same name';
    case 'bad-utf8':
      return 'a text field is not valid UTF-8';
    case 'bad-fail-reason':
      return 'a refusal carries an unknown reason';
    case 'bad-name':
      return 'a file name is unsafe';
  }
}
