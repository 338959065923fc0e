import { Type } from 'typebox';
import { LIMIT_NAMES, MAX_RANGE_DAYS } from './usage.service.js';

const DateOrDateTime = (description: string) => Type.String({ maxLength: 40, description, examples: ['2026-11-22', '2026-11-22T08:00:00Z'] });

const range = {
  from: Type.Optional(DateOrDateTime('Start, inclusive: a date (UTC midnight) or a date-time with its offset. Default: 30 days before `to`.')),
  to: Type.Optional(DateOrDateTime(`End, exclusive; a date includes that whole UTC day. Default: the end of today (UTC). At most ${MAX_RANGE_DAYS} days after \`from\`.`)),
};

export const UsageQuery = Type.Object({
  ...range,
  group_by: Type.Optional(Type.Union([Type.Literal('day'), Type.Literal('model'), Type.Literal('endpoint')], { default: 'day', description: '`day` lists every UTC day of the range, oldest first (days without use as zeros); `model` and `endpoint` list what was used, costliest first.' })),
});

export const AdminUsageQuery = Type.Object({
  ...range,
  group_by: Type.Optional(Type.Union([Type.Literal('day'), Type.Literal('model'), Type.Literal('endpoint'), Type.Literal('user')], { default: 'day', description: 'As for `GET /usage`, plus `user` (costliest first, with each user\'s e-mail).' })),
  user_id: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'Only this user\'s usage; `limits` then reports theirs.' })),
});

export const LogsQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
  cursor: Type.Optional(Type.String({ maxLength: 64, description: '`next_cursor` of the previous page.' })),
});

const Amounts = {
  requests: Type.Integer(),
  prompt_tokens: Type.Integer(),
  completion_tokens: Type.Integer(),
  cost_usd: Type.Number(),
};

const SeriesItem = Type.Object({
  group: Type.String({ description: 'The UTC day (`YYYY-MM-DD`), model, endpoint or user id.' }),
  ...Amounts,
  email: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'With `group_by=user` only.' })),
});

const LimitStatus = Type.Object({
  limit: Type.Number(),
  used: Type.Number({ description: 'Settled use in the current window.' }),
  reserved: Type.Number({ description: 'Held by requests still running; released or turned into use when they end.' }),
  remaining: Type.Number({ description: '`limit − used − reserved`, never below 0.' }),
  resets_at: Type.String({ description: 'When the window (UTC minute, day or calendar month) ends.' }),
  scope: Type.Union([Type.Literal('user'), Type.Literal('api_key')], { description: 'The user\'s limit, or the calling API key\'s; when both set one, the tighter is shown.' }),
});

export const UsageSummary = Type.Object({
  from: Type.String(),
  to: Type.String(),
  group_by: Type.String(),
  totals: Type.Object(Amounts),
  series: Type.Array(SeriesItem),
  limits: Type.Object(Object.fromEntries(LIMIT_NAMES.map((name) => [name, Type.Optional(LimitStatus)])), {
    description: 'Each limit that applies, by name (absent: unlimited). Over one, LLM calls answer 429 `limit_exceeded` with `Retry-After`.',
  }),
});

export const UsageLog = Type.Object({
  id: Type.String(),
  endpoint: Type.String(),
  provider: Type.String(),
  model: Type.String(),
  prompt_tokens: Type.Integer(),
  completion_tokens: Type.Integer(),
  total_tokens: Type.Integer(),
  estimated: Type.Boolean({ description: 'True when the token counts are Keel\'s estimate, not the provider\'s.' }),
  cost_usd: Type.Number(),
  latency_ms: Type.Integer(),
  ttft_ms: Type.Union([Type.Integer(), Type.Null()], { description: 'Time to the first token, for streams.' }),
  status: Type.String({ description: '`ok`, `error` or `aborted` (the client went away or cancelled).' }),
  error_code: Type.Union([Type.String(), Type.Null()]),
  api_key_id: Type.Union([Type.String(), Type.Null()]),
  device_id: Type.Union([Type.String(), Type.Null()]),
  request_id: Type.Union([Type.String(), Type.Null()]),
  message_id: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String(),
});
