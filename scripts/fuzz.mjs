#!/usr/bin/env node
// `npm run fuzz`: the property and fuzz tests (every compiled test file that uses fast-check) with
// BURROW_FUZZ_SCALE times their CI run counts (default 50; `BURROW_FUZZ_SCALE=200 npm run fuzz` for longer).
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

function find(dir) {
  let out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(find(p));
    else if (name.endsWith('.test.js') && readFileSync(p, 'utf8').includes('fast-check')) out.push(p);
  }
  return out;
}

const files = find('dist/test').filter((f) => !f.includes('/lab/'));
const env = { ...process.env, BURROW_FUZZ_SCALE: process.env.BURROW_FUZZ_SCALE ?? '50' };
delete env.NODE_EXTRA_CA_CERTS;
console.error(`fuzzing with BURROW_FUZZ_SCALE=${env.BURROW_FUZZ_SCALE}: ${files.join(' ')}`);
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-timeout=0', ...files], { stdio: 'inherit', env });
process.exitCode = r.status ?? 1;
