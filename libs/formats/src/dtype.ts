/**
 * Tensor element types of safetensors and the float16 / bfloat16 ↔ float32 conversions.
 *
 * All conversions work on bit patterns through typed-array views, one pass, no per-element
 * allocation: checkpoints hold billions of elements.
 */

/** Element types this library knows. Byte order is always little-endian (safetensors). */
export const DTYPE_SIZES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
} as const;

export type DType = keyof typeof DTYPE_SIZES;

export const DTYPES = Object.keys(DTYPE_SIZES) as DType[];

/** Types we parse (the header is valid) but do not decode to float32. */
const NOT_DECODABLE: ReadonlySet<DType> = new Set<DType>(['F8_E4M3', 'F8_E5M2']);

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.hasOwn(DTYPE_SIZES, value);
}

export function dtypeSize(dtype: DType): number {
  return DTYPE_SIZES[dtype];
}

/** Whether `readFloat32` can decode this type. */
export function isDecodable(dtype: DType): boolean {
  return !NOT_DECODABLE.has(dtype);
}

export function isFloatDType(dtype: DType): boolean {
  return dtype === 'F64' || dtype === 'F32' || dtype === 'F16' || dtype === 'BF16';
}

/** Every typed array here is read and written in host order; refuse big-endian hosts once. */
export const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function assertLittleEndianHost(): void {
  if (!HOST_IS_LITTLE_ENDIAN) {
    throw new Error('@expertune/formats needs a little-endian host (safetensors is little-endian)');
  }
}

// Scratch views to reinterpret one float32 as its bits (scalar helpers only).
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

// ---------------------------------------------------------------------------------------------
// bfloat16: the upper 16 bits of a float32.

/** float32 bits → bfloat16 bits, rounding to nearest, ties to even; NaN stays a (quiet) NaN. */
function bf16BitsFromF32Bits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) {
    // NaN: truncating could clear every mantissa bit and make an infinity, so force the quiet bit.
    return ((bits >>> 16) | 0x0040) & 0xffff;
  }
  // Adding 0x7fff plus the lowest kept bit rounds ties to even. The sum stays below 2^32 for every
  // non-NaN input (largest: -inf 0xff800000 + 0x8000), so no wrap-around; overflow lands on inf.
  const roundingBias = 0x7fff + ((bits >>> 16) & 1);
  return (bits + roundingBias) >>> 16;
}

export function float32ToBfloat16Bits(value: number): number {
  scratchF32[0] = value;
  return bf16BitsFromF32Bits(scratchU32[0]!);
}

export function bfloat16BitsToFloat32(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0]!;
}

/** Converts a whole array; `out` may be passed to avoid an allocation. */
export function float32ArrayToBfloat16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkSameLength(src.length, out.length);
  const srcBits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < srcBits.length; i++) out[i] = bf16BitsFromF32Bits(srcBits[i]!);
  return out;
}

export function bfloat16ArrayToFloat32(
  src: Uint16Array,
  out: Float32Array = new Float32Array(src.length),
): Float32Array {
  checkSameLength(src.length, out.length);
  const outBits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) outBits[i] = src[i]! << 16;
  return out;
}

// ---------------------------------------------------------------------------------------------
// IEEE float16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.

/** float32 bits → float16 bits, round to nearest even, with subnormals and overflow to ±inf. */
function f16BitsFromF32Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;

  if (abs > 0x7f800000) {
    // NaN: keep the top mantissa bits of the payload, force quiet so it cannot become inf.
    return sign | 0x7e00 | ((abs >>> 13) & 0x3ff);
  }
  if (abs >= 0x477ff000) {
    // ≥ 65520, halfway between 65504 (largest half) and 65536: ties go to the even
    // mantissa, which is the overflow to infinity. Covers +inf itself.
    return sign | 0x7c00;
  }
  if (abs >= 0x38800000) {
    // ≥ 2^-14: a normal half. Re-bias the exponent (127 → 15: subtract 112 << 23), then drop
    // 13 mantissa bits with round-to-nearest-even; a mantissa carry bumps the exponent correctly.
    const rebiased = abs - 0x38000000;
    return sign | ((rebiased + 0x0fff + ((rebiased >>> 13) & 1)) >>> 13);
  }
  const exponent = abs >>> 23;
  if (exponent < 102) {
    // Below 2^-25, half of the smallest subnormal 2^-24: rounds to (signed) zero.
    return sign;
  }
  // Subnormal half: the result is round(value / 2^-24). With the implicit bit, value =
  // mantissa · 2^(exponent - 150), so value / 2^-24 = mantissa >> (126 - exponent).
  const mantissa = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - exponent; // 14 … 24
  const halfway = 1 << (shift - 1);
  const remainder = mantissa & ((1 << shift) - 1);
  let result = mantissa >>> shift;
  if (remainder > halfway || (remainder === halfway && (result & 1) === 1)) result += 1;
  // A carry out of the subnormal range gives 0x0400, the smallest normal: still correct.
  return sign | result;
}

/** float16 bits → float32 bits (exact: every half is representable in float32). */
function f32BitsFromF16Bits(half: number): number {
  const sign = (half & 0x8000) << 16;
  const exponent = (half >>> 10) & 0x1f;
  const mantissa = half & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0; // inf / NaN
  if (exponent !== 0) return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0; // ±0
  // Subnormal: normalise the mantissa so its leading one becomes the implicit bit.
  let m = mantissa;
  let e = 113; // exponent of 2^-14 in float32 bias, decremented per shift
  while ((m & 0x400) === 0) {
    m <<= 1;
    e -= 1;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

// 65536 entries (256 KiB): the fastest decode, built on first use only.
let halfToFloatTable: Uint32Array | null = null;
function halfTable(): Uint32Array {
  if (halfToFloatTable === null) {
    const table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = f32BitsFromF16Bits(h);
    halfToFloatTable = table;
  }
  return halfToFloatTable;
}

export function float32ToFloat16Bits(value: number): number {
  scratchF32[0] = value;
  return f16BitsFromF32Bits(scratchU32[0]!);
}

export function float16BitsToFloat32(bits: number): number {
  scratchU32[0] = f32BitsFromF16Bits(bits & 0xffff);
  return scratchF32[0]!;
}

export function float32ArrayToFloat16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkSameLength(src.length, out.length);
  const srcBits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < srcBits.length; i++) out[i] = f16BitsFromF32Bits(srcBits[i]!);
  return out;
}

export function float16ArrayToFloat32(
  src: Uint16Array,
  out: Float32Array = new Float32Array(src.length),
): Float32Array {
  checkSameLength(src.length, out.length);
  const table = halfTable();
  const outBits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) outBits[i] = table[src[i]!]!;
  return out;
}

function checkSameLength(srcLength: number, outLength: number): void {
  if (srcLength !== outLength) {
    throw new RangeError(`output holds ${outLength} elements, input ${srcLength}`);
  }
}
