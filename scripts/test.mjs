#!/usr/bin/env node
// Runs the compiled tests with node:test, in layers: codecs, cores, servers, loopback and CLI, interop,
// then the real-NAT lab. The lab needs root; outside CI a non-root run skips it with a message, in CI
// (CI=true) the lab tests fail instead of skipping (see test/lab).
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const LAYERS = ['codec', 'core', 'server', 'node', 'transfer', 'cli', 'interop', 'lab'];
const root = 'dist/test';

function find(dir) {
  let out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(find(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const files = find(root).sort((a, b) => {
  const la = LAYERS.indexOf(a.split('/')[2] ?? '');
  const lb = LAYERS.indexOf(b.split('/')[2] ?? '');
  return (la < 0 ? 99 : la) - (lb < 0 ? 99 : lb) || a.localeCompare(b);
});
const only = process.argv.slice(2);
const selected = only.length > 0 ? files.filter((f) => only.some((o) => f.includes(o))) : files;

if (process.getuid?.() !== 0 && process.env.CI !== 'true') {
  console.error('note: not running as root, so the real-NAT lab tests (test/lab) will be skipped; run as root (or in CI) to include them.');
}

const env = { ...process.env };
delete env.NODE_EXTRA_CA_CERTS; // a CA bundle burrow never uses; it only slows every Node start-up
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=600000', ...selected], { stdio: 'inherit', env });
process.exitCode = r.status ?? 1;
