/**
 * Values quoted in error messages. They come from untrusted files, so showing one must never
 * throw: JSON.stringify (and String of an array) recurse, and a document nested 100,000 deep
 * overflows the stack (found by fuzzing, docs/fuzzing.md).
 */
export function showValue(value: unknown, max = 80): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    if (Array.isArray(value)) text = `an array of ${value.length} item(s) nested too deep to show`;
    else if (typeof value === 'object' && value !== null) text = 'an object nested too deep to show';
    else text = `a ${typeof value}`;
  }
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}
