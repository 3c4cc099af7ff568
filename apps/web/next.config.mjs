// @ts-check
/**
 * Security headers on every page and proxied answer (docs/security.md): no framing, no MIME
 * sniffing, no referrer to other sites. Next's own inline bootstrap scripts and styles need
 * 'unsafe-inline'; everything else comes from this origin only (the API is reached through the proxy).
 */
const SECURITY_HEADERS = [
  { key: 'X-Content-Type-Options', value: 'nosniff' },
  { key: 'X-Frame-Options', value: 'DENY' },
  {
    key: 'Content-Security-Policy',
    value:
      "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; " +
      "connect-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'; form-action 'self'",
  },
  { key: 'Referrer-Policy', value: 'same-origin' },
  { key: 'Cross-Origin-Opener-Policy', value: 'same-origin' },
  { key: 'Permissions-Policy', value: 'camera=(), microphone=(), geolocation=()' },
];

/**
 * The console is a client of apps/api; the browser never talks to the API directly but through
 * app/api/[...path]/route.ts, which reads EXPERTUNE_API_URL at request time (a rewrite would
 * freeze the URL into the build).
 *
 * @type {import('next').NextConfig}
 */
const nextConfig = {
  // Inside build/, which the repository's git, eslint and prettier ignores already cover.
  distDir: 'build',
  typedRoutes: false,
  reactStrictMode: true,
  poweredByHeader: false,
  // gzip would buffer the job event stream (text/event-stream) that the proxy passes through.
  compress: false,
  images: { unoptimized: true },
  // The monorepo root has its own lockfile; tracing from here would warn about it.
  outputFileTracingRoot: new URL('../..', import.meta.url).pathname,
  async headers() {
    return [{ source: '/:path*', headers: SECURITY_HEADERS }];
  },
};

export default nextConfig;
