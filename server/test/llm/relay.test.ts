import { describe, expect, it } from 'vitest';
import { UpstreamError } from '../../src/modules/llm/providers/provider.js';
import { SseSplitter } from '../../src/modules/llm/providers/sse-events.js';
import { StreamTally, WireRelay } from '../../src/modules/llm/relay.js';

/**
 * The byte relay of `/v1/chat/completions` streams: events split as bytes arrive, passed on as the
 * upstream's own bytes (one write per read), with Keel's checks — `[DONE]`, error events, the usage
 * chunk — done by scanning rather than re-serializing.
 */

const chunk = (fields: Record<string, unknown>): string => JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'upstream-model-2025-01-01', system_fingerprint: 'fp_x', ...fields });
const content = (text: string): string => `data: ${chunk({ choices: [{ index: 0, delta: { content: text }, finish_reason: null }], usage: null })}\n\n`;
const ROLE = `data: ${chunk({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }], usage: null })}\n\n`;
const FINISH = `data: ${chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }], usage: null })}\n\n`;
const USAGE = `data: ${chunk({ choices: [], usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 } })}\n\n`;
const DONE = 'data: [DONE]\n\n';
const bytes = (text: string): Buffer => Buffer.from(text, 'utf8');

function relay(includeUsage = true): { relay: WireRelay; tally: StreamTally } {
  const tally = new StreamTally(performance.now());
  return { relay: new WireRelay(tally, includeUsage, 'default (upstream)'), tally };
}

describe('SseSplitter', () => {
  it('splits at blank lines, keeps a partial event for the next read, and reads data across line endings', () => {
    const splitter = new SseSplitter();
    const first = splitter.push(bytes('data: {"a":1}\n\ndata: {"b"'));
    expect(first.blocks.map((b) => b.data)).toEqual(['{"a":1}']);
    const second = splitter.push(bytes(':2}\r\n\r\n: keep-alive\n\nevent: x\ndata: one\ndata:two\n\ndata: [DONE]\n'));
    expect(second.blocks.map((b) => b.data)).toEqual(['{"b":2}', undefined, 'one\ntwo']);
    // the block offsets cover the event's bytes, blank line included
    const b = second.blocks[0]!;
    expect(second.buffer.toString('utf8', b.start, b.end)).toBe('data: {"b":2}\r\n\r\n');
    expect(splitter.push(bytes('\n')).blocks.map((x) => x.data)).toEqual(['[DONE]']);
  });

  it('waits when a read ends between the two halves of a CRLF blank line', () => {
    const splitter = new SseSplitter();
    expect(splitter.push(bytes('data: x\r\n\r')).blocks).toEqual([]);
    expect(splitter.push(bytes('\n')).blocks.map((x) => x.data)).toEqual(['x']);
  });

  it('keeps multi-byte characters split across reads intact', () => {
    const splitter = new SseSplitter();
    const all = bytes('data: {"t":"héllo ✓"}\n\n');
    expect(splitter.push(all.subarray(0, 12)).blocks).toEqual([]);
    expect(splitter.push(all.subarray(12)).blocks.map((x) => x.data)).toEqual(['{"t":"héllo ✓"}']);
  });
});

describe('WireRelay', () => {
  it('passes the upstream\'s bytes on unchanged, one buffer per read, holding back a partial event', () => {
    const { relay: r } = relay();
    const text = ROLE + content('Hel') + content('lo');
    const cut = text.length - 10;
    const out = r.push(bytes(text.slice(0, cut)));
    expect(out?.toString()).toBe(ROLE + content('Hel'));
    expect(r.push(bytes(text.slice(cut)))?.toString()).toBe(content('lo'));
  });

  it('keeps the upstream\'s own fields (model, system_fingerprint) — nothing is re-serialized', () => {
    const { relay: r } = relay();
    const out = r.push(bytes(content('x')))!.toString();
    expect(out).toContain('"model":"upstream-model-2025-01-01"');
    expect(out).toContain('"system_fingerprint":"fp_x"');
  });

  it('stops at the upstream\'s [DONE] (Keel ends the stream itself) and ignores what follows', () => {
    const { relay: r } = relay();
    expect(r.push(bytes(FINISH + DONE + content('late')))?.toString()).toBe(FINISH);
    expect(r.done).toBe(true);
    expect(r.push(bytes(content('later')))).toBeUndefined();
  });

  it('captures the usage chunk; drops it when the client did not ask for it', () => {
    const asked = relay(true);
    expect(asked.relay.push(bytes(FINISH + USAGE + DONE))?.toString()).toBe(FINISH + USAGE);
    expect(asked.tally.reported).toEqual({ prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 });

    const notAsked = relay(false);
    // the events around it are written in one piece of two parts
    expect(notAsked.relay.push(bytes(content('a') + USAGE + content('b')))?.toString()).toBe(content('a') + content('b'));
    expect(notAsked.tally.reported).toEqual({ prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 });
  });

  it('"usage": null in every chunk is not a report', () => {
    const { relay: r, tally } = relay();
    r.push(bytes(ROLE + content('a') + FINISH));
    expect(tally.reported).toBeUndefined();
  });

  it('notes the first content, and estimates from the relayed text only when no usage came', () => {
    const { relay: r, tally } = relay();
    r.push(bytes(ROLE));
    expect(tally.ttft).toBeNull();
    r.push(bytes(content('Hello ') + content('world')));
    expect(tally.ttft).not.toBeNull();
    expect(tally.completionText()).toBe('Hello world');
  });

  it('an error event from the upstream becomes Keel\'s own error, never the provider\'s body', () => {
    const { relay: r } = relay();
    const secret = 'sk-provider-secret';
    let caught: unknown;
    try {
      r.push(bytes(content('a') + `data: {"error":{"message":"bad key ${secret}","type":"server_error"}}\n\n`));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(UpstreamError);
    expect((caught as UpstreamError).code).toBe('upstream_error');
    expect((caught as UpstreamError).message).not.toContain(secret);
  });

  it('text that merely mentions "error" is relayed', () => {
    const { relay: r } = relay();
    expect(r.push(bytes(content('error') + content('"error": none')))?.toString()).toBe(content('error') + content('"error": none'));
  });

  it('a malformed event fails the stream instead of reaching the client', () => {
    for (const bad of ['data: {"id":"x","choices":[\n\n', 'data: not json\n\n', 'data: [1,2]\n\n']) {
      const { relay: r } = relay();
      expect(() => r.push(bytes(bad)), bad).toThrow(/malformed/);
    }
  });

  it('drops data-less blocks (the upstream\'s comments and keep-alives; Keel sends its own heartbeats)', () => {
    const { relay: r } = relay();
    expect(r.push(bytes(': OPENROUTER PROCESSING\n\n' + content('x') + ': ping\n\n'))?.toString()).toBe(content('x'));
    expect(r.push(bytes(': ping\n\n'))).toBeUndefined();
  });
});
