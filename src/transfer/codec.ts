/**
 * Wire format of `burrow send` / `burrow receive` (transfer protocol version 3), carried inside an
 * encrypted SecureStream (which already authenticates, orders and delivery-confirms every byte; this
 * layer adds paths, sizes, modes, resume offsets and an end-to-end check per file, ./check.ts). Pure:
 * bytes in, values or a named reason out. The byte layouts and the flow are in docs/protocol.md.
 *
 * Every message is a frame:
 *
 *    0      1                 5
 *   +------+-----------------+---------------------+
 *   | type | length (u32 BE) | payload (length B)  |
 *   +------+-----------------+---------------------+
 *
 *   sender → receiver                               receiver → sender
 *   0x01 MANIFEST   (below)                         0x11 ACCEPT  count u32 | count × resume offer
 *   0x03 FILE_START index u32 | offset u64                       offer = index u32 | offset u64 | SHA-256 (32)
 *   0x04 DATA       file bytes (≤ 1 MiB)            0x12 FILE_OK index u32: verified and in place
 *   0x02 FILE_END   index u32 | size u64 | check    0x13 FAIL    reason u8 | index u32 (0xffffffff: none) |
 *                   (16: GMAC, ./check.ts)
 *                                                                detail (UTF-8, ≤ 1024 B)
 *                                                   0x14 DONE    (empty): every entry in place, directory
 *                                                                modes set
 *
 *   MANIFEST payload:
 *   +--------+-------------+-----------------+-----------+---------------------------------------------------------------+
 *   | "BRWF" | version (3) | check key (32)  | count u32 | count × ( kind u8 | path length u16 | path | size u64 | mode u16 ) |
 *   +--------+-------------+-----------------+-----------+---------------------------------------------------------------+
 *   kind: 0 file, 1 directory (size 0), 2 stream (size unknown: sent as 0, e.g. stdin)
 *   path: relative, components joined by "/", each a safe name (checkFileName); a directory appears
 *         before anything inside it.
 */

export const FRAME_HEADER_BYTES = 5;
export const MANIFEST_MAGIC = Buffer.from('BRWF', 'ascii');
export const PROTOCOL_VERSION = 3;
/** Bounds what a receiver buffers before the data starts. */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;
/** Entries (files, directories, streams) in one transfer. */
export const MAX_ENTRIES = 100_000;
/** NAME_MAX on Linux and the BSDs, per path component. */
export const MAX_NAME_BYTES = 255;
/** A whole relative path (PATH_MAX less room for the output directory). */
export const MAX_PATH_BYTES = 3072;
export const MAX_DEPTH = 64;
export const MAX_DETAIL_BYTES = 1024;
/** Largest DATA frame payload. */
export const MAX_DATA_BYTES = 1024 * 1024;
/** File sizes travel as u64 but must stay exact in a JavaScript number. */
export const MAX_FILE_SIZE = Number.MAX_SAFE_INTEGER;
export const SHA256_BYTES = 32;
/** The per-file check's key (in the manifest) and tag (in FILE_END): ./check.ts. */
export const CHECK_KEY_BYTES = 32;
export const CHECK_BYTES = 16;
/** Magic, version, check key, count. */
const MANIFEST_HEAD_BYTES = 4 + 1 + CHECK_KEY_BYTES + 4;
const NO_INDEX = 0xffff_ffff;
const OFFER_BYTES = 4 + 8 + SHA256_BYTES;

export const FrameType = {
  MANIFEST: 0x01,
  FILE_END: 0x02,
  FILE_START: 0x03,
  DATA: 0x04,
  ACCEPT: 0x11,
  FILE_OK: 0x12,
  FAIL: 0x13,
  DONE: 0x14,
} as const;

export type EntryKind = 'file' | 'directory' | 'stream';
const KINDS: readonly EntryKind[] = ['file', 'directory', 'stream'];

export interface ManifestEntry {
  readonly kind: EntryKind;
  /** Relative, "/"-separated, every component a safe name (checkPath). */
  readonly path: string;
  /** Bytes (files); 0 for directories and streams (whose size is known only at FILE_END). */
  readonly size: number;
  /** Permission bits only (mode & 0o777). */
  readonly mode: number;
}

/** The receiver already holds the first `offset` bytes of entry `index`, whose SHA-256 is `sha256`. */
export interface ResumeOffer {
  readonly index: number;
  readonly offset: number;
  readonly sha256: Uint8Array;
}

/** Why the receiver refused; the sender turns it into its own error. */
export type FailReason = 'exists' | 'write-failed' | 'hash-mismatch' | 'protocol' | 'declined';
const FAIL_REASONS: readonly FailReason[] = ['exists', 'write-failed', 'hash-mismatch', 'protocol', 'declined'];

export type Frame =
  | { readonly type: 'manifest'; readonly entries: readonly ManifestEntry[]; readonly checkKey: Uint8Array }
  | { readonly type: 'file-start'; readonly index: number; readonly offset: number }
  /** Only as a header: the `length` bytes after it are the data (decodeFrame does not buffer them). */
  | { readonly type: 'data'; readonly length: number }
  /** `check`: the GMAC of the bytes sent for this entry in this run (./check.ts). */
  | { readonly type: 'file-end'; readonly index: number; readonly size: number; readonly check: Uint8Array }
  | { readonly type: 'accept'; readonly offers: readonly ResumeOffer[] }
  | { readonly type: 'file-ok'; readonly index: number }
  | { readonly type: 'fail'; readonly reason: FailReason; readonly index: number | undefined; readonly detail: string }
  | { readonly type: 'done' };

/** Why a name may not become a file or directory under the output directory. */
export type NameProblem = 'empty' | 'too-long' | 'separator' | 'dot-dot' | 'dot' | 'control-character';
/** Why a relative path may not be used. */
export type PathProblem = NameProblem | 'path-too-long' | 'too-deep';

export type FrameProblem =
  | 'need-more'
  | 'unknown-type'
  | 'frame-too-large'
  | 'bad-length'
  | 'bad-magic'
  | 'unsupported-version'
  | 'too-many-entries'
  | 'bad-index'
  | 'truncated-entry'
  | 'trailing-bytes'
  | 'bad-kind'
  | 'size-too-large'
  | 'bad-mode'
  | 'duplicate-path'
  | 'parent-missing'
  | 'bad-utf8'
  | 'bad-fail-reason'
  | 'bad-offer';

export type DecodeResult =
  | { readonly ok: true; readonly frame: Frame; readonly used: number }
  | { readonly ok: false; readonly reason: FrameProblem }
  | { readonly ok: false; readonly reason: 'bad-name'; readonly problem: PathProblem; readonly index: number };

/**
 * One path component. The receiver joins it to a directory under `--out`, so anything that could
 * leave the directory or name something else is refused: separators (both kinds, for peers on
 * Windows), "..", ".", control characters (NUL ends a C path; the rest could rewrite the terminal
 * when names are printed).
 */
export function checkFileName(name: string): NameProblem | undefined {
  if (name.length === 0) return 'empty';
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) return 'too-long';
  if (name.includes('/') || name.includes('\\')) return 'separator';
  if (name === '..') return 'dot-dot';
  if (name === '.') return 'dot';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'control-character';
  return undefined;
}

/** A relative path: "/"-separated safe names, no leading or trailing "/", bounded length and depth. */
export function checkPath(path: string): PathProblem | undefined {
  if (path.length === 0) return 'empty';
  if (Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES) return 'path-too-long';
  const parts = path.split('/');
  if (parts.length > MAX_DEPTH) return 'too-deep';
  for (const part of parts) {
    const problem = checkFileName(part);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

export function describeNameProblem(problem: PathProblem): string {
  switch (problem) {
    case 'empty':
      return 'is empty or has an empty component (a leading, trailing or double "/")';
    case 'too-long':
      return `has a component longer than ${MAX_NAME_BYTES} bytes`;
    case 'separator':
      return 'contains a slash or a backslash';
    case 'dot-dot':
      return 'has a ".." component';
    case 'dot':
      return 'has a "." component';
    case 'control-character':
      return 'contains a control character';
    case 'path-too-long':
      return `is longer than ${MAX_PATH_BYTES} bytes`;
    case 'too-deep':
      return `is more than ${MAX_DEPTH} levels deep`;
  }
}

function header(type: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(length, 1);
  return h;
}

/** The 5-byte header of a DATA frame carrying `length` bytes (sent just before them). */
export function dataHeader(length: number): Buffer {
  if (!Number.isInteger(length) || length <= 0 || length > MAX_DATA_BYTES) throw new RangeError(`DATA frame of ${length} bytes`);
  return header(FrameType.DATA, length);
}

/** Encodes a frame. Throws RangeError on values no valid peer would send (local misuse). */
export function encodeFrame(frame: Frame): Buffer {
  switch (frame.type) {
    case 'manifest':
      return encodeManifest(frame.entries, frame.checkKey);
    case 'file-start': {
      const b = Buffer.concat([header(FrameType.FILE_START, 12), Buffer.alloc(12)]);
      b.writeUInt32BE(checkIndex(frame.index), FRAME_HEADER_BYTES);
      b.writeBigUInt64BE(BigInt(checkSize(frame.offset)), FRAME_HEADER_BYTES + 4);
      return b;
    }
    case 'data':
      return dataHeader(frame.length);
    case 'file-end': {
      if (frame.check.length !== CHECK_BYTES) throw new RangeError(`check must be ${CHECK_BYTES} bytes`);
      const b = Buffer.concat([header(FrameType.FILE_END, 12 + CHECK_BYTES), Buffer.alloc(12), frame.check]);
      b.writeUInt32BE(checkIndex(frame.index), FRAME_HEADER_BYTES);
      b.writeBigUInt64BE(BigInt(checkSize(frame.size)), FRAME_HEADER_BYTES + 4);
      return b;
    }
    case 'accept': {
      if (frame.offers.length > MAX_ENTRIES) throw new RangeError('too many resume offers');
      const b = Buffer.alloc(FRAME_HEADER_BYTES + 4 + frame.offers.length * OFFER_BYTES);
      header(FrameType.ACCEPT, b.length - FRAME_HEADER_BYTES).copy(b);
      b.writeUInt32BE(frame.offers.length, FRAME_HEADER_BYTES);
      let at = FRAME_HEADER_BYTES + 4;
      for (const o of frame.offers) {
        if (o.sha256.length !== SHA256_BYTES || o.offset <= 0) throw new RangeError('a resume offer has a positive offset and a 32-byte SHA-256');
        b.writeUInt32BE(checkIndex(o.index), at);
        b.writeBigUInt64BE(BigInt(checkSize(o.offset)), at + 4);
        b.set(o.sha256, at + 12);
        at += OFFER_BYTES;
      }
      return b;
    }
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
    case 'done':
      return header(FrameType.DONE, 0);
  }
}

function checkIndex(index: number): number {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_ENTRIES) throw new RangeError(`entry index ${index} out of range`);
  return index;
}

function checkSize(size: number): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`size ${size} out of range`);
  return size;
}

/** The directory part of a relative path ("" for a top-level entry). */
export function parentOf(path: string): string {
  const at = path.lastIndexOf('/');
  return at < 0 ? '' : path.slice(0, at);
}

/** What every manifest must satisfy, for the encoder (RangeError) and the decoder (a reason). */
function checkEntries(entries: readonly ManifestEntry[]): { reason: FrameProblem } | { reason: 'bad-name'; problem: PathProblem; index: number } | undefined {
  if (entries.length > MAX_ENTRIES) return { reason: 'too-many-entries' };
  const seen = new Map<string, EntryKind>();
  for (const [index, e] of entries.entries()) {
    const problem = checkPath(e.path);
    if (problem !== undefined) return { reason: 'bad-name', problem, index };
    if (seen.has(e.path)) return { reason: 'duplicate-path' };
    const parent = parentOf(e.path);
    if (parent !== '' && seen.get(parent) !== 'directory') return { reason: 'parent-missing' };
    if (!Number.isSafeInteger(e.size) || e.size < 0) return { reason: 'size-too-large' };
    if (e.kind !== 'file' && e.size !== 0) return { reason: 'size-too-large' };
    if (!Number.isInteger(e.mode) || e.mode < 0 || e.mode > 0o777) return { reason: 'bad-mode' };
    seen.set(e.path, e.kind);
  }
  return undefined;
}

function encodeManifest(entries: readonly ManifestEntry[], checkKey: Uint8Array): Buffer {
  if (checkKey.length !== CHECK_KEY_BYTES) throw new RangeError(`the check key must be ${CHECK_KEY_BYTES} bytes`);
  const wrong = checkEntries(entries);
  if (wrong !== undefined) {
    const which = 'index' in wrong ? ` (entry ${wrong.index + 1}: "${entries[wrong.index]?.path ?? ''}" ${describeNameProblem(wrong.problem)})` : '';
    throw new RangeError(`invalid manifest: ${wrong.reason}${which}`);
  }
  const count = Buffer.alloc(4);
  count.writeUInt32BE(entries.length);
  const parts: Buffer[] = [MANIFEST_MAGIC, Buffer.from([PROTOCOL_VERSION]), Buffer.from(checkKey), count];
  for (const e of entries) {
    const path = Buffer.from(e.path, 'utf8');
    const entry = Buffer.alloc(1 + 2 + path.length + 8 + 2);
    entry.writeUInt8(KINDS.indexOf(e.kind), 0);
    entry.writeUInt16BE(path.length, 1);
    path.copy(entry, 3);
    entry.writeBigUInt64BE(BigInt(e.size), 3 + path.length);
    entry.writeUInt16BE(e.mode, 3 + path.length + 8);
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
    case FrameType.FILE_START:
      return length === 12 ? 'ok' : 'bad-length';
    case FrameType.DATA:
      return length > MAX_DATA_BYTES ? 'frame-too-large' : length === 0 ? 'bad-length' : 'ok';
    case FrameType.FILE_END:
      return length === 12 + CHECK_BYTES ? 'ok' : 'bad-length';
    case FrameType.ACCEPT:
      return length > 4 + MAX_ENTRIES * OFFER_BYTES ? 'frame-too-large' : length < 4 || (length - 4) % OFFER_BYTES !== 0 ? 'bad-length' : 'ok';
    case FrameType.FILE_OK:
      return length === 4 ? 'ok' : 'bad-length';
    case FrameType.FAIL:
      return length > 5 + MAX_DETAIL_BYTES ? 'frame-too-large' : length < 5 ? 'bad-length' : 'ok';
    case FrameType.DONE:
      return length === 0 ? 'ok' : 'bad-length';
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

function readSize(b: Buffer, at: number): number | undefined {
  const v = b.readBigUInt64BE(at);
  return v > BigInt(MAX_FILE_SIZE) ? undefined : Number(v);
}

/**
 * Decodes the frame at the start of `bytes`; `used` says how many bytes it took. For DATA only the
 * header is taken (`used` = 5): the caller reads the `length` data bytes that follow. Never throws.
 */
export function decodeFrame(bytes: Uint8Array): DecodeResult {
  if (bytes.length < FRAME_HEADER_BYTES) return { ok: false, reason: 'need-more' };
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = b.readUInt8(0);
  const length = b.readUInt32BE(1);
  const allowed = lengthAllowed(type, length);
  if (allowed !== 'ok') return { ok: false, reason: allowed };
  if (type === FrameType.DATA) return { ok: true, frame: { type: 'data', length }, used: FRAME_HEADER_BYTES };
  if (b.length < FRAME_HEADER_BYTES + length) return { ok: false, reason: 'need-more' };
  const p = b.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length);
  const used = FRAME_HEADER_BYTES + length;
  switch (type) {
    case FrameType.MANIFEST: {
      const m = decodeManifest(p);
      return m.ok ? { ok: true, frame: { type: 'manifest', entries: m.entries, checkKey: m.checkKey }, used } : m;
    }
    case FrameType.FILE_START: {
      const index = p.readUInt32BE(0);
      const offset = readSize(p, 4);
      if (index >= MAX_ENTRIES) return { ok: false, reason: 'bad-index' };
      if (offset === undefined) return { ok: false, reason: 'size-too-large' };
      return { ok: true, frame: { type: 'file-start', index, offset }, used };
    }
    case FrameType.FILE_END: {
      const index = p.readUInt32BE(0);
      const size = readSize(p, 4);
      if (index >= MAX_ENTRIES) return { ok: false, reason: 'bad-index' };
      if (size === undefined) return { ok: false, reason: 'size-too-large' };
      return { ok: true, frame: { type: 'file-end', index, size, check: Uint8Array.from(p.subarray(12)) }, used };
    }
    case FrameType.ACCEPT: {
      const count = p.readUInt32BE(0);
      if (4 + count * OFFER_BYTES !== p.length) return { ok: false, reason: 'bad-length' };
      const offers: ResumeOffer[] = [];
      const indices = new Set<number>();
      for (let i = 0, at = 4; i < count; i++, at += OFFER_BYTES) {
        const index = p.readUInt32BE(at);
        const offset = readSize(p, at + 4);
        if (index >= MAX_ENTRIES) return { ok: false, reason: 'bad-index' };
        if (offset === undefined || offset === 0 || indices.has(index)) return { ok: false, reason: 'bad-offer' };
        indices.add(index);
        offers.push({ index, offset, sha256: Uint8Array.from(p.subarray(at + 12, at + OFFER_BYTES)) });
      }
      return { ok: true, frame: { type: 'accept', offers }, used };
    }
    case FrameType.FILE_OK: {
      const index = p.readUInt32BE(0);
      if (index >= MAX_ENTRIES) return { ok: false, reason: 'bad-index' };
      return { ok: true, frame: { type: 'file-ok', index }, used };
    }
    case FrameType.DONE:
      return { ok: true, frame: { type: 'done' }, used };
    default: {
      // FAIL (lengthAllowed admits no other type).
      const reason = FAIL_REASONS[p.readUInt8(0)];
      if (reason === undefined) return { ok: false, reason: 'bad-fail-reason' };
      const raw = p.readUInt32BE(1);
      if (raw !== NO_INDEX && raw >= MAX_ENTRIES) return { ok: false, reason: 'bad-index' };
      const detail = decodeUtf8(p.subarray(5));
      if (detail === undefined) return { ok: false, reason: 'bad-utf8' };
      return { ok: true, frame: { type: 'fail', reason, index: raw === NO_INDEX ? undefined : raw, detail }, used };
    }
  }
}

type ManifestResult = { ok: true; entries: ManifestEntry[]; checkKey: Uint8Array } | Exclude<DecodeResult, { ok: true }>;

function decodeManifest(p: Buffer): ManifestResult {
  // The version first: an older peer's manifest is shorter, and must read as another version.
  if (p.length < 5) return { ok: false, reason: 'truncated-entry' };
  if (!p.subarray(0, 4).equals(MANIFEST_MAGIC)) return { ok: false, reason: 'bad-magic' };
  if (p.readUInt8(4) !== PROTOCOL_VERSION) return { ok: false, reason: 'unsupported-version' };
  if (p.length < MANIFEST_HEAD_BYTES) return { ok: false, reason: 'truncated-entry' };
  const checkKey = Uint8Array.from(p.subarray(5, 5 + CHECK_KEY_BYTES));
  const count = p.readUInt32BE(5 + CHECK_KEY_BYTES);
  if (count > MAX_ENTRIES) return { ok: false, reason: 'too-many-entries' };
  const entries: ManifestEntry[] = [];
  let at = MANIFEST_HEAD_BYTES;
  for (let index = 0; index < count; index++) {
    if (at + 3 > p.length) return { ok: false, reason: 'truncated-entry' };
    const kind = KINDS[p.readUInt8(at)];
    if (kind === undefined) return { ok: false, reason: 'bad-kind' };
    const pathLength = p.readUInt16BE(at + 1);
    if (at + 3 + pathLength + 10 > p.length) return { ok: false, reason: 'truncated-entry' };
    const path = decodeUtf8(p.subarray(at + 3, at + 3 + pathLength));
    if (path === undefined) return { ok: false, reason: 'bad-utf8' };
    const size = readSize(p, at + 3 + pathLength);
    if (size === undefined) return { ok: false, reason: 'size-too-large' };
    const mode = p.readUInt16BE(at + 3 + pathLength + 8);
    entries.push({ kind, path, size, mode });
    at += 3 + pathLength + 10;
  }
  if (at !== p.length) return { ok: false, reason: 'trailing-bytes' };
  const wrong = checkEntries(entries);
  if (wrong !== undefined) return { ok: false, ...wrong };
  return { ok: true, entries, checkKey };
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
    case 'too-many-entries':
      return `more than ${MAX_ENTRIES} entries`;
    case 'bad-index':
      return 'an entry index is out of range';
    case 'truncated-entry':
      return 'a manifest entry is cut short';
    case 'trailing-bytes':
      return 'the manifest has bytes after its last entry';
    case 'bad-kind':
      return 'a manifest entry has an unknown kind';
    case 'size-too-large':
      return 'a size is larger than 2^53 - 1 bytes, or a directory or stream has a size';
    case 'bad-mode':
      return 'a mode has bits other than the permission bits';
    case 'duplicate-path':
      return 'two entries in the manifest have the same path';
    case 'parent-missing':
      return 'an entry comes before the directory that holds it';
    case 'bad-utf8':
      return 'a text field is not valid UTF-8';
    case 'bad-fail-reason':
      return 'a refusal carries an unknown reason';
    case 'bad-offer':
      return 'a resume offer is empty or names an entry twice';
    case 'bad-name':
      return 'a path is unsafe';
  }
}
