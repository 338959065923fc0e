import path from 'node:path';
import type { Logger } from 'pino';
import { abortedError, EmbeddingsError, type Embedder, type EmbedOptions } from './embedder.js';
import type { EmbeddingsConfig } from './embeddings.config.js';
import { normalize } from './vectors.js';

/** The optional package; not a dependency of Keel because it installs onnxruntime binaries. */
export const TRANSFORMERS_PACKAGE = '@huggingface/transformers';

/** The little of transformers.js (v3) used here, typed locally so Keel compiles without it. */
interface Transformers {
  env: { localModelPath: string; allowRemoteModels: boolean; allowLocalModels: boolean };
  pipeline(task: 'feature-extraction', model: string, options: { local_files_only: boolean }): Promise<FeatureExtractor>;
}
type FeatureExtractor = (texts: string[], options: { pooling: 'mean'; normalize: boolean }) => Promise<{ dims: number[]; data: ArrayLike<number> }>;

/**
 * Embeds with a local ONNX model through transformers.js: a feature-extraction pipeline over
 * EMBEDDINGS_LOCAL_MODEL_DIR (files only, nothing downloaded), mean pooling, normalised. The package
 * is imported on first use; when it is missing, `embed` and `check` fail with an error telling the
 * operator to install it.
 *
 * Untested against a real model: the package (and any model files) cannot be installed where Keel's
 * tests run, so only the "package missing" path is covered. `importModule` is for that test.
 */
export function createLocalOnnxEmbedder(
  config: EmbeddingsConfig,
  logger: Logger,
  importModule: (specifier: string) => Promise<unknown> = (specifier) => import(specifier),
): Embedder {
  if (config.kind !== 'local' || !config.localModelDir) throw new Error('createLocalOnnxEmbedder needs a local embeddings config with localModelDir');
  const dir = config.localModelDir;
  const name = config.model ?? path.basename(dir);
  let dimensions: number | undefined;
  let loading: Promise<FeatureExtractor> | undefined;

  async function load(): Promise<FeatureExtractor> {
    let mod: Transformers;
    try {
      mod = (await importModule(TRANSFORMERS_PACKAGE)) as Transformers;
    } catch (err) {
      const message = String((err as Error).message);
      // Only the package itself missing; a missing dependency of it (onnxruntime-node) is reported as is.
      const missing = (err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && message.includes(`'${TRANSFORMERS_PACKAGE}'`);
      throw new EmbeddingsError('not_installed', missing
        ? `EMBEDDINGS_LOCAL_MODEL_DIR is set but ${TRANSFORMERS_PACKAGE} is not installed: run \`npm install ${TRANSFORMERS_PACKAGE}\` in Keel's directory, or use an embeddings server instead.`
        : `${TRANSFORMERS_PACKAGE} could not be loaded (${message}).`, 503, false);
    }
    mod.env.localModelPath = `${path.dirname(dir)}${path.sep}`;
    mod.env.allowLocalModels = true;
    mod.env.allowRemoteModels = false;
    try {
      const extractor = await mod.pipeline('feature-extraction', path.basename(dir), { local_files_only: true });
      logger.info({ model: name }, 'local embeddings model loaded');
      return extractor;
    } catch (err) {
      throw new EmbeddingsError('not_installed', `The local embeddings model in ${dir} could not be loaded (${(err as Error).message}).`, 503, false);
    }
  }

  function extractor(): Promise<FeatureExtractor> {
    loading ??= load().catch((err: unknown) => {
      loading = undefined;
      throw err;
    });
    return loading;
  }

  const embedder: Embedder = {
    model: `local:${name}`,
    get dimensions() {
      return dimensions;
    },
    async embed(texts: readonly string[], options: EmbedOptions = {}): Promise<Float32Array[]> {
      if (texts.length === 0) return [];
      const extract = await extractor();
      const vectors: Float32Array[] = [];
      for (let i = 0; i < texts.length; i += config.batchSize) {
        // The ONNX run itself cannot be interrupted: the signal is honoured between batches.
        if (options.signal?.aborted) throw abortedError();
        const batch = texts.slice(i, i + config.batchSize);
        const output = await extract(batch, { pooling: 'mean', normalize: true });
        const width = output.dims[output.dims.length - 1] ?? 0;
        if (width === 0 || output.data.length !== width * batch.length) {
          throw new EmbeddingsError('bad_response', `The local embeddings model returned ${output.dims.join('×')} values for ${batch.length} texts.`, 502, false);
        }
        for (let j = 0; j < batch.length; j++) {
          const v = new Float32Array(width);
          for (let k = 0; k < width; k++) v[k] = output.data[j * width + k] ?? 0;
          vectors.push(normalize(v));
        }
        dimensions = width;
      }
      return vectors;
    },
    async check() {
      try {
        await embedder.embed(['keel doctor']);
        return { ok: true, detail: `local model ${name} embeds (${dimensions} dimensions)` };
      } catch (err) {
        return { ok: false, detail: (err as Error).message };
      }
    },
  };
  return embedder;
}
