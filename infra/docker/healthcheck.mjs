#!/usr/bin/env node
// The images' HEALTHCHECK, in plain Node (the runtime images have no curl):
//   healthcheck.mjs http URL    healthy when URL answers 2xx or 3xx within 4 s
//   healthcheck.mjs worker      healthy when this container reaches Postgres (DATABASE_URL) and
//                               Redis (REDIS_URL): a worker has no HTTP port, and one that cannot
//                               reach either can neither claim nor report a job
import { connect } from 'node:net';

const TIMEOUT_MS = 4000;

async function http(url) {
  const response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(TIMEOUT_MS) });
  await response.body?.cancel();
  if (response.status >= 400) throw new Error(`${url}: HTTP ${response.status}`);
}

function tcp(label, urlText, defaultPort) {
  const url = new URL(urlText);
  const port = Number(url.port || defaultPort);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: url.hostname, port, timeout: TIMEOUT_MS });
    socket.once('connect', () => {
      socket.end();
      resolve();
    });
    socket.once('timeout', () => {
      socket.destroy();
      reject(new Error(`${label} ${url.hostname}:${port}: timed out`));
    });
    socket.once('error', (error) => reject(new Error(`${label} ${url.hostname}:${port}: ${error.message}`)));
  });
}

const [mode, target] = process.argv.slice(2);
try {
  if (mode === 'http' && target) await http(target);
  else if (mode === 'worker')
    await Promise.all([
      tcp('postgres', process.env.DATABASE_URL || 'postgres://127.0.0.1:5432', 5432),
      tcp('redis', process.env.REDIS_URL || 'redis://127.0.0.1:6379', 6379),
    ]);
  else throw new Error('usage: healthcheck.mjs http URL | worker');
  process.exit(0);
} catch (error) {
  console.error(`unhealthy: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
