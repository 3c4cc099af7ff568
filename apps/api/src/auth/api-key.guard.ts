/**
 * Bearer API keys (libs/db `verifyApiKey`, scrypt-hashed at rest) on every route but the public
 * ones. GET needs the read scope, anything else launch; launch and admin imply read.
 */
import { createHash } from 'node:crypto';

import { type ApiKey, verifyApiKey } from '@expertune/db';
import { type CanActivate, type ExecutionContext, Inject, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { DataSource } from 'typeorm';

import { ApiException } from '../common/api-exception.js';
import { API_CONFIG, type ApiConfig } from '../config/api-config.js';
import { DATA_SOURCE } from '../database/database.module.js';
import type { CallerKeyRequest } from './caller-key.decorator.js';
import { IS_PUBLIC } from './public.decorator.js';
import { FixedWindowRateLimiter } from './rate-limiter.js';

// scrypt costs ~20 ms a check; a key verified in the last few seconds is trusted without it
// (a revocation takes effect within this time).
const VERIFIED_TTL_MS = 10_000;

@Injectable()
export class ApiKeyGuard implements CanActivate {
  private readonly verified = new Map<string, { key: ApiKey; until: number }>();
  private readonly limiter: FixedWindowRateLimiter;

  constructor(
    @Inject(Reflector) private readonly reflector: Reflector,
    @Inject(DATA_SOURCE) private readonly dataSource: DataSource,
    @Inject(API_CONFIG) config: ApiConfig,
  ) {
    this.limiter = new FixedWindowRateLimiter(config.rateLimitPerMinute);
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const isPublic = this.reflector.getAllAndOverride<boolean>(IS_PUBLIC, [context.getHandler(), context.getClass()]);
    if (isPublic) return true;
    const request = context.switchToHttp().getRequest<CallerKeyRequest>();
    const header = request.headers.authorization ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match) throw new ApiException(401, 'invalid_api_key', 'missing API key: send "Authorization: Bearer <key>"');
    const key = await this.verify(match[1]!);
    if (!key) throw new ApiException(401, 'invalid_api_key', 'the API key is unknown, revoked or expired');

    const needed = request.method === 'GET' || request.method === 'HEAD' ? 'read' : 'launch';
    const scopes = new Set<string>(key.scopes);
    const allowed = scopes.has('admin') || scopes.has(needed) || (needed === 'read' && scopes.has('launch'));
    if (!allowed)
      throw new ApiException(
        403,
        'insufficient_scope',
        `this API key lacks the ${needed} scope needed for ${request.method}`,
      );

    request.apiKeyId = key.id;
    const retryAfter = this.limiter.take(key.id);
    if (retryAfter !== null)
      throw new ApiException(
        429,
        'rate_limit_exceeded',
        `too many requests for this API key; retry in ${retryAfter} s`,
        null,
        {
          retry_after: retryAfter,
        },
      );
    return true;
  }

  private async verify(presented: string): Promise<ApiKey | null> {
    const digest = createHash('sha256').update(presented).digest('hex');
    const cached = this.verified.get(digest);
    if (cached && cached.until > Date.now()) return cached.key;
    const key = await verifyApiKey(this.dataSource, presented);
    if (key) {
      if (this.verified.size > 10_000) this.verified.clear();
      // Never trusted past its own expiry.
      const until = Math.min(Date.now() + VERIFIED_TTL_MS, key.expiresAt?.getTime() ?? Infinity);
      this.verified.set(digest, { key, until });
    }
    return key;
  }
}
