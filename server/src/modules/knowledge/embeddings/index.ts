import type { Logger } from 'pino';
import type { Embedder } from './embedder.js';
import type { EmbeddingsConfig } from './embeddings.config.js';
import { createLocalOnnxEmbedder } from './local-onnx.js';
import { createOpenAICompatibleEmbedder } from './openai-compatible.js';

export { EmbeddingsError, type Embedder, type EmbeddingsFailure, type EmbedOptions } from './embedder.js';
export { EMBEDDINGS_VARIABLES, EmbeddingsConfigError, readEmbeddingsConfig, type EmbeddingsConfig } from './embeddings.config.js';
export { TRANSFORMERS_PACKAGE } from './local-onnx.js';

/**
 * The embedder the configuration names, or undefined for `none` (search stays lexical). Creating one
 * makes no request: a local model is loaded, and a server first contacted, on the first `embed` or `check`.
 */
export function createEmbedder(config: EmbeddingsConfig, logger: Logger): Embedder | undefined {
  switch (config.kind) {
    case 'none':
      return undefined;
    case 'openai':
      return createOpenAICompatibleEmbedder(config, logger);
    case 'local':
      return createLocalOnnxEmbedder(config, logger);
  }
}
