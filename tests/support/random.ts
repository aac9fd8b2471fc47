/**
 * The one seeded pseudo-random generator of tests, the benchmark and
 * `deno task publish`. No imports: tools load it without the test fixtures.
 *
 * @module
 */

/**
 * Small, fast, seedable pseudo-random numbers (sfc32), uniform in [0, 1): the
 * same seed gives the same sequence everywhere (tests, bench, `deno task
 * publish`), so a failing run can be replayed from its seed.
 */
export function seededRandom(seed: number): () => number {
  let a = 0x9e3779b9 | 0;
  let b = 0x243f6a88 | 0;
  let c = 0xb7e15162 | 0;
  let d = seed | 0;
  const next = () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 15; i++) next();
  return next;
}
