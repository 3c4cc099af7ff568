/**
 * The little dense linear algebra the collapse fallback needs, in float64: a thin Householder QR
 * and a one-sided Jacobi SVD. Matrices are column-major (`data[j·rows + i]` is row i, column j):
 * both algorithms work column by column, so columns are contiguous.
 */

export interface Matrix {
  rows: number;
  cols: number;
  /** Column-major values. */
  data: Float64Array;
}

export function zeros(rows: number, cols: number): Matrix {
  return { rows, cols, data: new Float64Array(rows * cols) };
}

/** A column-major matrix from row-major values (`values[i·cols + j]`). */
export function fromRowMajor(rows: number, cols: number, values: ArrayLike<number>): Matrix {
  if (values.length !== rows * cols) throw new RangeError(`expected ${rows}×${cols} values, got ${values.length}`);
  const m = zeros(rows, cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) m.data[j * rows + i] = values[i * cols + j]!;
  return m;
}

export function toRowMajor(m: Matrix): Float64Array {
  const out = new Float64Array(m.rows * m.cols);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) out[i * m.cols + j] = m.data[j * m.rows + i]!;
  return out;
}

/** a · b. */
export function multiply(a: Matrix, b: Matrix): Matrix {
  if (a.cols !== b.rows) throw new RangeError(`cannot multiply ${a.rows}×${a.cols} by ${b.rows}×${b.cols}`);
  const out = zeros(a.rows, b.cols);
  for (let j = 0; j < b.cols; j++) {
    const target = j * a.rows;
    for (let k = 0; k < a.cols; k++) {
      const factor = b.data[j * b.rows + k]!;
      if (factor === 0) continue;
      const source = k * a.rows;
      for (let i = 0; i < a.rows; i++) out.data[target + i]! += a.data[source + i]! * factor;
    }
  }
  return out;
}

export function transpose(m: Matrix): Matrix {
  const out = zeros(m.cols, m.rows);
  for (let j = 0; j < m.cols; j++) for (let i = 0; i < m.rows; i++) out.data[i * m.cols + j] = m.data[j * m.rows + i]!;
  return out;
}

/**
 * Thin QR of an m×n matrix by Householder reflections: `a = q·r` with q m×k (orthonormal columns)
 * and r k×n upper triangular, k = min(m, n). Rank-deficient input is fine (r has zeros on its
 * diagonal; q stays orthonormal).
 */
export function householderQR(a: Matrix): { q: Matrix; r: Matrix } {
  const { rows: m, cols: n } = a;
  const k = Math.min(m, n);
  const work = new Float64Array(a.data);
  // Reflector j is I − 2 v vᵀ with v (unit, rows j…m−1) stored in vs[j].
  const vs: Float64Array[] = [];
  for (let j = 0; j < k; j++) {
    const col = j * m;
    let norm = 0;
    for (let i = j; i < m; i++) norm += work[col + i]! * work[col + i]!;
    norm = Math.sqrt(norm);
    const v = new Float64Array(m - j);
    if (norm === 0) {
      vs.push(v); // nothing to annihilate: the identity reflector
      continue;
    }
    const alpha = work[col + j]! > 0 ? -norm : norm;
    for (let i = j; i < m; i++) v[i - j] = work[col + i]!;
    v[0]! -= alpha;
    let vnorm = 0;
    for (const x of v) vnorm += x * x;
    vnorm = Math.sqrt(vnorm);
    if (vnorm === 0) {
      vs.push(new Float64Array(m - j));
      continue;
    }
    for (let i = 0; i < v.length; i++) v[i]! /= vnorm;
    vs.push(v);
    for (let c = j; c < n; c++) {
      const base = c * m + j;
      let dot = 0;
      for (let i = 0; i < v.length; i++) dot += v[i]! * work[base + i]!;
      if (dot === 0) continue;
      dot *= 2;
      for (let i = 0; i < v.length; i++) work[base + i]! -= dot * v[i]!;
    }
  }
  const r = zeros(k, n);
  for (let c = 0; c < n; c++) for (let i = 0; i <= Math.min(c, k - 1); i++) r.data[c * k + i] = work[c * m + i]!;
  // q = H_0 H_1 … H_{k−1} applied to the first k columns of the identity (backward accumulation).
  const q = zeros(m, k);
  for (let c = 0; c < k; c++) q.data[c * m + c] = 1;
  for (let j = k - 1; j >= 0; j--) {
    const v = vs[j]!;
    for (let c = j; c < k; c++) {
      const base = c * m + j;
      let dot = 0;
      for (let i = 0; i < v.length; i++) dot += v[i]! * q.data[base + i]!;
      if (dot === 0) continue;
      dot *= 2;
      for (let i = 0; i < v.length; i++) q.data[base + i]! -= dot * v[i]!;
    }
  }
  return { q, r };
}

export interface Svd {
  /** m×n: column j is the left singular vector of s[j] (zero where s[j] is 0). */
  u: Matrix;
  /** n singular values, descending. */
  s: Float64Array;
  /** n×n orthogonal: column j is the right singular vector of s[j]. */
  v: Matrix;
}

/**
 * SVD of an m×n matrix by one-sided Jacobi (Hestenes): rotate pairs of columns until all are
 * orthogonal; the column norms are then the singular values. Accurate to working precision, also
 * for tiny singular values. Meant for small matrices (n up to a few hundred).
 */
export function jacobiSvd(a: Matrix, options: { tolerance?: number; maxSweeps?: number } = {}): Svd {
  const { rows: m, cols: n } = a;
  // Rounding leaves |cos| of orthogonal columns near m·ε: a tighter test would never settle.
  const tolerance = options.tolerance ?? Number.EPSILON * Math.max(m, 1);
  const maxSweeps = options.maxSweeps ?? 60;
  const w = new Float64Array(a.data);
  const v = new Float64Array(n * n);
  for (let j = 0; j < n; j++) v[j * n + j] = 1;
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const cp = p * m;
        const cq = q * m;
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let i = 0; i < m; i++) {
          const x = w[cp + i]!;
          const y = w[cq + i]!;
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) <= tolerance * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < m; i++) {
          const x = w[cp + i]!;
          const y = w[cq + i]!;
          w[cp + i] = c * x - s * y;
          w[cq + i] = s * x + c * y;
        }
        for (let i = 0; i < n; i++) {
          const x = v[p * n + i]!;
          const y = v[q * n + i]!;
          v[p * n + i] = c * x - s * y;
          v[q * n + i] = s * x + c * y;
        }
      }
    }
    if (!rotated) break;
  }
  const norms = Array.from({ length: n }, (_, j) => {
    let sum = 0;
    for (let i = 0; i < m; i++) sum += w[j * m + i]! * w[j * m + i]!;
    return Math.sqrt(sum);
  });
  const order = norms.map((_, j) => j).sort((x, y) => norms[y]! - norms[x]! || x - y);
  const u = zeros(m, n);
  const vOut = zeros(n, n);
  const s = new Float64Array(n);
  order.forEach((from, to) => {
    const sigma = norms[from]!;
    s[to] = sigma;
    if (sigma > 0) for (let i = 0; i < m; i++) u.data[to * m + i] = w[from * m + i]! / sigma;
    for (let i = 0; i < n; i++) vOut.data[to * n + i] = v[from * n + i]!;
  });
  return { u, s, v: vOut };
}
