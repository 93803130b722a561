#!/usr/bin/env node
// Rewrites the README's generated blocks (command reference, secrets, exit codes, deploy/ quotes) from the
// built CLI's declarations (src/cli/docs.ts). Run through `npm run docs`, which builds first.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderReadme } from '../dist/src/cli/docs.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const path = `${root}/README.md`;
const before = readFileSync(path, 'utf8');
const after = renderReadme(before, root);
if (after !== before) writeFileSync(path, after);
console.error(after === before ? 'README.md is up to date' : 'README.md: generated blocks rewritten');
