/**
 * ArtifactStorage on an S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2, …): the shared
 * store when the API and the workers run on different machines. Requests are plain HTTP signed
 * with SigV4 by aws4fetch (one small dependency instead of the AWS SDK's hundred packages, whose
 * next releases also drop Node 20).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat as fileStat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { AwsClient } from 'aws4fetch';

import {
  type ArtifactStorage,
  dataDir,
  LocalStorage,
  type StorageStat,
  storageKeySegments,
  type StoredObject,
} from './storage.js';

export interface S3StorageOptions {
  bucket: string;
  /** e.g. http://minio:9000; default https://s3.<region>.amazonaws.com. */
  endpoint?: string;
  region?: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** Keys are stored under `<prefix>/` so that several deployments can share a bucket. */
  prefix?: string;
  /** `<endpoint>/<bucket>/<key>` (MinIO and most self-hosted stores) instead of `<bucket>.<host>/<key>`. */
  forcePathStyle?: boolean;
  /** Attempts of a request that failed with a network error or a 5xx (default 3). */
  attempts?: number;
  /** Keys per ListObjectsV2 page (S3's maximum and default: 1000). */
  listPageSize?: number;
  /**
   * How long a request may wait for S3's answer (default 30 s), plus 1 s per MiB it uploads: a store
   * that hangs fails the request (and is retried) instead of holding a worker or a request forever.
   */
  timeoutMs?: number;
}

/** What S3 answered when it was not what we asked for; `status` is the HTTP status. */
export class S3RequestError extends Error {
  constructor(
    readonly method: string,
    readonly key: string,
    readonly status: number,
    readonly body: string,
  ) {
    super(`S3 ${method} ${JSON.stringify(key)}: HTTP ${status}${s3ErrorCode(body) ? ` ${s3ErrorCode(body)}` : ''}`);
    this.name = 'S3RequestError';
  }
}

/** get() of a key with no object; `code` is ENOENT like LocalStorage's, so callers need one check. */
export class StorageObjectNotFoundError extends Error {
  readonly code = 'ENOENT';
  constructor(readonly key: string) {
    super(`ENOENT: no object stored under ${JSON.stringify(key)}`);
    this.name = 'StorageObjectNotFoundError';
  }
}

export class S3Storage implements ArtifactStorage {
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: AwsClient;
  private readonly baseUrl: string;
  private readonly attempts: number;
  private readonly listPageSize: number;
  private readonly timeoutMs: number;

  constructor(options: S3StorageOptions) {
    const region = options.region || 'us-east-1';
    const endpoint = (options.endpoint || `https://s3.${region}.amazonaws.com`).replace(/\/+$/, '');
    const pathStyle = options.forcePathStyle ?? Boolean(options.endpoint);
    this.bucket = options.bucket;
    this.prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '');
    if (this.prefix) storageKeySegments(this.prefix);
    const url = new URL(endpoint);
    this.baseUrl = pathStyle
      ? `${url.origin}${url.pathname.replace(/\/+$/, '')}/${encodeURIComponent(this.bucket)}`
      : `${url.protocol}//${this.bucket}.${url.host}${url.pathname.replace(/\/+$/, '')}`;
    this.client = new AwsClient({
      accessKeyId: options.accessKeyId,
      secretAccessKey: options.secretAccessKey,
      sessionToken: options.sessionToken,
      service: 's3',
      region,
      retries: 0, // retried here, where a stream body can be opened again
    });
    this.attempts = Math.max(1, options.attempts ?? 3);
    this.listPageSize = options.listPageSize ?? 1000;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  async put(key: string, data: Buffer | Readable): Promise<StoredObject> {
    const objectKey = this.objectKey(key);
    if (Buffer.isBuffer(data)) {
      const sha256 = createHash('sha256').update(data).digest('hex');
      await this.send('PUT', key, objectKey, { body: () => data, bytes: data.length, sha256 });
      return { bytes: data.length, sha256 };
    }
    // A stream is spooled to a temporary file first: S3 needs the length up front, and a signed
    // payload hash lets the store refuse a body that was damaged on the way.
    const spool = path.join(tmpdir(), `expertune-s3-${randomBytes(6).toString('hex')}.partial`);
    try {
      const hash = createHash('sha256');
      const measure = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          hash.update(chunk);
          callback(null, chunk);
        },
      });
      await pipeline(data, measure, createWriteStream(spool, { flags: 'wx' }));
      const { size } = await fileStat(spool);
      const sha256 = hash.digest('hex');
      await this.send('PUT', key, objectKey, {
        body: () => Readable.toWeb(createReadStream(spool)) as ReadableStream,
        bytes: size,
        sha256,
      });
      return { bytes: size, sha256 };
    } finally {
      await rm(spool, { force: true });
    }
  }

  get(key: string): Readable {
    const objectKey = this.objectKey(key);
    const out = new PassThrough();
    this.send('GET', key, objectKey, { allow404: true }).then(
      (response) => {
        if (response.status === 404) {
          out.destroy(new StorageObjectNotFoundError(key));
          return;
        }
        pipeline(Readable.fromWeb(response.body as import('node:stream/web').ReadableStream), out).catch((error) =>
          out.destroy(error as Error),
        );
      },
      (error: Error) => out.destroy(error),
    );
    return out;
  }

  async stat(key: string): Promise<StorageStat | null> {
    const response = await this.send('HEAD', key, this.objectKey(key), { allow404: true });
    if (response.status === 404) return null;
    const modified = response.headers.get('last-modified');
    return {
      bytes: Number(response.headers.get('content-length') ?? 0),
      modifiedAt: modified ? new Date(modified) : new Date(0),
    };
  }

  async delete(key: string): Promise<boolean> {
    // DELETE answers 204 whether or not the object existed; HEAD first to tell the caller.
    if (!(await this.stat(key))) return false;
    await this.send('DELETE', key, this.objectKey(key));
    return true;
  }

  async list(prefix: string): Promise<string[]> {
    const listed = `${this.objectKey(prefix)}/`;
    const strip = this.prefix ? this.prefix.length + 1 : 0;
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const query = new URLSearchParams({ 'list-type': '2', prefix: listed, 'max-keys': String(this.listPageSize) });
      if (token) query.set('continuation-token', token);
      const response = await this.send('GET', prefix, '', { query });
      const xml = await response.text();
      for (const match of xml.matchAll(/<Contents>[\s\S]*?<Key>([\s\S]*?)<\/Key>[\s\S]*?<\/Contents>/g))
        keys.push(decodeXml(match[1]!).slice(strip));
      token = /<IsTruncated>true<\/IsTruncated>/.test(xml)
        ? decodeXml(/<NextContinuationToken>([\s\S]*?)<\/NextContinuationToken>/.exec(xml)?.[1] ?? '')
        : undefined;
    } while (token);
    return keys.sort();
  }

  /** The object's key in the bucket; checks `key` by the same rules as LocalStorage. */
  private objectKey(key: string): string {
    const segments = storageKeySegments(key);
    return this.prefix ? `${this.prefix}/${segments.join('/')}` : segments.join('/');
  }

  private async send(
    method: 'GET' | 'PUT' | 'HEAD' | 'DELETE',
    key: string,
    objectKey: string,
    options: {
      body?: () => NonNullable<RequestInit['body']>;
      bytes?: number;
      sha256?: string;
      query?: URLSearchParams;
      allow404?: boolean;
    } = {},
  ): Promise<Response> {
    const encodedKey = objectKey ? `/${objectKey.split('/').map(encodeURIComponent).join('/')}` : '/';
    const url = `${this.baseUrl}${encodedKey}${options.query ? `?${options.query}` : ''}`;
    let lastError: unknown;
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      try {
        const headers: Record<string, string> = {};
        if (options.sha256) headers['x-amz-content-sha256'] = options.sha256;
        if (options.bytes !== undefined) headers['content-length'] = String(options.bytes);
        // Until the answer's headers arrive; a download's body then streams as long as it takes.
        const limitMs = this.timeoutMs + Math.ceil((options.bytes ?? 0) / 1024);
        const controller = new AbortController();
        const timer = setTimeout(
          () => controller.abort(new Error(`S3 ${method} ${JSON.stringify(key)}: no answer within ${limitMs} ms`)),
          limitMs,
        );
        let response: Response;
        try {
          const request = await this.client.sign(url, {
            method,
            headers,
            body: options.body?.(),
            signal: controller.signal,
            ...(options.body ? { duplex: 'half' } : {}),
          } as RequestInit);
          response = await fetch(request);
        } finally {
          clearTimeout(timer);
        }
        if (response.ok || (options.allow404 && response.status === 404)) return response;
        const text = await response.text().catch(() => '');
        lastError = new S3RequestError(method, key, response.status, text);
        if (response.status < 500) break;
      } catch (error) {
        lastError = error;
      }
      await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** attempt));
    }
    throw lastError;
  }
}

function s3ErrorCode(body: string): string | null {
  return /<Code>([^<]*)<\/Code>/.exec(body)?.[1] ?? null;
}

function decodeXml(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_all, entity: string) => {
    if (entity[0] === '#')
      return String.fromCodePoint(
        entity[1] === 'x' ? Number.parseInt(entity.slice(2), 16) : Number.parseInt(entity.slice(1), 10),
      );
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[entity]!;
  });
}

/**
 * The storage the environment asks for: `EXPERTUNE_STORAGE=s3` with `EXPERTUNE_S3_BUCKET`,
 * `EXPERTUNE_S3_ENDPOINT`, `EXPERTUNE_S3_REGION` (or `AWS_REGION`), `EXPERTUNE_S3_PREFIX`,
 * `EXPERTUNE_S3_FORCE_PATH_STYLE` and the usual `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
 * `AWS_SESSION_TOKEN`; otherwise (`local`, the default) files under `localRoot`.
 */
export function createArtifactStorage(
  env: NodeJS.ProcessEnv = process.env,
  localRoot: string = dataDir(env),
): ArtifactStorage {
  const kind = (env.EXPERTUNE_STORAGE || 'local').toLowerCase();
  if (kind === 'local') return new LocalStorage(localRoot);
  if (kind !== 's3')
    throw new Error(`EXPERTUNE_STORAGE=${JSON.stringify(env.EXPERTUNE_STORAGE)}: expected local or s3`);
  const missing = ['EXPERTUNE_S3_BUCKET', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'].filter((name) => !env[name]);
  if (missing.length > 0) throw new Error(`EXPERTUNE_STORAGE=s3 needs ${missing.join(', ')}`);
  const pathStyle = env.EXPERTUNE_S3_FORCE_PATH_STYLE;
  return new S3Storage({
    bucket: env.EXPERTUNE_S3_BUCKET!,
    endpoint: env.EXPERTUNE_S3_ENDPOINT || undefined,
    region: env.EXPERTUNE_S3_REGION || env.AWS_REGION || undefined,
    accessKeyId: env.AWS_ACCESS_KEY_ID!,
    secretAccessKey: env.AWS_SECRET_ACCESS_KEY!,
    sessionToken: env.AWS_SESSION_TOKEN || undefined,
    prefix: env.EXPERTUNE_S3_PREFIX || undefined,
    forcePathStyle: pathStyle === undefined || pathStyle === '' ? undefined : /^(1|true|yes)$/i.test(pathStyle),
  });
}
