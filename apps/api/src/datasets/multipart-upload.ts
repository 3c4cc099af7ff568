/**
 * Streams one multipart file to a temporary file under a byte limit (busboy), with the form's
 * text fields. Over the limit: 413, the partial file removed. Nothing is buffered in memory.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';

import busboy from 'busboy';
import type { Request } from 'express';

import { ApiException } from '../common/api-exception.js';

/** How long the parser may take to finish after the last byte of the body arrived. */
const PARSER_GRACE_MS = 3000;

export interface UploadedFile {
  /** Temporary path; the caller moves or deletes it. */
  tempPath: string;
  /** The client's file name, reduced to its last segment (never used as a path). */
  filename: string;
  bytes: number;
  fields: Record<string, string>;
}

export async function receiveUpload(request: Request, tempDir: string, limitBytes: number): Promise<UploadedFile> {
  if (!/^multipart\/form-data/i.test(request.headers['content-type'] ?? ''))
    throw new ApiException(
      415,
      'unsupported_media_type',
      'upload the dataset as multipart/form-data with a "file" field',
    );
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > limitBytes + 64 * 1024)
    throw new ApiException(413, 'payload_too_large', `upload is ${declared} bytes; the limit is ${limitBytes}`, 'file');
  await mkdir(tempDir, { recursive: true });
  const tempPath = path.join(tempDir, `upload-${randomBytes(8).toString('hex')}.partial`);

  return new Promise<UploadedFile>((resolve, reject) => {
    // No prototype: a field named "__proto__" stays a field.
    const fields = Object.create(null) as Record<string, string>;
    let file: Promise<{ filename: string; bytes: number; truncated: boolean }> | null = null;
    let fileStream: (NodeJS.ReadableStream & { destroy(): void }) | null = null;
    /** Settles when the temporary file's descriptor is closed (an open still under way creates the file). */
    let sinkClosed: Promise<void> | null = null;
    let settled = false;
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: request.headers,
        limits: { fileSize: limitBytes, files: 1, fields: 20, fieldSize: 4096 },
      });
    } catch (error) {
      reject(new ApiException(400, 'bad_request', `malformed multipart body: ${(error as Error).message}`));
      return;
    }
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      request.unpipe(parser);
      request.resume();
      reject(error);
      // The temporary file is removed once its writer has stopped: removed earlier, a write still
      // under way would create it again (a partial file left behind, found by fuzzing).
      fileStream?.destroy();
      void (sinkClosed ?? Promise.resolve()).then(() => unlink(tempPath)).catch(() => undefined);
    };
    parser.on('field', (name, value) => {
      fields[name] = value;
    });
    parser.on('file', (name, stream, info) => {
      // After a failure busboy may still emit a buffered part: writing it would leave a file behind.
      if (name !== 'file' || file || settled) {
        // Drained and ignored; a body cut short errors this stream too, and an error with no
        // listener is an uncaught exception that ends the API process (found by fuzzing).
        stream.on('error', () => undefined);
        stream.resume();
        return;
      }
      let bytes = 0;
      let truncated = false;
      fileStream = stream;
      stream.on('data', (chunk: Buffer) => (bytes += chunk.length));
      stream.on('limit', () => (truncated = true));
      const sink = createWriteStream(tempPath);
      sinkClosed = new Promise((resolve) => sink.once('close', () => resolve()));
      file = pipeline(stream, sink).then(() => ({
        filename: path.basename(String(info.filename ?? 'dataset.jsonl').replace(/\\/g, '/')) || 'dataset.jsonl',
        bytes,
        truncated,
      }));
      // Handled here as well: after a parser error nothing else awaits it, and an unhandled
      // rejection would take the API process down (found by fuzzing).
      file.catch((error: unknown) =>
        fail(
          // A file system error is ours (500); anything else is the body ending mid-file.
          (error as NodeJS.ErrnoException).syscall !== undefined
            ? error
            : new ApiException(400, 'bad_request', `malformed multipart body: ${(error as Error).message}`),
        ),
      );
    });
    parser.on('error', (error: Error) =>
      fail(new ApiException(400, 'bad_request', `malformed multipart body: ${error.message}`)),
    );
    parser.on('close', () => {
      if (!file) {
        fail(new ApiException(422, 'invalid_parameter', 'the form has no "file" field', 'file'));
        return;
      }
      file.then(
        (received) => {
          if (received.truncated)
            fail(
              new ApiException(
                413,
                'payload_too_large',
                `the file is larger than the upload limit of ${limitBytes} bytes`,
                'file',
              ),
            );
          else if (!settled) {
            settled = true;
            resolve({ tempPath, filename: received.filename, bytes: received.bytes, fields });
          }
        },
        (error) => fail(error),
      );
    });
    // busboy answers every body it reads to the end with close or error, except some whose opening
    // delimiter is broken (found by fuzzing, docs/fuzzing.md): once the whole body has been handed
    // over, a parser still open after PARSER_GRACE_MS will never finish, and the client gets a 400
    // instead of waiting forever.
    let parserClosed = false;
    parser.once('close', () => (parserClosed = true));
    request.once('end', () => {
      const timer = setTimeout(() => {
        if (!parserClosed)
          fail(new ApiException(400, 'bad_request', 'malformed multipart body: the parser did not reach its end'));
      }, PARSER_GRACE_MS);
      timer.unref();
    });
    request.pipe(parser);
  });
}
