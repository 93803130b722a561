/**
 * `burrow serve`'s logging around pino: a plain text line format (instead of a development prettifier),
 * and the aggregation of failed authentications per source, so that a flood of forged or wrongly keyed
 * datagrams becomes at most one line per source per interval (and one line for the sources beyond a bound).
 */

const LEVELS: Readonly<Record<number, string>> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

function fieldValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v);
}

/** One pino JSON record as `TIME LEVEL message key=value ...`. */
export function textLine(record: Readonly<Record<string, unknown>>): string {
  const { level, time, msg, ...rest } = record;
  const fields = Object.entries(rest)
    .filter(([k, v]) => k !== 'pid' && k !== 'hostname' && v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${fieldValue(v)}`);
  const when = typeof time === 'number' ? new Date(time).toISOString() : '';
  return `${when} ${(typeof level === 'number' ? LEVELS[level] : undefined) ?? String(level)} ${typeof msg === 'string' ? msg : ''}${fields.length > 0 ? ` ${fields.join(' ')}` : ''}\n`;
}

/** A pino destination that writes text lines to `stream`. */
export function textDestination(stream: NodeJS.WritableStream): { write(line: string): void } {
  return {
    write(line: string): void {
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line) as Record<string, unknown>;
      } catch {
        stream.write(line);
        return;
      }
      stream.write(textLine(record));
    },
  };
}

/** The server's reasons for rejecting a datagram that name a failed authentication (src/server/core.ts). */
export function isAuthFailure(reason: string): boolean {
  return /bad MAC|unknown network|secret differs|WG-PROOF/i.test(reason);
}

export interface AuthFailureReport {
  readonly from: string;
  readonly count: number;
  readonly reasons: readonly string[];
}

/**
 * Counts failed authentications per source address between flushes. At most `maxSources` sources are kept
 * per interval; failures from further sources are only counted (`others`), so memory and output are bounded
 * whatever arrives.
 */
export class AuthFailureLog {
  private bySource = new Map<string, { count: number; reasons: Set<string> }>();
  private othersCount = 0;
  private readonly othersSources = new Set<string>();

  constructor(private readonly maxSources = 100) {}

  add(from: string, reason: string): void {
    const seen = this.bySource.get(from);
    if (seen) {
      seen.count++;
      if (seen.reasons.size < 4) seen.reasons.add(reason);
      return;
    }
    if (this.bySource.size < this.maxSources) {
      this.bySource.set(from, { count: 1, reasons: new Set([reason]) });
      return;
    }
    this.othersCount++;
    // Bounded too: beyond 10,000 distinct extra sources the count of sources is a lower bound.
    if (this.othersSources.size < 10_000) this.othersSources.add(from);
  }

  /** What was counted since the last flush; resets the counts. */
  flush(): { sources: AuthFailureReport[]; others: { sources: number; count: number } | undefined } {
    const sources = [...this.bySource].map(([from, s]) => ({ from, count: s.count, reasons: [...s.reasons] }));
    const others = this.othersCount > 0 ? { sources: this.othersSources.size, count: this.othersCount } : undefined;
    this.bySource = new Map();
    this.othersCount = 0;
    this.othersSources.clear();
    return { sources, others };
  }
}
