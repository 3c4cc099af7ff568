/**
 * safetensors read and write.
 *
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON (padded with spaces), then the
 * data buffer. The header maps tensor name → {dtype, shape, data_offsets: [begin, end]} (offsets
 * relative to the data buffer) plus an optional "__metadata__" string → string map.
 *
 * Reading keeps a file descriptor and reads only the header up front: real checkpoints are many
 * GB, so tensors are read one at a time with positional reads.
 */
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

import {
  DTYPES,
  assertLittleEndianHost,
  bfloat16ArrayToFloat32,
  dtypeSize,
  float16ArrayToFloat32,
  float32ArrayToBfloat16,
  float32ArrayToFloat16,
  isDType,
  isDecodable,
  type DType,
} from './dtype.js';
import { SafetensorsError } from './errors.js';
import { showValue } from './show.js';

/** Headers above this are refused before allocating anything (the reference implementation's limit). */
export const MAX_HEADER_LENGTH = 100_000_000;

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Number of elements: the product of the shape (1 for a scalar). */
  numel: number;
  /** `[begin, end)` in bytes, relative to the start of the data buffer. */
  dataOffsets: [number, number];
  byteLength: number;
  /** Whether `readFloat32` can decode it (false for the float8 types). */
  decodable: boolean;
}

export interface SafetensorsHeader {
  /** N, the JSON header's length in bytes (padding included). */
  headerLength: number;
  /** 8 + N: the file offset of the data buffer. */
  dataStart: number;
  /** The data buffer's length in bytes, which the tensors cover exactly. */
  dataLength: number;
  /** Tensors in header order. */
  tensors: Map<string, TensorInfo>;
  /** The `__metadata__` map; empty when the file has none. */
  metadata: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Parsing (pure: bytes in, header out; also the entry point for fuzzing)

function describe(source: string | undefined): string {
  return source === undefined ? 'safetensors buffer' : `safetensors file ${source}`;
}

function fail(source: string | undefined, problem: string, tensor?: string): never {
  const where = tensor === undefined ? describe(source) : `${describe(source)}: tensor "${tensor}"`;
  throw new SafetensorsError(`${where}: ${problem}`, source, tensor);
}

/** Shortens a value for an error message (headers come from untrusted files). */
function show(value: unknown): string {
  return showValue(value, 80);
}

/**
 * Validates the 8-byte length prefix against the file size and returns N, the header length.
 * `prefix` must hold at least the file's first 8 bytes (when the file has them).
 */
export function readHeaderLength(prefix: Uint8Array, fileSize: number, source?: string): number {
  if (fileSize < 8) {
    fail(source, `file is ${fileSize} bytes, shorter than the 8-byte header length prefix (truncated?)`);
  }
  if (prefix.length < 8) fail(source, `only ${prefix.length} bytes given; the header length needs 8`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const length = view.getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_LENGTH)) {
    fail(source, `header length ${length} exceeds the limit of ${MAX_HEADER_LENGTH} bytes (corrupt file?)`);
  }
  const headerLength = Number(length);
  if (8 + headerLength > fileSize) {
    fail(
      source,
      `header length ${headerLength} extends beyond the end of the file ` + `(${fileSize} bytes; header truncated?)`,
    );
  }
  return headerLength;
}

/**
 * Parses and validates a safetensors header.
 *
 * @param bytes the start of the file: at least 8 + N bytes (the whole file also works)
 * @param fileSize the full file size, which the tensors must cover exactly
 * @param source a file name for error messages
 */
export function parseSafetensorsHeader(
  bytes: Uint8Array,
  fileSize: number = bytes.length,
  source?: string,
): SafetensorsHeader {
  const headerLength = readHeaderLength(bytes, fileSize, source);
  const dataStart = 8 + headerLength;
  if (bytes.length < dataStart) {
    fail(source, `only ${bytes.length} bytes given; the header needs ${dataStart}`);
  }
  const dataLength = fileSize - dataStart;

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, dataStart));
  } catch {
    fail(source, 'header is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    // JSON.parse accepts the trailing space padding. A name repeated in the JSON keeps its last
    // entry; the dropped entry's bytes then show up as a gap below.
    parsed = JSON.parse(text);
  } catch (error) {
    fail(source, `header is not valid JSON (${(error as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    fail(source, `header is not a JSON object (found ${Array.isArray(parsed) ? 'an array' : show(parsed)})`);
  }

  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(parsed)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(entry, source);
    } else {
      tensors.set(name, parseTensorEntry(name, entry, dataLength, source));
    }
  }
  checkCoverage([...tensors.values()], dataLength, source);
  return { headerLength, dataStart, dataLength, tensors, metadata };
}

function parseMetadata(entry: unknown, source: string | undefined): Record<string, string> {
  if (entry === null) return {};
  if (typeof entry !== 'object' || Array.isArray(entry)) {
    fail(source, `"__metadata__" is not a string-to-string map (found ${show(entry)})`);
  }
  if ('dtype' in entry || 'data_offsets' in entry) {
    fail(source, `a tensor may not be named "__metadata__": that key is reserved for the metadata map`);
  }
  for (const [key, value] of Object.entries(entry)) {
    if (typeof value !== 'string') {
      fail(source, `metadata value for key "${key}" is not a string (found ${show(value)})`);
    }
  }
  // fromEntries defines own properties, so even a key "__proto__" stays plain data.
  return Object.fromEntries(Object.entries(entry)) as Record<string, string>;
}

function parseTensorEntry(name: string, entry: unknown, dataLength: number, source: string | undefined): TensorInfo {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    fail(source, `entry is not an object {dtype, shape, data_offsets} (found ${show(entry)})`, name);
  }
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;

  if (!isDType(dtype)) {
    fail(source, `unknown dtype ${show(dtype)} (known: ${DTYPES.join(', ')})`, name);
  }
  if (!Array.isArray(shape)) fail(source, `shape ${show(shape)} is not an array`, name);
  let numel = 1;
  for (const [axis, size] of shape.entries()) {
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      fail(source, `shape ${show(shape)}: dimension ${axis} (${show(size)}) is not a non-negative integer`, name);
    }
    numel *= size;
  }
  // Checked after the loop: a zero dimension makes any other size legal.
  if (!Number.isSafeInteger(numel)) fail(source, `shape ${show(shape)} has too many elements`, name);

  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)
  ) {
    fail(source, `data_offsets ${show(offsets)} are not two non-negative integers [begin, end]`, name);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail(source, `data_offsets [${begin}, ${end}]: begin is after end`, name);
  if (end > dataLength) {
    fail(
      source,
      `data_offsets [${begin}, ${end}] extend beyond the end of the file ` +
        `(the data buffer holds ${dataLength} bytes)`,
      name,
    );
  }
  const elementSize = dtypeSize(dtype);
  const expectedBytes = numel * elementSize;
  if (end - begin !== expectedBytes) {
    fail(
      source,
      `wrong dtype size: shape ${show(shape)} of ${dtype} needs ${numel} × ${elementSize} = ` +
        `${expectedBytes} bytes, but data_offsets [${begin}, ${end}] span ${end - begin}`,
      name,
    );
  }
  return {
    name,
    dtype,
    shape: shape as number[],
    numel,
    dataOffsets: [begin, end],
    byteLength: expectedBytes,
    decodable: isDecodable(dtype),
  };
}

/** Sorted by begin, the tensors must tile [0, dataLength) with no overlap and no gap. */
function checkCoverage(tensors: TensorInfo[], dataLength: number, source: string | undefined): void {
  // Ties on begin put empty tensors first, so an empty tensor next to a full one is no overlap.
  const sorted = [...tensors].sort(
    (a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1],
  );
  let cursor = 0;
  let previous: TensorInfo | null = null;
  for (const tensor of sorted) {
    const [begin, end] = tensor.dataOffsets;
    if (begin < cursor && previous !== null) {
      fail(
        source,
        `overlapping tensors: "${previous.name}" spans [${previous.dataOffsets[0]}, ${previous.dataOffsets[1]}) ` +
          `and "${tensor.name}" starts at ${begin}`,
        tensor.name,
      );
    }
    if (begin > cursor) {
      fail(
        source,
        `gap: bytes [${cursor}, ${begin}) of the data buffer belong to no tensor (before this one)`,
        tensor.name,
      );
    }
    cursor = end;
    previous = tensor;
  }
  if (cursor !== dataLength) {
    fail(
      source,
      `gap: bytes [${cursor}, ${dataLength}) at the end of the data buffer belong to no tensor ` +
        `(trailing garbage or missing header entries)`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/**
 * Decodes little-endian tensor bytes of any decodable dtype to float32 (integers convert by
 * value, rounding above 2^24). For F32 the result is a view on `bytes` when they are 4-aligned.
 */
export function decodeToFloat32(bytes: Uint8Array, dtype: DType, what = 'tensor'): Float32Array {
  assertLittleEndianHost();
  const size = dtypeSize(dtype);
  if (bytes.byteLength % size !== 0) {
    throw new SafetensorsError(`${what}: ${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  const count = bytes.byteLength / size;
  // Typed-array views need aligned offsets; copy the rare unaligned input.
  const src = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  const { buffer, byteOffset } = src;
  switch (dtype) {
    case 'F32':
      return new Float32Array(buffer, byteOffset, count);
    case 'F16':
      return float16ArrayToFloat32(new Uint16Array(buffer, byteOffset, count));
    case 'BF16':
      return bfloat16ArrayToFloat32(new Uint16Array(buffer, byteOffset, count));
    case 'F64':
      return new Float32Array(new Float64Array(buffer, byteOffset, count));
    case 'I64':
      return bigIntsToFloat32(new BigInt64Array(buffer, byteOffset, count));
    case 'U64':
      return bigIntsToFloat32(new BigUint64Array(buffer, byteOffset, count));
    case 'I32':
      return new Float32Array(new Int32Array(buffer, byteOffset, count));
    case 'U32':
      return new Float32Array(new Uint32Array(buffer, byteOffset, count));
    case 'I16':
      return new Float32Array(new Int16Array(buffer, byteOffset, count));
    case 'U16':
      return new Float32Array(new Uint16Array(buffer, byteOffset, count));
    case 'I8':
      return new Float32Array(new Int8Array(buffer, byteOffset, count));
    case 'U8':
      return new Float32Array(new Uint8Array(buffer, byteOffset, count));
    case 'BOOL': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = src[i] === 0 ? 0 : 1;
      return out;
    }
    case 'F8_E4M3':
    case 'F8_E5M2':
      throw new SafetensorsError(`${what}: dtype ${dtype} is not decodable to float32 by this library`);
  }
}

function bigIntsToFloat32(src: BigInt64Array | BigUint64Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = Number(src[i]!);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading a file

// One read() moves at most ~2 GiB on Linux; stay well below.
const READ_CHUNK = 1 << 30;

function readExactly(fd: number, target: Uint8Array, position: number, source: string, what: string): void {
  let done = 0;
  while (done < target.length) {
    const length = Math.min(READ_CHUNK, target.length - done);
    const read = readSync(fd, target, done, length, position + done);
    if (read === 0) {
      fail(source, `file ended after ${position + done} bytes while reading ${what} (truncated since it was opened?)`);
    }
    done += read;
  }
}

export class SafetensorsFile {
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    readonly fileSize: number,
    readonly header: SafetensorsHeader,
  ) {
    this.fd = fd;
  }

  /** Opens a file and reads and validates its header only. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (error) {
      fail(path, `cannot open (${(error as Error).message})`);
    }
    try {
      const stat = fstatSync(fd);
      if (!stat.isFile()) fail(path, 'not a regular file');
      const fileSize = stat.size;
      const lengthPrefix = new Uint8Array(Math.min(8, fileSize));
      readExactly(fd, lengthPrefix, 0, path, 'the header length');
      const headerLength = readHeaderLength(lengthPrefix, fileSize, path);
      const headerBytes = new Uint8Array(8 + headerLength);
      readExactly(fd, headerBytes, 0, path, 'the header');
      const header = parseSafetensorsHeader(headerBytes, fileSize, path);
      return new SafetensorsFile(path, fd, fileSize, header);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  get metadata(): Readonly<Record<string, string>> {
    return this.header.metadata;
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  has(name: string): boolean {
    return this.header.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.header.tensors.get(name);
    if (info === undefined) {
      fail(this.path, `no such tensor (the file holds ${this.header.tensors.size})`, name);
    }
    return info;
  }

  /** The tensor's raw little-endian bytes, in a fresh buffer of their own (offset 0). */
  readBytes(name: string): Uint8Array {
    const info = this.info(name);
    const bytes = new Uint8Array(info.byteLength);
    this.readBytesInto(name, bytes);
    return bytes;
  }

  /** Reads the tensor's raw bytes into `target` (exactly `byteLength` bytes), e.g. pooled memory. */
  readBytesInto(name: string, target: Uint8Array): void {
    const info = this.info(name);
    if (target.length !== info.byteLength) {
      fail(this.path, `target holds ${target.length} bytes, the tensor ${info.byteLength}`, name);
    }
    readExactly(this.openFd(), target, this.header.dataStart + info.dataOffsets[0], this.path, `tensor "${name}"`);
  }

  /** The tensor converted to float32 (F32, F16, BF16, F64 and integer types). */
  readFloat32(name: string): Float32Array {
    const info = this.info(name);
    if (!info.decodable) fail(this.path, `dtype ${info.dtype} is not decodable to float32`, name);
    return decodeToFloat32(this.readBytes(name), info.dtype, `${describe(this.path)}: tensor "${name}"`);
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }

  private openFd(): number {
    if (this.fd === null) fail(this.path, 'file is closed');
    return this.fd;
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Typed arrays accepted as tensor data. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Int8Array
  | Uint8Array
  | BigInt64Array
  | BigUint64Array;

/**
 * A tensor to write. `data` is either
 * - a Float32Array, written as F32, or converted when `dtype` is BF16 (round to nearest even),
 *   F16 (round to nearest even, subnormals, overflow to inf) or F64;
 * - a Uint8Array of the tensor's raw little-endian bytes in `dtype` (any dtype);
 * - the typed array native to `dtype` (Float64Array for F64, Int32Array for I32, Uint16Array
 *   holding the bits for F16/BF16 or the values for U16, BigInt64Array for I64, ...).
 */
export interface TensorToWrite {
  dtype: DType;
  shape: readonly number[];
  data: TensorData;
}

export type TensorsToWrite = Record<string, TensorToWrite> | ReadonlyMap<string, TensorToWrite>;

type TypedArrayConstructor = { new (length: number): TensorData; readonly name: string };

/** The typed array whose elements are exactly one `dtype` element each. */
const NATIVE_ARRAY: Partial<Record<DType, TypedArrayConstructor>> = {
  F64: Float64Array,
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  U16: Uint16Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
  I32: Int32Array,
  U32: Uint32Array,
  I16: Int16Array,
  I8: Int8Array,
  U8: Uint8Array,
  BOOL: Uint8Array,
};

interface PlannedTensor {
  name: string;
  tensor: TensorToWrite;
  byteLength: number;
  begin: number;
}

interface WritePlan {
  /** The length prefix and the padded header. */
  prefix: Uint8Array;
  tensors: PlannedTensor[];
  totalLength: number;
}

function writeFail(problem: string, tensor?: string): never {
  const where = tensor === undefined ? 'writing safetensors' : `writing safetensors: tensor "${tensor}"`;
  throw new SafetensorsError(`${where}: ${problem}`, undefined, tensor);
}

function validateTensorToWrite(name: string, tensor: TensorToWrite): number {
  if (name.length === 0) writeFail('tensor names must not be empty');
  if (name === '__metadata__') writeFail('"__metadata__" is reserved for the metadata map', name);
  if (!isDType(tensor.dtype)) writeFail(`unknown dtype ${show(tensor.dtype)}`, name);
  let numel = 1;
  for (const size of tensor.shape) {
    if (!Number.isSafeInteger(size) || size < 0) {
      writeFail(`shape ${show(tensor.shape)} has an entry that is not a non-negative integer`, name);
    }
    numel *= size;
  }
  const byteLength = numel * dtypeSize(tensor.dtype);
  const { data } = tensor;
  if (data instanceof Float32Array) {
    if (!['F32', 'F16', 'BF16', 'F64'].includes(tensor.dtype)) {
      writeFail(`Float32Array data can be written as F32, F16, BF16 or F64, not ${tensor.dtype}`, name);
    }
    if (data.length !== numel)
      writeFail(`shape ${show(tensor.shape)} has ${numel} elements, data ${data.length}`, name);
  } else if (data instanceof Uint8Array) {
    if (data.byteLength !== byteLength) {
      writeFail(
        `shape ${show(tensor.shape)} of ${tensor.dtype} needs ${byteLength} bytes, data has ${data.byteLength}`,
        name,
      );
    }
  } else {
    const native = NATIVE_ARRAY[tensor.dtype];
    if (native === undefined || !(data instanceof native)) {
      const accepted = native === undefined ? 'raw bytes in a Uint8Array' : `a ${native.name} or raw bytes`;
      writeFail(`${data.constructor.name} data cannot be written as ${tensor.dtype} (pass ${accepted})`, name);
    }
    if (data.length !== numel)
      writeFail(`shape ${show(tensor.shape)} has ${numel} elements, data ${data.length}`, name);
  }
  return byteLength;
}

/** The tensor's bytes as stored (converted when needed; a view when no conversion is needed). */
function encodeTensorBytes(tensor: TensorToWrite): Uint8Array {
  const { data, dtype } = tensor;
  let encoded: ArrayBufferView = data;
  if (data instanceof Float32Array) {
    if (dtype === 'BF16') encoded = float32ArrayToBfloat16(data);
    else if (dtype === 'F16') encoded = float32ArrayToFloat16(data);
    else if (dtype === 'F64') encoded = new Float64Array(data);
  }
  return new Uint8Array(encoded.buffer, encoded.byteOffset, encoded.byteLength);
}

function planWrite(tensors: TensorsToWrite, metadata: Record<string, string> | undefined): WritePlan {
  assertLittleEndianHost();
  const entries: [string, TensorToWrite][] =
    tensors instanceof Map ? [...(tensors as ReadonlyMap<string, TensorToWrite>)] : Object.entries(tensors);
  const planned = entries.map(([name, tensor]) => ({
    name,
    tensor,
    byteLength: validateTensorToWrite(name, tensor),
    begin: 0,
  }));
  // Larger elements first (stable): every tensor then starts at a multiple of its element size,
  // since the data buffer itself starts at a multiple of 8.
  planned.sort((a, b) => dtypeSize(b.tensor.dtype) - dtypeSize(a.tensor.dtype));

  const headerEntries: [string, unknown][] = [];
  if (metadata !== undefined) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') writeFail(`metadata value for key "${key}" is not a string`);
    }
    headerEntries.push(['__metadata__', metadata]);
  }
  let offset = 0;
  for (const tensor of planned) {
    tensor.begin = offset;
    offset += tensor.byteLength;
    const entry = { dtype: tensor.tensor.dtype, shape: [...tensor.tensor.shape], data_offsets: [tensor.begin, offset] };
    headerEntries.push([tensor.name, entry]);
  }
  // fromEntries, not assignment: a tensor named "__proto__" must stay an ordinary key.
  const header = Object.fromEntries(headerEntries);
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(json.length / 8) * 8;
  const prefix = new Uint8Array(8 + headerLength).fill(0x20); // pad with spaces
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerLength), true);
  prefix.set(json, 8);
  return { prefix, tensors: planned, totalLength: prefix.length + offset };
}

/** The whole file in memory. */
export function serializeSafetensors(tensors: TensorsToWrite, metadata?: Record<string, string>): Uint8Array {
  const plan = planWrite(tensors, metadata);
  const out = new Uint8Array(plan.totalLength);
  out.set(plan.prefix, 0);
  for (const tensor of plan.tensors) out.set(encodeTensorBytes(tensor.tensor), plan.prefix.length + tensor.begin);
  return out;
}

/**
 * Writes a safetensors file atomically: into a temporary file next to `path`, flushed, then
 * renamed over `path`, so readers never see a half-written file. Tensors are converted one at a
 * time, so memory stays near the largest tensor.
 */
export function writeSafetensors(path: string, tensors: TensorsToWrite, metadata?: Record<string, string>): void {
  const plan = planWrite(tensors, metadata);
  const temporary = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(temporary, 'wx');
  let closed = false;
  let renamed = false;
  try {
    writeAll(fd, plan.prefix);
    for (const tensor of plan.tensors) writeAll(fd, encodeTensorBytes(tensor.tensor));
    fsyncSync(fd);
    closed = true; // set first: a failed close must not be retried on a descriptor number reused since
    closeSync(fd);
    renameSync(temporary, path);
    renamed = true;
  } finally {
    if (!closed) closeSync(fd);
    if (!renamed) rmSync(temporary, { force: true });
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) {
    done += writeSync(fd, bytes, done, Math.min(READ_CHUNK, bytes.length - done));
  }
}
