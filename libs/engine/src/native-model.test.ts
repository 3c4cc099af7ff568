import { describe, expect, it } from 'vitest';

import { blasHint } from './native-model.js';

const info = (kernels: string, core: string) => ({
  kernels,
  blas: `OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY ${core} MAX_THREADS=64 core=${core}`,
  threads: 2,
  addon: 'x',
});

describe('blasHint', () => {
  it('speaks when OPENBLAS_CORETYPE forces AVX2 kernels on an AVX-512 CPU', () => {
    expect(blasHint(info('avx512', 'Haswell'), { OPENBLAS_CORETYPE: 'Haswell' })).toMatch(/unset it/);
    expect(blasHint(info('avx512', 'Zen'), { OPENBLAS_CORETYPE: 'Zen' })).toMatch(/OPENBLAS_CORETYPE=Zen/);
  });

  it('stays quiet when the core is OpenBLAS own choice, already AVX-512, or the CPU has no AVX-512', () => {
    expect(blasHint(info('avx512', 'Haswell'), {})).toBeNull();
    expect(blasHint(info('avx512', 'SkylakeX'), { OPENBLAS_CORETYPE: 'SkylakeX' })).toBeNull();
    expect(blasHint(info('avx2', 'Haswell'), { OPENBLAS_CORETYPE: 'Haswell' })).toBeNull();
  });
});
