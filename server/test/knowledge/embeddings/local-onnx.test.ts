import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createEmbedder, EmbeddingsError, TRANSFORMERS_PACKAGE, type EmbeddingsConfig } from '../../../src/modules/knowledge/embeddings/index.js';
import { createLocalOnnxEmbedder } from '../../../src/modules/knowledge/embeddings/local-onnx.js';
import { createLogger } from '../../../src/platform/logger.js';

/**
 * The local ONNX embedder cannot run here: @huggingface/transformers is not installed (it pulls
 * onnxruntime binaries) and no model files are reachable. What is tested: the clear error when the
 * package is missing, and the plumbing around the pipeline with a stand-in module.
 */

const logger = createLogger({ logLevel: 'silent' });
const root = mkdtempSync(path.join(tmpdir(), 'keel-local-onnx-'));
const modelDir = path.join(root, 'all-MiniLM-L6-v2');
afterAll(() => rmSync(root, { recursive: true, force: true }));

const config: EmbeddingsConfig = { kind: 'local', localModelDir: modelDir, batchSize: 2, timeoutMs: 30_000 };

async function installed(): Promise<boolean> {
  try {
    await import(TRANSFORMERS_PACKAGE);
    return true;
  } catch {
    return false;
  }
}
const transformersInstalled = await installed();

describe('local ONNX embedder', () => {
  it.skipIf(transformersInstalled)('fails on first use, and in check(), telling the operator to install the package', async () => {
    const embedder = createEmbedder(config, logger)!;
    expect(embedder.model).toBe('local:all-MiniLM-L6-v2');
    const err = await embedder.embed(['hello']).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(EmbeddingsError);
    expect(err).toMatchObject({ code: 'embeddings_unavailable', reason: 'not_installed', statusCode: 503 });
    expect((err as Error).message).toContain(`npm install ${TRANSFORMERS_PACKAGE}`);
    const check = await embedder.check();
    expect(check.ok).toBe(false);
    expect(check.detail).toContain(`npm install ${TRANSFORMERS_PACKAGE}`);
  });

  it('reports a package that is present but broken (or misses a dependency) as such', async () => {
    const broken = createLocalOnnxEmbedder(config, logger, () => Promise.reject(new Error('libonnxruntime.so: cannot open shared object file')));
    await expect(broken.embed(['x'])).rejects.toMatchObject({ reason: 'not_installed', message: expect.stringContaining('could not be loaded (libonnxruntime.so') as string });
    const dependency = Object.assign(new Error(`Cannot find package 'onnxruntime-node' imported from /app/node_modules/${TRANSFORMERS_PACKAGE}/dist/transformers.node.mjs`), { code: 'ERR_MODULE_NOT_FOUND' });
    const incomplete = createLocalOnnxEmbedder(config, logger, () => Promise.reject(dependency));
    await expect(incomplete.embed(['x'])).rejects.toMatchObject({ message: expect.stringContaining("could not be loaded (Cannot find package 'onnxruntime-node'") as string });
  });

  it('drives a feature-extraction pipeline over the model directory, in batches, files only', async () => {
    const calls: Array<{ task: string; model: string; options: unknown; batch?: string[] }> = [];
    const env = { localModelPath: '', allowRemoteModels: true, allowLocalModels: false };
    const fakeModule = {
      env,
      pipeline: async (task: string, model: string, options: unknown) => {
        calls.push({ task, model, options });
        return async (texts: string[], opts: unknown) => {
          calls.push({ task: 'run', model, options: opts, batch: texts });
          // Two dimensions per text, deliberately not unit length: [i+1, 0]
          return { dims: [texts.length, 2], data: new Float32Array(texts.flatMap((t) => [t.length, t.length])) };
        };
      },
    };
    const embedder = createLocalOnnxEmbedder({ ...config, model: 'minilm' }, logger, async () => fakeModule);
    expect(embedder.model).toBe('local:minilm');
    const vectors = await embedder.embed(['a', 'bb', 'ccc']);
    expect(vectors.map((v) => Array.from(v).map((x) => Number(x.toFixed(4))))).toEqual([[0.7071, 0.7071], [0.7071, 0.7071], [0.7071, 0.7071]]);
    expect(embedder.dimensions).toBe(2);
    expect(env).toEqual({ localModelPath: `${root}${path.sep}`, allowRemoteModels: false, allowLocalModels: true });
    expect(calls).toEqual([
      { task: 'feature-extraction', model: 'all-MiniLM-L6-v2', options: { local_files_only: true } },
      { task: 'run', model: 'all-MiniLM-L6-v2', options: { pooling: 'mean', normalize: true }, batch: ['a', 'bb'] },
      { task: 'run', model: 'all-MiniLM-L6-v2', options: { pooling: 'mean', normalize: true }, batch: ['ccc'] },
    ]);
    await expect(embedder.embed(['x'], { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'embeddings_aborted' });
  });
});
