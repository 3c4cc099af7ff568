/**
 * How a dataset row reads as a training example, for the upload preview: the prompt the model sees
 * and the completion it learns, per the formats of docs/data.md (chat, alpaca, prompt/completion,
 * text). A sketch of the trainer's template, meant to catch a wrong column, not to be byte-exact.
 */

export interface RenderedRow {
  format: 'chat' | 'alpaca' | 'prompt_completion' | 'text' | 'ids' | 'unknown';
  prompt: string;
  completion: string;
}

type Row = Record<string, unknown>;

const str = (v: unknown): string =>
  typeof v === 'string' ? v : v === undefined || v === null ? '' : JSON.stringify(v);

export function renderRow(row: unknown): RenderedRow {
  if (row === null || typeof row !== 'object' || Array.isArray(row))
    return { format: 'unknown', prompt: str(row), completion: '' };
  const r = row as Row;
  const turns = Array.isArray(r.messages) ? r.messages : Array.isArray(r.conversations) ? r.conversations : null;
  if (turns) {
    const text = (turns as Row[]).map((t) => ({
      role: str(t.role ?? t.from),
      content: str(t.content ?? t.value),
    }));
    const lastAssistant = [...text].reverse().findIndex((t) => t.role === 'assistant' || t.role === 'gpt');
    const cut = lastAssistant < 0 ? text.length : text.length - 1 - lastAssistant;
    return {
      format: 'chat',
      prompt: text
        .slice(0, cut)
        .map((t) => `${t.role}: ${t.content}`)
        .join('\n'),
      completion: cut < text.length ? text[cut]!.content : '',
    };
  }
  if ('instruction' in r)
    return {
      format: 'alpaca',
      prompt: [str(r.instruction), str(r.input)].filter(Boolean).join('\n\n'),
      completion: str(r.output),
    };
  if ('prompt' in r || 'completion' in r)
    return { format: 'prompt_completion', prompt: str(r.prompt), completion: str(r.completion) };
  if ('text' in r) return { format: 'text', prompt: '', completion: str(r.text) };
  if ('ids' in r) return { format: 'ids', prompt: '', completion: `${(r.ids as unknown[]).length ?? 0} token ids` };
  return { format: 'unknown', prompt: JSON.stringify(r), completion: '' };
}

/** The 422 of a dataset upload lists bad rows under `error.lines`; anything else gives []. */
export interface LineProblem {
  line: number;
  field: string | null;
  message: string;
}

export function lineProblems(error: unknown): LineProblem[] {
  const lines = (error as { lines?: unknown } | null)?.lines;
  if (!Array.isArray(lines)) return [];
  return lines
    .filter((l): l is Row => l !== null && typeof l === 'object')
    .map((l) => ({
      line: typeof l.line === 'number' ? l.line : 0,
      field: typeof l.field === 'string' ? l.field : null,
      message: str(l.message),
    }));
}
