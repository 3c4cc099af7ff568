/** Test helpers: temporary directories and safetensors bytes built by hand (not by the library). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';

const created: string[] = [];

/** A fresh temporary directory, removed after the current test. */
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'expertune-formats-'));
  created.push(dir);
  return dir;
}

afterEach(() => {
  for (const dir of created.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/**
 * A safetensors file from a header string and data bytes: u64 little-endian length, the header
 * (padded with spaces to `padTo`), the data. `declaredLength` overrides the length prefix.
 */
export function handBuilt(
  header: string | object,
  data: ArrayLike<number> = [],
  options: { padTo?: number; declaredLength?: bigint } = {},
): Uint8Array {
  let text = typeof header === 'string' ? header : JSON.stringify(header);
  const padTo = options.padTo ?? 8;
  while (Buffer.byteLength(text) % padTo !== 0) text += ' ';
  const headerBytes = Buffer.from(text, 'utf8');
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, options.declaredLength ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(Array.from(data), 8 + headerBytes.length);
  return out;
}

/** Little-endian bytes of float32 values, through a DataView. */
export function f32Bytes(...values: number[]): number[] {
  const view = new DataView(new ArrayBuffer(values.length * 4));
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return [...new Uint8Array(view.buffer)];
}

/** Little-endian bytes of 16-bit patterns. */
export function u16Bytes(...patterns: number[]): number[] {
  return patterns.flatMap((p) => [p & 0xff, p >> 8]);
}
