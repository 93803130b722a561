/**
 * How `burrow send` and `burrow receive` show progress on stderr: a cli-progress bar (bytes, rate,
 * ETA) when stderr is a terminal, otherwise a plain line every ~2 s that logs read well. Only the CLI
 * creates a reporter; the transfer drivers just emit TransferEvents. The formatting is pure and takes
 * the time as an argument.
 */
import { Presets, SingleBar } from 'cli-progress';
import type { TransferEvent } from './driver.js';

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

/** "sent 123.4 MiB of 1.0 GiB (45.6 MiB/s, ETA 12 s)" */
export function progressLine(verb: string, bytes: number, total: number, bytesPerSecond: number): string {
  const eta = bytesPerSecond > 0 ? `ETA ${formatDuration(Math.ceil((total - bytes) / bytesPerSecond))}` : 'ETA unknown';
  return `${verb} ${formatBytes(bytes)} of ${formatBytes(total)} (${formatRate(bytesPerSecond)}, ${eta})`;
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
  readonly stream: NodeJS.WritableStream;
  /** "sent" or "received". */
  readonly verb: string;
  /** Default: the stream's isTTY. */
  readonly tty?: boolean;
  /** Milliseconds; default performance.now. */
  readonly now?: () => number;
  /** Between plain lines; default 2000 ms. */
  readonly intervalMs?: number;
}

/** Turns TransferEvents into a bar or periodic lines. Call `stop()` when the transfer ends, however it ends. */
export class ProgressReporter {
  private readonly now: () => number;
  private readonly tty: boolean;
  private readonly intervalMs: number;
  private readonly meter = new RateMeter();
  private bar: SingleBar | undefined;
  private lastLineAt = 0;
  private total = 0;

  constructor(private readonly options: ProgressOptions) {
    this.now = options.now ?? (() => performance.now());
    this.tty = options.tty ?? (options.stream as { isTTY?: boolean }).isTTY === true;
    this.intervalMs = options.intervalMs ?? 2000;
  }

  /** Pass as the drivers' onEvent. */
  readonly handle = (event: TransferEvent): void => {
    switch (event.type) {
      case 'start':
        this.start(event.totalBytes, event.files.length);
        break;
      case 'progress':
        this.progress(event.bytes);
        break;
      case 'file-done':
        // On a terminal the bar shows it; in logs a line per file says which ones made it.
        if (!this.tty) this.line(`${event.name} (${formatBytes(event.size)}): verified (SHA-256) and in place`);
        break;
      default:
        event satisfies never;
    }
  };

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }

  private start(total: number, files: number): void {
    const at = this.now();
    this.total = total;
    this.lastLineAt = at;
    this.meter.sample(at, 0);
    if (!this.tty) {
      this.line(`${this.options.verb === 'sent' ? 'sending' : 'receiving'} ${files} file${files === 1 ? '' : 's'}, ${formatBytes(total)}`);
      return;
    }
    if (total === 0) return;
    this.bar = new SingleBar(
      {
        stream: this.options.stream,
        format: `${this.options.verb} [{bar}] {percentage}% | {done} of {size} | {rate} | ETA {remaining}`,
        hideCursor: true,
        barsize: 30,
        fps: 10,
      },
      Presets.shades_classic,
    );
    this.bar.start(total, 0, { done: formatBytes(0), size: formatBytes(total), rate: formatRate(0), remaining: '…' });
  }

  private progress(bytes: number): void {
    const at = this.now();
    const rate = this.meter.sample(at, bytes);
    if (this.bar !== undefined) {
      const remaining = rate > 0 ? formatDuration(Math.ceil((this.total - bytes) / rate)) : '…';
      this.bar.update(bytes, { done: formatBytes(bytes), size: formatBytes(this.total), rate: formatRate(rate), remaining });
    } else if (!this.tty && at - this.lastLineAt >= this.intervalMs) {
      this.lastLineAt = at;
      this.line(progressLine(this.options.verb, bytes, this.total, rate));
    }
  }

  private line(text: string): void {
    this.options.stream.write(`burrow: ${text}\n`);
  }
}
