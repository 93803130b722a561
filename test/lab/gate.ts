/**
 * Whether the lab tests run here. Not root (or no nftables) and not in CI: skip, saying why. In CI (`CI=true`): never
 * skip, so that an unavailable lab fails the run instead of passing it silently.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { listNamespaces } from '../../src/lab/netns.js';
import { labAvailable } from '../../src/lab/topology.js';

const availability = labAvailable();

/** For `describe(name, { skip: labSkip }, …)`: false to run, or the reason to skip. */
export const labSkip: string | false =
  availability.ok || process.env.CI === 'true' ? false : `skipped: ${availability.reason} (run as root, or set CI=true to make this a failure)`;

/** Fails with the reason the lab is unavailable; call first in a `before` hook so that CI fails loudly. */
export function assertLabAvailable(): void {
  assert.ok(availability.ok, availability.ok ? '' : `the NAT lab is unavailable in CI: ${availability.reason}`);
}

/** Fails if any namespace or root-namespace interface of the run survived. */
export async function assertNothingLeft(runId: string): Promise<void> {
  const namespaces = (await listNamespaces()).filter((ns) => ns.includes(runId));
  assert.deepEqual(namespaces, [], `lab ${runId} left namespaces behind`);
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes(`bw${runId}`));
  assert.deepEqual(links, [], `lab ${runId} left interfaces in the root namespace`);
}
