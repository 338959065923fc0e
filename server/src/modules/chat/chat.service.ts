import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { DB } from '../../db/schema.js';
import type { Principal } from '../../platform/auth.js';
import { AppError } from '../../platform/errors.js';
import type { PubSub } from '../../platform/pubsub.js';
import { estimateTextTokens, type LlmGateway, type MeteredUsage } from '../llm/llm.service.js';
import { chatRepository as repo, type ConversationRow, type MessageRow } from './chat.repository.js';
import { Generation, type Citation } from './generation.js';

/** What the knowledge module provides for grounded chat (issue #6 fills it). */
export interface Retriever {
  retrieve(principal: Principal, query: string, collectionIds: readonly string[], limit: number): Promise<Array<Omit<Citation, 'n'>>>;
}

export interface ConversationView {
  id: string;
  title: string | null;
  preset: string | null;
  model: string | null;
  system_prompt: string | null;
  collection_ids: string[];
  created_at: string;
  updated_at: string;
  last_activity_at: string;
}

export interface MessageView {
  id: string;
  conversation_id: string;
  role: 'user' | 'assistant';
  content: string;
  status: string;
  model: string | null;
  usage: { prompt_tokens: number; completion_tokens: number } | null;
  citations: Citation[] | null;
  error_code: string | null;
  created_at: string;
  completed_at: string | null;
}

export interface ConversationInput {
  title?: string | null;
  preset?: string | null;
  model?: string | null;
  system_prompt?: string | null;
  collection_ids?: string[];
}

export interface ChatOptions {
  /** Longest user message, in characters. */
  maxMessageChars: number;
  /** The preset used when a conversation names neither preset nor model. */
  defaultPreset: string;
  /** Ask this preset for a short title after a conversation's first reply (else: its first line). */
  titlePreset?: string;
}

/** The channel on which a user's clients hear about changes to their conversations. */
export const userChannel = (userId: string): string => `chat:user:${userId}`;

const COMPLETION_RESERVE = 1024;
const TITLE_CHARS = 60;

/**
 * Conversations and messages per user, and generations: the user's message is stored before the model
 * is called; the assistant's when the generation ends (complete, aborted or failed, with the text so
 * far). Context is the recent history that fits the model's window, counted in tokens. Each generation
 * is metered once by the gateway, linked to the assistant message.
 */
export class ChatService {
  private readonly running = new Map<string, Generation>();
  private retriever: Retriever | undefined;

  constructor(
    private readonly db: Kysely<DB>,
    private readonly gateway: LlmGateway,
    private readonly pubsub: PubSub | undefined,
    private readonly logger: Logger,
    private readonly options: ChatOptions,
  ) {}

  /** Grounds conversations with collections in the knowledge module's search (it calls this at start). */
  useRetriever(retriever: Retriever): void {
    this.retriever = retriever;
  }

  async createConversation(principal: Principal, input: ConversationInput): Promise<ConversationView> {
    if (input.preset && input.model) throw AppError.badRequest('Give a preset or a model, not both.', [{ field: 'model', message: 'conflicts with preset' }]);
    if (input.preset || input.model) this.gateway.contextWindow((input.preset ?? input.model)!); // 404 for unknown names
    const row = await repo.insertConversation(this.db, principal.userId, {
      title: input.title ?? null, preset: input.preset ?? null, model: input.model ?? null, system_prompt: input.system_prompt ?? null,
      collection_ids: JSON.stringify(input.collection_ids ?? []),
    }, new Date().toISOString());
    return toConversationView(row);
  }

  async listConversations(principal: Principal, limit: number, cursor?: string): Promise<{ items: ConversationView[]; next_cursor: string | null }> {
    const after = cursor ? decodeCursor(cursor) : undefined;
    const rows = await repo.conversations(this.db, principal.userId, limit, after);
    const items = rows.slice(0, limit).map(toConversationView);
    const last = items[items.length - 1];
    return { items, next_cursor: rows.length > limit && last ? encodeCursor(last.last_activity_at, last.id) : null };
  }

  async getConversation(principal: Principal, id: string): Promise<ConversationView> {
    return toConversationView(await this.owned(principal, id));
  }

  async updateConversation(principal: Principal, id: string, changes: ConversationInput): Promise<ConversationView> {
    const current = await this.owned(principal, id);
    const preset = changes.preset !== undefined ? changes.preset : current.preset;
    const model = changes.model !== undefined ? changes.model : current.model;
    if (preset && model) throw AppError.badRequest('Give a preset or a model, not both.', [{ field: 'model', message: 'conflicts with preset' }]);
    if ((changes.preset ?? changes.model)) this.gateway.contextWindow((changes.preset ?? changes.model)!);
    const row = await repo.updateConversation(this.db, principal.userId, id, {
      ...(changes.title !== undefined ? { title: changes.title } : {}),
      ...(changes.preset !== undefined ? { preset: changes.preset } : {}),
      ...(changes.model !== undefined ? { model: changes.model } : {}),
      ...(changes.system_prompt !== undefined ? { system_prompt: changes.system_prompt } : {}),
      ...(changes.collection_ids !== undefined ? { collection_ids: JSON.stringify(changes.collection_ids) } : {}),
    }, new Date().toISOString());
    if (!row) throw AppError.notFound('Conversation');
    await this.announce(principal.userId, id);
    return toConversationView(row);
  }

  async deleteConversation(principal: Principal, id: string): Promise<void> {
    for (const g of this.running.values()) if (g.conversationId === id && g.userId === principal.userId) g.cancel();
    if (!(await repo.deleteConversation(this.db, principal.userId, id))) throw AppError.notFound('Conversation');
    await this.announce(principal.userId, id);
  }

  /** A page of history, oldest → newest within the page; `next_cursor` pages further back. */
  async listMessages(principal: Principal, conversationId: string, limit: number, before?: string): Promise<{ items: MessageView[]; next_cursor: string | null }> {
    await this.owned(principal, conversationId);
    const rows = await repo.messagesBefore(this.db, conversationId, limit + 1, before);
    const page = rows.slice(0, limit);
    return { items: page.reverse().map((m) => this.toMessageView(m)), next_cursor: rows.length > limit ? page[0]!.id : null };
  }

  async message(principal: Principal, conversationId: string, messageId: string): Promise<MessageView> {
    const row = await repo.message(this.db, principal.userId, conversationId, messageId);
    if (!row) throw AppError.notFound('Message');
    return this.toMessageView(row);
  }

  /**
   * Stores the user's message, starts the assistant's generation and returns it once the model has
   * been called (so a budget or model error is an ordinary error). The generation runs on its own; a
   * non-resumable one is cancelled when its last client detaches.
   */
  async send(principal: Principal, conversationId: string, content: string, opts: { resumable: boolean; requestId: string }): Promise<{ userMessage: MessageView; assistantMessage: MessageView; generation: Generation }> {
    if (content.length > this.options.maxMessageChars) throw new AppError('payload_too_large', `A message can have at most ${this.options.maxMessageChars} characters.`, 413);
    if (!content.trim()) throw AppError.badRequest('The message is empty.', [{ field: 'content', message: 'is empty' }]);
    const conversation = await this.owned(principal, conversationId);
    const modelName = conversation.model ?? conversation.preset ?? this.options.defaultPreset;
    const window = this.gateway.contextWindow(modelName);
    const now = new Date().toISOString();
    const history = await this.history(conversationId, window, conversation.system_prompt, content);

    const { userRow, assistantRow } = await this.db.transaction().execute(async (trx) => {
      const userRow = await repo.insertMessage(trx, { conversation_id: conversationId, user_id: principal.userId, role: 'user', content, status: 'complete', model: null, prompt_tokens: null, completion_tokens: null, citations: null, error_code: null, created_at: now, completed_at: now });
      const assistantRow = await repo.insertMessage(trx, { conversation_id: conversationId, user_id: principal.userId, role: 'assistant', content: '', status: 'generating', model: modelName, prompt_tokens: null, completion_tokens: null, citations: null, error_code: null, created_at: now });
      await repo.updateConversation(trx, principal.userId, conversationId, { last_activity_at: now, ...(conversation.title ? {} : { title: titleFrom(content) }) }, now);
      return { userRow, assistantRow };
    });
    await this.announce(principal.userId, conversationId);

    const generation = new Generation(assistantRow.id, conversationId, principal.userId, opts.resumable);
    const citations = await this.ground(principal, conversation, content);
    const messages = [
      ...(conversation.system_prompt || citations.length > 0 ? [{ role: 'system', content: systemPrompt(conversation.system_prompt, citations) }] : []),
      ...history,
      { role: 'user', content },
    ];
    let stream;
    try {
      stream = await this.gateway.stream(principal, { model: modelName, messages }, { endpoint: 'chat', requestId: opts.requestId, signal: generation.controller.signal, messageId: assistantRow.id });
    } catch (err) {
      await repo.finishMessage(this.db, assistantRow.id, { content: '', status: 'failed', prompt_tokens: null, completion_tokens: null, citations: null, error_code: err instanceof AppError ? err.code : 'internal_error', completed_at: new Date().toISOString() });
      await this.announce(principal.userId, conversationId);
      throw err;
    }
    if (citations.length > 0) generation.setCitations(citations);
    this.running.set(generation.messageId, generation);
    const firstExchange = history.length === 0 && !conversation.title;
    void this.run(generation, stream, citations).then(() => (firstExchange && this.options.titlePreset ? this.generateTitle(principal, conversationId, content, generation, opts.requestId) : undefined));
    return { userMessage: this.toMessageView(userRow), assistantMessage: this.toMessageView(assistantRow), generation };
  }

  /** The running generation of a message, for clients that attach to it; undefined once it has ended. */
  generation(principal: Principal, messageId: string): Generation | undefined {
    const g = this.running.get(messageId);
    return g && g.userId === principal.userId ? g : undefined;
  }

  /** Cancels a running generation of the caller's; false when there is none. */
  cancel(principal: Principal, messageId: string): boolean {
    const g = this.generation(principal, messageId);
    if (!g) return false;
    g.cancel();
    return true;
  }

  /** Stops every running generation and waits until each is stored (server shutdown). */
  async shutdown(): Promise<void> {
    const running = [...this.running.values()];
    for (const g of running) g.cancel();
    await Promise.allSettled(running.map((g) => g.settled));
  }

  private async run(generation: Generation, stream: AsyncIterable<{ choices: Array<{ delta: { content?: unknown } }> }> & { metered: Promise<MeteredUsage> }, citations: Citation[]): Promise<void> {
    let status: 'complete' | 'aborted' | 'failed' = 'complete';
    let error: { code: string; message: string } | undefined;
    try {
      for await (const chunk of stream) {
        for (const choice of chunk.choices) if (typeof choice.delta.content === 'string') generation.push(choice.delta.content);
      }
      if (generation.controller.signal.aborted) status = 'aborted';
    } catch (err) {
      status = generation.controller.signal.aborted ? 'aborted' : 'failed';
      if (status === 'failed') error = { code: err instanceof AppError ? err.code : 'internal_error', message: err instanceof AppError ? err.message : 'The generation failed.' };
    }
    let usage: MeteredUsage | undefined;
    try {
      usage = await stream.metered;
    } catch {
      usage = undefined;
    }
    try {
      await repo.finishMessage(this.db, generation.messageId, {
        content: generation.content, status, prompt_tokens: usage?.prompt_tokens ?? null, completion_tokens: usage?.completion_tokens ?? null,
        citations: citations.length > 0 ? JSON.stringify(citations) : null, error_code: error?.code ?? (status === 'aborted' ? 'aborted' : null), completed_at: new Date().toISOString(),
      });
    } catch (err) {
      this.logger.error({ err, message_id: generation.messageId }, 'assistant message not stored');
    }
    this.running.delete(generation.messageId);
    generation.end(status, error);
    generation.stored();
    await this.announce(generation.userId, generation.conversationId);
  }

  /**
   * Replaces the first-line title with one the title preset writes from the first exchange. Metered
   * like any call; a failure (budget, upstream) keeps the first-line title.
   */
  private async generateTitle(principal: Principal, conversationId: string, content: string, generation: Generation, requestId: string): Promise<void> {
    try {
      const { completion } = await this.gateway.complete(principal, {
        model: this.options.titlePreset!,
        max_tokens: 24,
        messages: [
          { role: 'system', content: 'Write a title of at most six words for this conversation. Answer with the title only, without quotes.' },
          { role: 'user', content: `${content.slice(0, 2000)}\n\n${generation.content.slice(0, 2000)}` },
        ],
      }, { endpoint: 'chat.title', requestId, signal: AbortSignal.timeout(30_000), messageId: generation.messageId });
      const text = completion.choices[0]?.message.content;
      const title = typeof text === 'string' ? text.trim().replace(/^["'“]+|["'”.]+$/g, '').slice(0, TITLE_CHARS) : '';
      if (!title) return;
      await repo.updateConversation(this.db, principal.userId, conversationId, { title }, new Date().toISOString());
      await this.announce(principal.userId, conversationId);
    } catch (err) {
      this.logger.info({ code: err instanceof AppError ? err.code : 'internal_error', conversation_id: conversationId }, 'title not generated');
    }
  }

  /** The newest messages that fit the model's window next to the new message and a completion. */
  private async history(conversationId: string, window: number, systemPromptText: string | null, content: string) {
    let budget = window - COMPLETION_RESERVE - estimateTextTokens(content) - (systemPromptText ? estimateTextTokens(systemPromptText) : 0) - 50;
    const picked: Array<{ role: string; content: string }> = [];
    let before: string | undefined;
    for (;;) {
      const page = await repo.messagesBefore(this.db, conversationId, 50, before);
      if (page.length === 0) break;
      for (const m of page) {
        before = m.id;
        if (m.role === 'assistant' && (m.status === 'generating' || !m.content)) continue;
        budget -= estimateTextTokens(m.content) + 4;
        if (budget < 0) return picked.reverse();
        picked.push({ role: m.role, content: m.content });
      }
      if (page.length < 50) break;
    }
    return picked.reverse();
  }

  private async ground(principal: Principal, conversation: ConversationRow, query: string): Promise<Citation[]> {
    const collections = JSON.parse(conversation.collection_ids) as string[];
    if (collections.length === 0 || !this.retriever) return [];
    const chunks = await this.retriever.retrieve(principal, query, collections, 5);
    return chunks.map((c, i) => ({ n: i + 1, ...c }));
  }

  private async owned(principal: Principal, id: string): Promise<ConversationRow> {
    const row = await repo.conversation(this.db, principal.userId, id);
    if (!row) throw AppError.notFound('Conversation');
    return row;
  }

  private async announce(userId: string, conversationId: string): Promise<void> {
    await this.pubsub?.publish(userChannel(userId), { type: 'conversation.updated', conversation_id: conversationId });
  }

  private toMessageView(m: MessageRow): MessageView {
    const live = m.status === 'generating' ? this.running.get(m.id) : undefined;
    return {
      id: m.id, conversation_id: m.conversation_id, role: m.role, content: live ? live.content : m.content, status: m.status, model: m.model,
      usage: m.prompt_tokens !== null && m.completion_tokens !== null ? { prompt_tokens: m.prompt_tokens, completion_tokens: m.completion_tokens } : null,
      citations: m.citations ? (JSON.parse(m.citations) as Citation[]) : null, error_code: m.error_code, created_at: m.created_at, completed_at: m.completed_at,
    };
  }
}

function toConversationView(c: ConversationRow): ConversationView {
  return { id: c.id, title: c.title, preset: c.preset, model: c.model, system_prompt: c.system_prompt, collection_ids: JSON.parse(c.collection_ids) as string[], created_at: c.created_at, updated_at: c.updated_at, last_activity_at: c.last_activity_at };
}

function titleFrom(content: string): string {
  const line = content.trim().split('\n')[0]!.trim();
  return line.length > TITLE_CHARS ? `${line.slice(0, TITLE_CHARS - 1)}…` : line;
}

function systemPrompt(base: string | null, citations: Citation[]): string {
  if (citations.length === 0) return base ?? '';
  const sources = citations.map((c) => `[${c.n}] ${c.filename}\n${c.text}`).join('\n\n');
  return `${base ? `${base}\n\n` : ''}Answer from the sources below when they are relevant and cite them with their numbers, like [1]. If they do not contain the answer, say so.\n\n${sources}`;
}

const encodeCursor = (at: string, id: string): string => Buffer.from(`${at}|${id}`).toString('base64url');
function decodeCursor(cursor: string): { at: string; id: string } {
  const [at, id] = Buffer.from(cursor, 'base64url').toString().split('|');
  if (!at || !id) throw AppError.badRequest('The cursor is not valid.', [{ field: 'cursor', message: 'is not valid' }]);
  return { at, id };
}
