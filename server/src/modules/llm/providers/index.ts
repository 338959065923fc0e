import type { LlmConfig } from '../llm.config.js';
import { createAnthropicProvider } from './anthropic.js';
import { createOpenAICompatibleProvider } from './openai-compatible.js';
import type { Provider } from './provider.js';

/** One adapter per configured provider, by name. */
export function createProviders(config: LlmConfig): Map<string, Provider> {
  const providers = new Map<string, Provider>();
  for (const p of config.providers.values()) {
    providers.set(p.name, p.kind === 'anthropic'
      ? createAnthropicProvider({ name: p.name, baseUrl: p.baseUrl, apiKey: p.apiKey, resilience: p.resilience, headers: { ...p.headers } })
      : createOpenAICompatibleProvider(p));
  }
  return providers;
}
