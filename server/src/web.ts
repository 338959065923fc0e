import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

/** Where the built console lives: web/dist beside server/ (the same from src/ under tsx and from dist/). */
export const DEFAULT_WEB_DIR = fileURLToPath(new URL('../../web/dist', import.meta.url));

const PLACEHOLDER = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Keel</title></head>
<body><h1>Keel</h1><p>The API is running. The web console has not been built: run <code>npm run build</code>.</p>
<p><a href="/docs">API documentation</a> · <a href="/health">health</a></p></body></html>`;

/**
 * Serves the web console at `/`. Page navigations (GET, Accept: text/html) to paths that are not
 * files get index.html so the console's client-side routes work on reload; everything else falls
 * through to the JSON 404.
 */
export async function installWebConsole(app: FastifyInstance, webDir: string | undefined): Promise<{ serveIndex: (url: string, accept: string | undefined) => boolean }> {
  const dir = webDir ?? DEFAULT_WEB_DIR;
  const hasIndex = existsSync(path.join(dir, 'index.html'));
  if (!hasIndex) {
    app.get('/', { schema: { hide: true }, config: { rateLimit: false } }, async (_req, reply) => reply.type('text/html; charset=utf-8').send(PLACEHOLDER));
    return { serveIndex: () => false };
  }
  await app.register(fastifyStatic, { root: dir, prefix: '/', wildcard: false, index: ['index.html'], maxAge: '1h', immutable: false });
  return {
    serveIndex: (url, accept) => !url.startsWith('/api/') && !path.extname(url.split('?')[0] ?? '') && (accept ?? '').includes('text/html'),
  };
}
