/**
 * One JSONL row of training data → the tokens it trains on and which of them carry loss.
 *
 * Formats (docs/data.md): `text`, `ids`, alpaca (`instruction`, optional `input`, `output`),
 * `prompt`/`completion`, and chat (`messages: [{role, content}]`, or ShareGPT's
 * `conversations: [{from, value}]`). Alpaca and prompt/completion rows become one user turn and
 * one assistant turn; every conversation is rendered with the model's chat template, or
 * DEFAULT_CHAT_TEMPLATE when it has none.
 */
import { Template } from '@huggingface/jinja';

import type { DATA_FORMATS } from '@expertune/contracts';
import { showValue, type TextTokenizer } from '@expertune/formats';

export type DataFormat = (typeof DATA_FORMATS)[number];

/** The fields a column mapping can rename (the key is ours, the value the file's name). */
export const COLUMN_NAMES = [
  'text',
  'ids',
  'instruction',
  'input',
  'output',
  'prompt',
  'completion',
  'messages',
  'conversations',
  'task',
  'task_type',
] as const;
export type ColumnName = (typeof COLUMN_NAMES)[number];
export type ColumnMapping = Partial<Record<ColumnName, string>>;

/**
 * The template used when the model has no `chat_template`: each turn is `<|role|>` and a newline,
 * then the content; a user or system turn ends with a newline, an assistant turn with the EOS
 * token (a newline when the tokenizer has none).
 */
export const DEFAULT_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message.role + '|>\\n' + message.content }}" +
  "{% if message.role == 'assistant' %}{% if eos_token %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}" +
  "{% else %}{{ '\\n' }}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** A piece of a row's text; `loss` says whether its tokens are predicted with loss. */
export interface Segment {
  text: string;
  loss: boolean;
}

export type ParsedRow =
  { kind: 'ids'; ids: number[] } | { kind: 'text'; text: string } | { kind: 'chat'; messages: ChatMessage[] };

export interface RowMeta {
  task?: string;
  taskType?: 0 | 1;
}

export interface RowProblem {
  line: number;
  field: string;
  message: string;
}

type Row = Record<string, unknown>;

const SHAREGPT_ROLES: Record<string, ChatMessage['role']> = { human: 'user', gpt: 'assistant', system: 'system' };
const CHAT_ROLES = ['system', 'user', 'assistant'];

/** Reads rows of one declared format (or detects it per row) with a column mapping. */
export class RowReader {
  private readonly name: (column: ColumnName) => string;

  constructor(
    private readonly format: DataFormat,
    columns: ColumnMapping = {},
  ) {
    this.name = (column) => columns[column] ?? column;
  }

  /** The row's content, metadata and format (as declared or detected), or the problems found in it (all, by field). */
  read(
    row: Row,
    line: number,
  ): { row: ParsedRow; meta: RowMeta; format: Exclude<DataFormat, 'auto'> } | { problems: RowProblem[] } {
    const problems: RowProblem[] = [];
    const problem = (column: ColumnName | string, message: string) =>
      problems.push({
        line,
        field: (COLUMN_NAMES as readonly string[]).includes(column) ? this.name(column as ColumnName) : column,
        message,
      });
    const meta = this.meta(row, problem);
    const format = this.format === 'auto' ? this.detect(row, problem) : this.format;
    const parsed = format ? this.content(format, row, problem) : null;
    if (problems.length > 0 || !parsed || !format) return { problems };
    return { row: parsed, meta, format };
  }

  private has(row: Row, column: ColumnName): boolean {
    return this.name(column) in row;
  }

  private get(row: Row, column: ColumnName): unknown {
    return row[this.name(column)];
  }

  private meta(row: Row, problem: (field: string, message: string) => void): RowMeta {
    const meta: RowMeta = {};
    const taskType = this.get(row, 'task_type');
    if (taskType === 0 || taskType === 1) meta.taskType = taskType;
    else if (taskType !== undefined) problem('task_type', `must be 0 or 1, got ${showValue(taskType)}`);
    const task = this.get(row, 'task');
    if (typeof task === 'string' && task !== '') meta.task = task;
    else if (task !== undefined) problem('task', `must be a non-empty string, got ${showValue(task)}`);
    return meta;
  }

  /** The format of a row in `auto` mode: chat, then alpaca, then prompt/completion, then text or ids. */
  private detect(row: Row, problem: (field: string, message: string) => void): Exclude<DataFormat, 'auto'> | null {
    if (this.has(row, 'messages') || this.has(row, 'conversations')) return 'chat';
    if (this.has(row, 'instruction')) return 'alpaca';
    if (this.has(row, 'prompt') || this.has(row, 'completion')) return 'prompt_completion';
    const text = this.has(row, 'text');
    const ids = this.has(row, 'ids');
    if (text && ids) problem('(row)', `has both "${this.name('text')}" and "${this.name('ids')}": give one`);
    else if (text) return 'text';
    else if (ids) return 'ids';
    else {
      const fields = Object.keys(row).join(', ') || 'none';
      problem(
        '(row)',
        `no known format: needs messages, conversations, instruction/output, prompt/completion, text or ids (fields found: ${fields})`,
      );
    }
    return null;
  }

  private content(
    format: Exclude<DataFormat, 'auto'>,
    row: Row,
    problem: (field: string, message: string) => void,
  ): ParsedRow | null {
    const string = (column: ColumnName, what: string, optional = false): string | null => {
      const value = this.get(row, column);
      if (value === undefined && optional) return '';
      if (value === undefined) problem(column, 'missing');
      else if (typeof value !== 'string') problem(column, `must be a string, got ${typeName(value)}`);
      else if (value === '' && !optional) problem(column, `empty ${what}`);
      else return value;
      return null;
    };
    switch (format) {
      case 'text': {
        const text = string('text', 'text');
        return text === null ? null : { kind: 'text', text };
      }
      case 'ids': {
        const ids = this.get(row, 'ids');
        if (!Array.isArray(ids) || ids.length === 0) {
          problem('ids', ids === undefined ? 'missing' : 'must be a non-empty array of token ids');
          return null;
        }
        return { kind: 'ids', ids: ids as number[] };
      }
      case 'alpaca': {
        const instruction = string('instruction', 'instruction');
        const input = string('input', 'input', true);
        const output = string('output', 'completion');
        if (instruction === null || input === null || output === null) return null;
        const user = input === '' ? instruction : `${instruction}\n\n${input}`;
        return { kind: 'chat', messages: turnPair(user, output) };
      }
      case 'prompt_completion': {
        const prompt = string('prompt', 'prompt');
        const completion = string('completion', 'completion');
        if (prompt === null || completion === null) return null;
        return { kind: 'chat', messages: turnPair(prompt, completion) };
      }
      case 'chat':
        return this.chat(row, problem);
    }
  }

  private chat(row: Row, problem: (field: string, message: string) => void): ParsedRow | null {
    const sharegpt = !this.has(row, 'messages') && this.has(row, 'conversations');
    const column: ColumnName = sharegpt ? 'conversations' : 'messages';
    const [roleKey, contentKey] = sharegpt ? ['from', 'value'] : ['role', 'content'];
    const field = this.name(column);
    const list = this.get(row, column);
    if (!Array.isArray(list) || list.length === 0) {
      problem(column, list === undefined ? 'missing' : 'must be a non-empty array of turns');
      return null;
    }
    const messages: ChatMessage[] = [];
    let bad = false;
    list.forEach((turn: unknown, i) => {
      const at = `${field}[${i}]`;
      if (typeof turn !== 'object' || turn === null || Array.isArray(turn)) {
        problem(at, 'must be an object');
        bad = true;
        return;
      }
      const rawRole = (turn as Row)[roleKey];
      const content = (turn as Row)[contentKey];
      const role = sharegpt
        ? typeof rawRole === 'string'
          ? SHAREGPT_ROLES[rawRole]
          : undefined
        : CHAT_ROLES.includes(rawRole as string)
          ? (rawRole as ChatMessage['role'])
          : undefined;
      if (!role) {
        const known = sharegpt ? Object.keys(SHAREGPT_ROLES).join(', ') : CHAT_ROLES.join(', ');
        problem(`${at}.${roleKey}`, `unknown role ${showValue(rawRole)} (one of ${known})`);
        bad = true;
      }
      if (typeof content !== 'string') {
        problem(
          `${at}.${contentKey}`,
          content === undefined ? 'missing' : `must be a string, got ${typeName(content)}`,
        );
        bad = true;
      } else if (content === '' && role === 'assistant') {
        problem(`${at}.${contentKey}`, 'empty completion');
        bad = true;
      }
      if (role && typeof content === 'string') messages.push({ role, content });
    });
    if (bad) return null;
    if (!messages.some((m) => m.role === 'assistant')) {
      problem(column, 'no assistant turn: nothing to learn');
      return null;
    }
    return { kind: 'chat', messages };
  }
}

function turnPair(user: string, assistant: string): ChatMessage[] {
  return [
    { role: 'user', content: user },
    { role: 'assistant', content: assistant },
  ];
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

/** Renders conversations with a Jinja chat template into prompt and completion segments. */
export class ChatRenderer {
  private readonly template: Template;

  constructor(
    source: string,
    private readonly specials: { bos_token: string; eos_token: string },
  ) {
    try {
      this.template = new Template(source);
    } catch (error) {
      // The parser fails on some broken templates with a bare TypeError: say what failed.
      throw new Error(`the chat template cannot be parsed (${(error as Error).message})`, { cause: error });
    }
  }

  private render(messages: ChatMessage[], addGenerationPrompt: boolean): string {
    return this.template.render({ messages, add_generation_prompt: addGenerationPrompt, ...this.specials });
  }

  /**
   * Each assistant turn's text is a completion segment; everything else is prompt. Found by
   * rendering the conversation up to each assistant turn (with the generation prompt) and through
   * it: each rendering must extend the previous one, or the template is not usable for masking.
   */
  segments(messages: ChatMessage[]): Segment[] {
    const segments: Segment[] = [];
    let done = '';
    const extend = (text: string, loss: boolean) => {
      if (!text.startsWith(done))
        throw new Error('the chat template does not render the conversation turn by turn (a prefix changed)');
      if (text.length > done.length) segments.push({ text: text.slice(done.length), loss });
      done = text;
    };
    messages.forEach((message, i) => {
      if (message.role !== 'assistant') return;
      extend(this.render(messages.slice(0, i), true), false);
      extend(this.render(messages.slice(0, i + 1), false), true);
    });
    extend(this.render(messages, false), false);
    return segments;
  }
}

/** Tokens of a row and, per token, whether it is predicted with loss (1) or not (0). */
export interface TokenizedRow {
  ids: number[];
  loss: number[];
}

/**
 * Tokenizes segments one by one (so no token straddles a prompt/completion border); the BOS token
 * is prepended when the tokenizer has one and the text does not already start with it.
 */
export function tokenizeSegments(segments: Segment[], tokenizer: TextTokenizer, trainOnInputs: boolean): TokenizedRow {
  const ids: number[] = [];
  const loss: number[] = [];
  const first = segments[0]?.text ?? '';
  if (tokenizer.bosTokenId !== null && !(tokenizer.bosToken && first.startsWith(tokenizer.bosToken))) {
    ids.push(tokenizer.bosTokenId);
    loss.push(0);
  }
  for (const segment of segments) {
    const part = tokenizer.encode(segment.text, { addSpecialTokens: false });
    ids.push(...part);
    for (let i = 0; i < part.length; i++) loss.push(segment.loss || trainOnInputs ? 1 : 0);
  }
  // The first token is never predicted.
  if (loss.length > 0) loss[0] = 0;
  return { ids, loss };
}
