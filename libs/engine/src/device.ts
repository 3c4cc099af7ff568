/**
 * Where the native engine runs: `EXPERTUNE_DEVICE=cpu` (the default) or `cuda:<ordinal>`
 * (docs/cuda.md). The value is checked here, once, so a typo fails at start with the accepted
 * forms instead of silently training on the CPU.
 */

export type Device = { kind: 'cpu' } | { kind: 'cuda'; index: number };

export const CPU_DEVICE: Device = { kind: 'cpu' };

/** Parses `cpu`, `cuda` (= `cuda:0`) or `cuda:<n>`; empty or undefined is the CPU. */
export function parseDevice(value: string | undefined, source = 'EXPERTUNE_DEVICE'): Device {
  const text = (value ?? '').trim().toLowerCase();
  if (text === '' || text === 'cpu') return CPU_DEVICE;
  const match = /^cuda(?::(\d+))?$/.exec(text);
  if (!match)
    throw new RangeError(`${source}=${JSON.stringify(value)}: expected "cpu" or "cuda:<ordinal>" (e.g. cuda:0)`);
  const index = match[1] === undefined ? 0 : Number(match[1]);
  if (!Number.isSafeInteger(index))
    throw new RangeError(`${source}=${JSON.stringify(value)}: the CUDA ordinal is too large`);
  return { kind: 'cuda', index };
}

export function deviceFromEnv(env: NodeJS.ProcessEnv = process.env): Device {
  return parseDevice(env.EXPERTUNE_DEVICE);
}

export function deviceName(device: Device): string {
  return device.kind === 'cpu' ? 'cpu' : `cuda:${device.index}`;
}

/** The C API's device number: ET_DEVICE_CPU (−1) or the CUDA ordinal. */
export function nativeDeviceOrdinal(device: Device): number {
  return device.kind === 'cpu' ? -1 : device.index;
}

/**
 * The error for a CUDA device the native core could not give: a CPU-only build gets the reason
 * and the ways out; any other failure (no such device, driver) keeps the core's own message.
 */
export function deviceError(device: Device, coreMessage: string): Error {
  if (/CUDA backend not built/.test(coreMessage))
    return new Error(
      `EXPERTUNE_DEVICE=${deviceName(device)} asks for the CUDA backend, but this build of @expertune/native is CPU-only ` +
        '(it was built without nvcc and cuBLASLt). Set EXPERTUNE_DEVICE=cpu, or rebuild with `npm run build:native` ' +
        'on a machine with the CUDA toolkit (docs/cuda.md).',
    );
  return new Error(`${deviceName(device)}: ${coreMessage}`);
}
