import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type, type Static } from 'typebox';
import { AppError, errorBody } from '../../platform/errors.js';
import type { ModuleContext } from '../../platform/module.js';
import { ANY_CREDENTIAL, AUTHED_ERRORS, errorResponses } from '../../platform/schemas.js';
import { abortOnClose, awaitOrOpen, SseStream } from '../../platform/sse.js';
import type { LlmGateway } from './llm.service.js';
import type { ChatMessage, ChatRequest, EmbeddingsRequest } from './providers/provider.js';

const DONE = 'data: [DONE]\n\n';

const tags = ['llm'];
const errors = { ...AUTHED_ERRORS, ...errorResponses(502, 503, 504) };

const Message = Type.Object({
  role: Type.String({ minLength: 1, maxLength: 32 }),
  content: Type.Optional(Type.Union([Type.String(), Type.Array(Type.Object({}, { additionalProperties: true })), Type.Null()])),
}, { additionalProperties: true });

/** OpenAI's body; fields Keel does not look at (tools, response_format, …) pass through. */
const ChatBody = Type.Object({
  model: Type.String({ minLength: 1, maxLength: 200 }),
  messages: Type.Array(Message, { minItems: 1, maxItems: 2000 }),
  stream: Type.Optional(Type.Boolean()),
  max_tokens: Type.Optional(Type.Integer({ minimum: 1 })),
  max_completion_tokens: Type.Optional(Type.Integer({ minimum: 1 })),
}, { additionalProperties: true });

const EmbeddingsBody = Type.Object({
  model: Type.String({ minLength: 1, maxLength: 200 }),
  input: Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: 2048 }), Type.Array(Type.Integer()), Type.Array(Type.Array(Type.Integer()))]),
}, { additionalProperties: true });

const PresetBody = Type.Object({
  prompt: Type.Optional(Type.String({ minLength: 1 })),
  messages: Type.Optional(Type.Array(Message, { maxItems: 2000 })),
  params: Type.Optional(Type.Object({}, { additionalProperties: true, description: 'OpenAI parameters (temperature, max_tokens, …) over the preset\'s.' })),
});
const PresetParams = Type.Object({ preset: Type.String({ minLength: 1, maxLength: 64 }) });

const UsageSchema = Type.Object({ prompt_tokens: Type.Integer(), completion_tokens: Type.Integer(), total_tokens: Type.Integer(), estimated: Type.Boolean() });

function presetRequest(gateway: LlmGateway, request: FastifyRequest): ChatRequest {
  const { preset } = request.params as Static<typeof PresetParams>;
  gateway.preset(preset);
  const body = request.body as Static<typeof PresetBody>;
  const messages = [...((body.messages ?? []) as ChatMessage[]), ...(body.prompt ? [{ role: 'user', content: body.prompt }] : [])];
  if (messages.length === 0) throw AppError.badRequest('Send a prompt or messages.', [{ field: 'prompt', message: 'is required when messages is empty' }]);
  return { ...(body.params ?? {}), model: preset, messages };
}

/** The OpenAI-compatible endpoints and seed 000's `/llm/{preset}` routes, all behind scope `llm`. */
export async function llmRoutes(app: FastifyInstance, ctx: ModuleContext, gateway: LlmGateway, heartbeatMs: number): Promise<void> {
  const llm = ctx.guards.scope('llm');

  app.get('/v1/models', {
    preHandler: llm,
    schema: { tags, summary: 'Configured models, aliases and presets (OpenAI list format)', security: ANY_CREDENTIAL, response: { ...errors } },
  }, async () => gateway.listModels());

  app.post('/v1/chat/completions', {
    preHandler: llm,
    schema: {
      tags, summary: 'OpenAI-compatible chat completions, streamed (SSE) or not',
      description: 'Any official OpenAI SDK works with a Keel access token or API key as its API key. `model` is a model id, an alias, `provider/model`, or a preset name. With `stream: true`, chunks are relayed as they arrive; ask for `stream_options.include_usage` to get the usage chunk (estimated by Keel when the upstream sends none).',
      security: ANY_CREDENTIAL, body: ChatBody, response: { ...errors },
    },
  }, async (request, reply) => {
    const body = request.body as ChatRequest;
    const meta = { endpoint: '/v1/chat/completions', requestId: String(request.id) };
    if (!body.stream) {
      const { completion } = await gateway.complete(request.principal!, body, { ...meta, signal: abortOnClose(reply), meterInBackground: true });
      return completion;
    }
    const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
    const sse = new SseStream(reply, heartbeatMs);
    const stream = await gateway.wireStream(request.principal!, body, { ...meta, signal: sse.clientGone }, includeUsage);
    await relay(stream, sse, heartbeatMs, async (piece) => {
      if (Buffer.isBuffer(piece)) return sse.sendRaw(piece);
      if (piece.choices.length === 0 && piece.usage && !includeUsage) return;
      await sse.send(JSON.stringify(piece));
    }, async () => {
      // Known as the stream ends; the usage row is written afterwards, off the client's path.
      const usage = await stream.usage;
      // The upstream reported none: Keel's estimate takes the usage chunk's place.
      const estimate = includeUsage && usage.estimated
        ? `data: ${JSON.stringify({ id: `chatcmpl-usage-${String(request.id)}`, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: stream.model, choices: [], usage: { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens, total_tokens: usage.total_tokens } })}\n\n`
        : '';
      sse.end(estimate + DONE);
    }, async (err) => {
      await sse.send(JSON.stringify(errorBody(err.statusCode, err.code, err.message, String(request.id))));
    });
    return reply;
  });

  app.post('/v1/embeddings', {
    preHandler: llm,
    schema: { tags, summary: 'OpenAI-compatible embeddings', security: ANY_CREDENTIAL, body: EmbeddingsBody, response: { ...errors } },
  }, async (request, reply) => gateway.embeddings(request.principal!, request.body as EmbeddingsRequest, { endpoint: '/v1/embeddings', requestId: String(request.id), signal: abortOnClose(reply), meterInBackground: true }));

  app.post('/llm/:preset', {
    preHandler: llm,
    schema: {
      tags, summary: 'Run a preset (code, general, reasoning, …) on a prompt or messages', security: ANY_CREDENTIAL, params: PresetParams, body: PresetBody,
      response: { 200: Type.Object({ output: Type.String(), model: Type.String(), usage: UsageSchema, cost_usd: Type.Number() }), ...errors },
    },
  }, async (request, reply) => {
    const { preset } = request.params as Static<typeof PresetParams>;
    const { completion, usage } = await gateway.complete(request.principal!, presetRequest(gateway, request), { endpoint: `/llm/${preset}`, requestId: String(request.id), signal: abortOnClose(reply), meterInBackground: true });
    const output = completion.choices.map((c) => (typeof c.message.content === 'string' ? c.message.content : '')).join('');
    const { cost_usd, ...counts } = usage;
    return { output, model: completion.model, usage: counts, cost_usd };
  });

  app.post('/llm/:preset/stream', {
    preHandler: llm,
    schema: {
      tags, summary: 'Run a preset, streamed as server-sent events',
      description: 'Events: `delta` `{text}` as text arrives, then `done` `{usage, cost_usd}`, or `error` `{code, message}`. Comment lines (`: keep-alive`) are heartbeats.',
      security: ANY_CREDENTIAL, params: PresetParams, body: PresetBody, produces: ['text/event-stream'], response: { ...errors },
    },
  }, async (request, reply) => {
    const { preset } = request.params as Static<typeof PresetParams>;
    const sse = new SseStream(reply, heartbeatMs);
    const stream = await gateway.stream(request.principal!, presetRequest(gateway, request), { endpoint: `/llm/${preset}/stream`, requestId: String(request.id), signal: sse.clientGone });
    await relay(stream, sse, heartbeatMs, async (chunk) => {
      const text = chunk.choices.map((c) => (typeof c.delta.content === 'string' ? c.delta.content : '')).join('');
      if (text) await sse.send(JSON.stringify({ text }), 'delta');
    }, async () => {
      const { cost_usd, ...usage } = await stream.usage;
      await sse.send(JSON.stringify({ usage, cost_usd }), 'done');
    }, async (err) => {
      await sse.send(JSON.stringify({ code: err.code, message: err.message }), 'error');
    });
    return reply;
  });
}

/**
 * Pumps a gateway stream into SSE. A failure before anything was sent becomes an ordinary HTTP error
 * (status and JSON body); after that it becomes an error event and the stream ends — never a hang.
 */
async function relay<Piece>(
  stream: AsyncIterable<Piece>,
  sse: SseStream,
  heartbeatMs: number,
  onChunk: (piece: Piece) => Promise<void>,
  onDone: () => Promise<void>,
  onError: (err: AppError) => Promise<void>,
): Promise<void> {
  const iterator = stream[Symbol.asyncIterator]();
  try {
    let next = await awaitOrOpen(iterator.next(), sse, heartbeatMs);
    while (!next.done) {
      if (sse.clientGone.aborted) break;
      await onChunk(next.value);
      // Until an event was sent (the upstream's first chunks may carry no text), waiting still opens the
      // stream after heartbeatMs, so the client gets headers and heartbeats instead of silence.
      next = await (sse.isOpen ? iterator.next() : awaitOrOpen(iterator.next(), sse, heartbeatMs));
    }
    if (!sse.clientGone.aborted) await onDone();
  } catch (err) {
    if (!sse.isOpen) throw err;
    if (!sse.clientGone.aborted) await onError(err instanceof AppError ? err : new AppError('internal_error', 'The stream failed.', 500));
  } finally {
    await iterator.return?.();
    sse.end();
  }
}
