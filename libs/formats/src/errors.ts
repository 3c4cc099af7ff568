/**
 * Error classes of this library. Each message names the file (when known) and what was wrong,
 * because they reach users who only see the message.
 */

/** A safetensors file or buffer that breaks the format, or a bad write request. */
export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
  constructor(
    message: string,
    /** The file (or a description of the buffer), when known. */
    readonly source?: string,
    /** The tensor concerned, when the problem is about one tensor. */
    readonly tensor?: string,
  ) {
    super(message);
  }
}

/** A model directory whose weights cannot be opened, or do not match the config. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
  constructor(
    message: string,
    readonly source?: string,
  ) {
    super(message);
  }
}

/** A config.json that is not a supported Llama-family configuration. */
export class ModelConfigError extends Error {
  override name = 'ModelConfigError';
  constructor(
    message: string,
    readonly source?: string,
    /** The config.json field concerned, when there is one. */
    readonly field?: string,
  ) {
    super(message);
  }
}

/** A tokenizer that cannot be loaded, or a bad encode/decode request. */
export class TokenizerError extends Error {
  override name = 'TokenizerError';
  constructor(
    message: string,
    readonly source?: string,
  ) {
    super(message);
  }
}
