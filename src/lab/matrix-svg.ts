/**
 * The NAT matrix as a picture: one grid per relay mode, rows the kind of the peer that starts first, columns the kind
 * of the peer that starts second. Each cell is coloured by the path most of its runs took and says the path, how many
 * runs took it, the median time to connect and, for birthday paths, the probes used. Pure: text in, text out.
 */

import type { NatKind } from './nat-rules.js';
import type { MatrixCell, MatrixPath, MatrixRelay, MatrixResult } from './matrix.js';

const CELL_W = 150;
const CELL_H = 62;
const LABEL_W = 150;
const HEAD_H = 40;
const MARGIN = 16;
const GRID_GAP = 28;
const TITLE_H = 74;
const LEGEND_H = 86;
const FONT = 'system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif';

export const PATH_COLOURS: Readonly<Record<MatrixPath, { readonly fill: string; readonly text: string }>> = {
  lan: { fill: '#8ecae6', text: '#102a43' },
  direct: { fill: '#52b788', text: '#0b2e1c' },
  birthday: { fill: '#2a9d8f', text: '#ffffff' },
  relay: { fill: '#f4a261', text: '#3d1f00' },
  failed: { fill: '#d62828', text: '#ffffff' },
};

const RELAY_TITLES: Readonly<Record<MatrixRelay, string>> = {
  builtin: 'relay: the built-in relay of burrow serve',
  coturn: 'relay: coturn (burrow serve --turn, TURN REST credentials)',
  none: 'relay: none (burrow punch --relay never)',
  'no-relay': 'relay: none offered (burrow serve --no-relay)',
  'coturn-stopped': 'relay: a stopped coturn (burrow serve --turn)',
};

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] ?? c);
}

function text(x: number, y: number, content: string, attrs = ''): string {
  return `<text x="${x}" y="${y}"${attrs === '' ? '' : ` ${attrs}`}>${escapeXml(content)}</text>`;
}

export function formatMs(ms: number | null): string {
  if (ms === null) return '—';
  return ms < 10_000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** The three lines of a cell. Pure. */
export function cellLines(cell: MatrixCell): [string, string, string] {
  const share = cell.agreeing === cell.runs ? `${cell.runs}/${cell.runs}` : `${cell.agreeing}/${cell.runs}`;
  const first = `${cell.path} ${share}`;
  const upgraded = cell.upgraded > 0 ? ` · ${cell.upgraded} relayed first` : '';
  const second = cell.connected > 0 ? `median ${formatMs(cell.medianConnectMs)}${upgraded}` : 'no connection';
  const birthday = [
    ...(cell.medianProbes !== null ? [`${Math.round(cell.medianProbes)} probes`] : []),
    ...(cell.medianSockets !== null ? [`${Math.round(cell.medianSockets)} sockets`] : []),
  ];
  let third = birthday.length > 0 ? birthday.join(', ') : 'no birthday probes';
  if (cell.relayedOnDirectAfterResult !== null && cell.relayedOnDirectAfterResult > 0) third = `relay carried ${cell.relayedOnDirectAfterResult} after connect`;
  return [first, second, third];
}

function grid(result: MatrixResult, relay: MatrixRelay, kinds: readonly NatKind[], top: number): string[] {
  const out: string[] = [];
  out.push(text(MARGIN, top + 16, RELAY_TITLES[relay], 'font-size="15" font-weight="600"'));
  const gridTop = top + 24;
  out.push(text(MARGIN, gridTop + HEAD_H - 10, 'first ↓   second →', 'font-size="11" fill="#555"'));
  for (const [j, kind] of kinds.entries()) {
    out.push(text(MARGIN + LABEL_W + j * CELL_W + CELL_W / 2, gridTop + HEAD_H - 10, kind, 'font-size="12" font-weight="600" text-anchor="middle"'));
  }
  for (const [i, first] of kinds.entries()) {
    const y = gridTop + HEAD_H + i * CELL_H;
    out.push(text(MARGIN + LABEL_W - 10, y + CELL_H / 2 + 4, first, 'font-size="12" font-weight="600" text-anchor="end"'));
    for (const [j, second] of kinds.entries()) {
      const x = MARGIN + LABEL_W + j * CELL_W;
      const cell = result.cells.find((c) => c.relay === relay && c.first === first && c.second === second);
      if (cell === undefined) {
        out.push(`<rect x="${x}" y="${y}" width="${CELL_W}" height="${CELL_H}" fill="#eeeeee" stroke="#ffffff" stroke-width="2"/>`);
        out.push(text(x + CELL_W / 2, y + CELL_H / 2 + 4, 'not run', 'font-size="11" fill="#777" text-anchor="middle"'));
        continue;
      }
      const colour = PATH_COLOURS[cell.path];
      const [l1, l2, l3] = cellLines(cell);
      const title = `${first} first, ${second} second, ${relay}: ${l1}, ${l2}, ${l3}`;
      out.push(`<g><title>${escapeXml(title)}</title>`);
      out.push(`<rect x="${x}" y="${y}" width="${CELL_W}" height="${CELL_H}" fill="${colour.fill}" stroke="#ffffff" stroke-width="2"/>`);
      const mixed = cell.agreeing < cell.runs ? ' font-style="italic"' : '';
      out.push(text(x + CELL_W / 2, y + 20, l1, `font-size="13" font-weight="700" fill="${colour.text}" text-anchor="middle"${mixed}`));
      out.push(text(x + CELL_W / 2, y + 37, l2, `font-size="11" fill="${colour.text}" text-anchor="middle"`));
      out.push(text(x + CELL_W / 2, y + 52, l3, `font-size="10" fill="${colour.text}" text-anchor="middle"`));
      out.push('</g>');
    }
  }
  return out;
}

function gridHeight(kinds: readonly NatKind[]): number {
  return 24 + HEAD_H + kinds.length * CELL_H;
}

/** The whole picture. `note` is a line under the title (e.g. where and when it was made). Pure. */
export function renderMatrixSvg(result: MatrixResult, note = ''): string {
  const kinds = result.kinds;
  const width = Math.max(MARGIN * 2 + LABEL_W + kinds.length * CELL_W, 800);
  const grids = result.relays.length;
  const height = TITLE_H + grids * gridHeight(kinds) + (grids - 1) * GRID_GAP + LEGEND_H;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}" role="img" aria-label="Burrow NAT matrix">`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(text(MARGIN, 26, 'Burrow: which path every pair of NAT kinds gets', 'font-size="18" font-weight="700"'));
  const sub = `rows: the peer that starts first · columns: the peer that starts second · ${result.runsPerCell} run${result.runsPerCell === 1 ? '' : 's'} per cell (each side behind each router)`;
  out.push(text(MARGIN, 44, sub, 'font-size="11" fill="#444"'));
  if (note !== '') out.push(text(MARGIN, 58, note, 'font-size="11" fill="#444"'));
  let top = TITLE_H;
  for (const relay of result.relays) {
    out.push(...grid(result, relay, kinds, top));
    top += gridHeight(kinds) + GRID_GAP;
  }
  top = top - GRID_GAP + 18;
  const legend: [MatrixPath, string][] = [
    ['lan', 'lan: over the shared LAN'],
    ['direct', 'direct: a punched path'],
    ['birthday', 'birthday: punched by birthday probing'],
    ['relay', 'relay: through the relay'],
    ['failed', 'failed: no connection'],
  ];
  for (const [k, [path, label]] of legend.entries()) {
    const x = MARGIN + (k % 3) * 250;
    const y = top + Math.floor(k / 3) * 20;
    out.push(`<rect x="${x}" y="${y}" width="14" height="14" fill="${PATH_COLOURS[path].fill}"/>`);
    out.push(text(x + 20, y + 11, label, 'font-size="11"'));
  }
  const explain = 'Each cell: the path most runs took (runs that took it / runs), the median time from the second peer’s start until both printed';
  out.push(text(MARGIN, top + 52, explain, 'font-size="10" fill="#555"'));
  out.push(text(MARGIN, top + 65, 'their result (burrow punch -- COMMAND; COMMAND then exchanged datagrams both ways), and the birthday probes used.', 'font-size="10" fill="#555"'));
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
