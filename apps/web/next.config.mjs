// @ts-check
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
};

export default nextConfig;
