import { countTextTokens as countTokens } from '../../platform/tokens.js';
import type { ChatMessage } from './providers/provider.js';

/**
 * Token estimates with the o200k tokenizer, for budgets before a call and for metering when an
 * upstream reports no usage (rows are then marked `estimated`). Per-message overhead follows
 * OpenAI's accounting (about 4 tokens per message plus 3 to prime the reply).
 */
export function estimatePromptTokens(messages: readonly ChatMessage[]): number {
  let total = 3;
  for (const m of messages) total += 4 + countTokens(textOf(m.content)) + (m.tool_calls ? countTokens(JSON.stringify(m.tool_calls)) : 0);
  return total;
}

export function estimateTextTokens(text: string): number {
  return text ? countTokens(text) : 0;
}

/** The text of a message's content, whether a string or content parts. */
export function textOf(content: ChatMessage['content']): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((p) => (typeof p.text === 'string' ? p.text : '')).join('\n');
}
