/**
 * Run counts for property and fuzz tests. `npm test` runs each at its CI size; `npm run fuzz` sets BURROW_FUZZ_SCALE
 * (default there: 50) and every property test that asks here runs that many times longer.
 */
const scale = Number(process.env.BURROW_FUZZ_SCALE ?? '1');

export function fuzzRuns(ciRuns: number): number {
  return Number.isFinite(scale) && scale > 0 ? Math.max(1, Math.round(ciRuns * scale)) : ciRuns;
}
