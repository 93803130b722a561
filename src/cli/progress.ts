/**
 * How `burrow send` and `burrow receive` show progress on stderr: on a terminal, one status line
 * rewritten in place that always fits the terminal's width (80 columns keep the rate and the ETA) and
 * names the file in progress; otherwise a plain line every ~2 s that logs read well. The transfer
 * drivers only emit TransferEvents; everything here is presentation. The formatting is pure and takes
 * the time and the width as arguments.
 */
import type { TransferEvent } from '../transfer/driver.js';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 512 B, 1.5 KiB, 123.4 MiB, 1.0 GiB (binary units, one decimal above bytes). */
export function formatBytes(n: number): string {
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${Math.round(value)} B`;
  // 1023.96 MiB would print as "1024.0 MiB"; show it as the next unit instead.
  if (value.toFixed(1) === '1024.0' && unit < UNITS.length - 1) return `1.0 ${UNITS[unit + 1] ?? ''}`;
  return `${value.toFixed(1)} ${UNITS[unit] ?? ''}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** 25 ms, 4.2 s, 8 s, 12 s, 3 min 05 s, 2 h 07 min. */
export function formatDuration(seconds: number): string {
  if (seconds <= 0) return '0 s';
  if (seconds < 1) return `${Math.max(1, Math.round(seconds * 1000))} ms`;
  if (seconds < 10) return Number.isInteger(seconds) ? `${seconds} s` : `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

function eta(bytes: number, total: number, rate: number): string {
  return rate > 0 ? formatDuration(Math.ceil((total - bytes) / rate)) : '?';
}

/** "sent 123.4 MiB of 1.0 GiB (45.6 MiB/s, ETA 20 s)" — the log line (no terminal). */
export function logLine(verb: string, bytes: number, total: number | undefined, rate: number): string {
  if (total === undefined) return `${verb} ${formatBytes(bytes)} (${formatRate(rate)})`;
  return `${verb} ${formatBytes(bytes)} of ${formatBytes(total)} (${formatRate(rate)}, ETA ${rate > 0 ? eta(bytes, total, rate) : 'unknown'})`;
}

const graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

function splitGraphemes(text: string): string[] {
  return Array.from(graphemes.segment(text), (g) => g.segment);
}

/** Terminal columns a string takes: wide East Asian characters and emoji count 2, combining marks 0. */
export function displayWidth(text: string): number {
  let width = 0;
  // A grapheme (a letter with its accents, an emoji sequence) is as wide as its first code point.
  for (const g of splitGraphemes(text)) width += charWidth(g.codePointAt(0) ?? 0);
  return width;
}

function charWidth(cp: number): number {
  if ((cp >= 0x300 && cp <= 0x36f) || (cp >= 0x200b && cp <= 0x200f) || cp === 0xfe0f) return 0;
  const wide =
    (cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf) || (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1faff) || (cp >= 0x20000 && cp <= 0x3fffd);
  return wide ? 2 : 1;
}

/** `text` cut to at most `width` columns by replacing its middle with "…" (file names keep both ends). */
export function shorten(text: string, width: number): string {
  if (displayWidth(text) <= width) return text;
  if (width <= 1) return width === 1 ? '…' : '';
  const chars = splitGraphemes(text);
  let head = '';
  let tail = '';
  let used = 1;
  for (let i = 0, j = chars.length - 1; i <= j;) {
    // Alternate, keeping a little more of the end (the extension and the file's own name).
    const takeTail = displayWidth(tail) <= displayWidth(head);
    const ch = takeTail ? (chars[j] ?? '') : (chars[i] ?? '');
    const w = displayWidth(ch);
    if (used + w > width) break;
    used += w;
    if (takeTail) {
      tail = ch + tail;
      j--;
    } else {
      head += ch;
      i++;
    }
  }
  return `${head}…${tail}`;
}

export interface StatusLine {
  /** "sent" or "received". */
  readonly verb: string;
  readonly bytes: number;
  /** Undefined for a stream of unknown size (no percentage, no ETA). */
  readonly total: number | undefined;
  readonly rate: number;
  /** The file in progress (its path in the transfer). */
  readonly name?: string | undefined;
}

/**
 * The terminal status line, at most `columns` wide: "sent 45% 120.3 MiB/1.0 GiB 110.2 MiB/s ETA 12 s
 * photos/a.jpg". When it does not fit, the file name is shortened (or dropped), then the verb, then the
 * sizes; the rate and the ETA stay down to 30 columns.
 */
export function statusLine(s: StatusLine, columns: number): string {
  const width = Math.max(10, columns - 1); // the last column would wrap on some terminals
  const known = (s.total ?? 0) > 0;
  const total = s.total ?? 0;
  const pct = known ? `${Math.min(100, Math.floor((s.bytes * 100) / total))}%` : undefined;
  const sizes = known ? `${formatBytes(s.bytes)}/${formatBytes(total)}` : formatBytes(s.bytes);
  const tail = [formatRate(s.rate), known ? `ETA ${eta(s.bytes, total, s.rate)}` : undefined].filter((x) => x !== undefined).join(' ');
  const variants = [
    [s.verb, pct, sizes, tail],
    [pct, sizes, tail],
    [pct, tail],
    [tail],
  ].map((parts) => parts.filter((p): p is string => p !== undefined).join(' '));
  for (const core of variants) {
    const room = width - displayWidth(core);
    if (room < 0) continue;
    // A name needs at least 8 columns to say anything.
    if (s.name !== undefined && room >= 9) return `${core} ${shorten(s.name, room - 1)}`;
    return core;
  }
  return shorten(variants.at(-1) ?? '', width);
}

/** The recent rate: bytes over the last `windowMs` (the whole transfer until that much time has passed). */
export class RateMeter {
  private readonly samples: { at: number; bytes: number }[] = [];

  constructor(private readonly windowMs = 5000) {}

  /** Records the running total `bytes` at time `at` (ms) and returns bytes per second. */
  sample(at: number, bytes: number): number {
    const last = this.samples[this.samples.length - 1];
    // One sample per 100 ms is plenty and keeps the window small for any chunk rate (the oldest one
    // is the baseline and never moves).
    if (last === undefined || this.samples.length === 1 || at - last.at >= 100) this.samples.push({ at, bytes });
    else last.bytes = bytes;
    while (this.samples.length > 2 && at - (this.samples[1]?.at ?? at) >= this.windowMs) this.samples.shift();
    const first = this.samples[0];
    if (first === undefined || at <= first.at) return 0;
    return ((bytes - first.bytes) * 1000) / (at - first.at);
  }
}

export interface ProgressOptions {
  readonly stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** "sent" or "received". */
  readonly verb: 'sent' | 'received';
  /** Default: the stream's isTTY. */
  readonly tty?: boolean;
  /** Milliseconds; default performance.now. */
  readonly now?: () => number;
  /** Between plain lines; default 2000 ms. */
  readonly intervalMs?: number;
  /** Between terminal redraws; default 100 ms. */
  readonly redrawMs?: number;
}

/** Turns TransferEvents into a status line or periodic log lines. Call `stop()` when the transfer ends, however it ends. */
export class ProgressReporter {
  private readonly now: () => number;
  private readonly tty: boolean;
  private readonly meter = new RateMeter();
  private lastLineAt = 0;
  private lastDrawAt = -Infinity;
  private total: number | undefined;
  private bytes = 0;
  private rate = 0;
  private name: string | undefined;
  /** A status line is on screen (to be cleared before any other output). */
  private drawn = false;
  private started = false;

  constructor(private readonly options: ProgressOptions) {
    this.now = options.now ?? (() => performance.now());
    this.tty = options.tty ?? options.stream.isTTY === true;
  }

  /** Pass as the drivers' onEvent. */
  readonly handle = (event: TransferEvent): void => {
    switch (event.type) {
      case 'start':
        this.start(event.totalBytes, event.entries.filter((e) => e.kind !== 'directory').length, event.entries.length, event.resumedBytes);
        break;
      case 'file-start':
        this.name = event.path;
        if (event.offset > 0) this.line(`${event.path}: resuming after the ${formatBytes(event.offset)} already there`);
        this.progress(this.bytes, true);
        break;
      case 'progress':
        this.progress(event.bytes, false);
        break;
      case 'file-done':
        // On a terminal the status line shows it; in logs a line per file says which ones made it.
        if (!this.tty) this.line(`${event.path} (${formatBytes(event.size)}): verified end to end and in place`);
        break;
      case 'leftover-removed':
        this.line(`removed ${event.path} (${formatBytes(event.bytes)}), a partial file of an earlier interrupted transfer that this one did not resume`);
        break;
      default:
        event satisfies never;
    }
  };

  /** Clears the status line. */
  stop(): void {
    this.clear();
  }

  private start(total: number | undefined, files: number, entries: number, resumed: number): void {
    const at = this.now();
    this.started = true;
    this.total = total;
    this.bytes = resumed;
    this.lastLineAt = at;
    this.meter.sample(at, resumed);
    const what = `${files} file${files === 1 ? '' : 's'}${entries > files ? ` in ${entries - files} director${entries - files === 1 ? 'y' : 'ies'}` : ''}`;
    const size = total === undefined ? '' : `, ${formatBytes(total)}`;
    const again = resumed > 0 ? ` (${formatBytes(resumed)} already there from an interrupted run)` : '';
    if (!this.tty) this.line(`${this.options.verb === 'sent' ? 'sending' : 'receiving'} ${what}${size}${again}`);
    else if (resumed > 0) this.line(`resuming: ${formatBytes(resumed)} already there from an interrupted run`);
  }

  private progress(bytes: number, force: boolean): void {
    if (!this.started) return;
    const at = this.now();
    this.bytes = bytes;
    this.rate = this.meter.sample(at, bytes);
    if (this.tty) {
      if (!force && at - this.lastDrawAt < (this.options.redrawMs ?? 100)) return;
      this.lastDrawAt = at;
      this.draw();
    } else if (at - this.lastLineAt >= (this.options.intervalMs ?? 2000)) {
      this.lastLineAt = at;
      this.line(`${logLine(this.options.verb, bytes, this.total, this.rate)}${this.name !== undefined ? `, now ${this.name}` : ''}`);
    }
  }

  private draw(): void {
    const columns = this.options.stream.columns ?? 80;
    const text = statusLine({ verb: this.options.verb, bytes: this.bytes, total: this.total, rate: this.rate, name: this.name }, columns);
    this.options.stream.write(`\r${text}\x1b[K`);
    this.drawn = true;
  }

  private clear(): void {
    if (!this.drawn) return;
    this.options.stream.write('\r\x1b[K');
    this.drawn = false;
  }

  /** A whole line; on a terminal the status line is cleared first and redrawn after. */
  private line(text: string): void {
    const redraw = this.drawn;
    this.clear();
    this.options.stream.write(`burrow: ${text}\n`);
    if (redraw) this.draw();
  }
}
