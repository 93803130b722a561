/** Reads a Prometheus endpoint over real HTTP, as a scraper does. */
import http from 'node:http';

export interface Scrape {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
}

/** One request on a connection of its own (no keep-alive pool left behind). */
export function httpGet(url: string, method = 'GET'): Promise<Scrape> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'] ?? '', body });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

/** Samples of the text exposition format, keyed exactly as written: `name` or `name{label="value"}`. */
export function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

/** Scrapes `url` and returns its samples; fails unless the answer is 200 in the Prometheus text format. */
export async function scrape(url: string): Promise<Map<string, number>> {
  const r = await httpGet(url);
  if (r.status !== 200) throw new Error(`GET ${url}: ${r.status} ${r.body}`);
  if (!r.contentType.startsWith('text/plain; version=0.0.4')) throw new Error(`GET ${url}: content-type ${r.contentType}`);
  return parseMetrics(r.body);
}
