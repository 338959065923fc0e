import { SseSplitter } from './providers/sse-events.js';
import { UpstreamError, type ChatChunk, type Usage } from './providers/provider.js';

/**
 * What metering needs from a stream, gathered as it passes: the usage the upstream reported, when the
 * first content arrived, and the completion's text for a tokenizer estimate when no usage comes.
 */
export class StreamTally {
  reported: Usage | undefined;
  /** Milliseconds from the call's start to the first content (text or tool call); null until then. */
  ttft: number | null = null;
  private text = '';
  /** Relayed events kept unparsed: their text is only needed when the upstream reports no usage. */
  private readonly unread: string[] = [];

  constructor(private readonly started: number) {}

  /** A parsed chunk (Keel serializes it itself). */
  chunk(chunk: ChatChunk): void {
    if (chunk.usage) this.reported = chunk.usage;
    const piece = pieceOf(chunk);
    if (piece && this.ttft === null) this.ttft = performance.now() - this.started;
    this.text += piece;
  }

  /** An event relayed as the upstream's bytes; `parsed` when it had to be parsed anyway. */
  relayed(data: string, parsed: ChatChunk | undefined): void {
    if (parsed?.usage) this.reported = parsed.usage;
    if (this.ttft === null && parsed && pieceOf(parsed)) this.ttft = performance.now() - this.started;
    this.unread.push(data);
  }

  /** The completion's text (content and tool calls), for an estimate. */
  completionText(): string {
    let text = this.text;
    for (const data of this.unread) {
      try {
        text += pieceOf(JSON.parse(data) as ChatChunk);
      } catch {
        // Relayed as it came; what cannot be read adds nothing to the estimate.
      }
    }
    return text;
  }
}

function pieceOf(chunk: ChatChunk): string {
  let piece = '';
  if (!Array.isArray(chunk.choices)) return piece;
  for (const choice of chunk.choices) {
    const delta = choice?.delta;
    if (!delta) continue;
    if (typeof delta.content === 'string') piece += delta.content;
    if (delta.tool_calls) piece += JSON.stringify(delta.tool_calls);
  }
  return piece;
}

// Prefilters: a JSON string cannot hold an unescaped quote, so these only match keys (or an exact
// string value); a match is confirmed by parsing that one event.
const ERROR_KEY = '"error"';
const USAGE_KEY = '"usage"';
const CONTENT = /"content"\s*:\s*"(?!")|"tool_calls"/;

/** Whether `"usage"` is followed by an object (`"usage":null`, which OpenAI puts in every chunk, is not). */
function hasUsageObject(data: string): boolean {
  for (let at = data.indexOf(USAGE_KEY); at !== -1; at = data.indexOf(USAGE_KEY, at + USAGE_KEY.length)) {
    let i = at + USAGE_KEY.length;
    while (isSpace(data.charCodeAt(i))) i++;
    if (data.charCodeAt(i) !== 0x3a /* : */) continue;
    i++;
    while (isSpace(data.charCodeAt(i))) i++;
    if (data.charCodeAt(i) === 0x7b /* { */) return true;
  }
  return false;
}

/** Whether the text is braced like a JSON object (a cheap guard against a truncated or garbled event). */
function looksLikeObject(data: string): boolean {
  let start = 0;
  let end = data.length - 1;
  while (isSpace(data.charCodeAt(start))) start++;
  while (end > start && isSpace(data.charCodeAt(end))) end--;
  return data.charCodeAt(start) === 0x7b && data.charCodeAt(end) === 0x7d;
}

const isSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

/**
 * Relays an OpenAI-compatible SSE body byte for byte where Keel has nothing to change (the model name
 * needs no rewrite): each upstream read becomes at most one write of the events it completed. Events
 * are scanned, not re-serialized: only the usage chunk, the first content and a suspected error are
 * parsed. Left out: the upstream's `[DONE]` (Keel ends the stream itself), data-less blocks (Keel sends
 * its own heartbeats), and the usage chunk when the client did not ask for it (Keel always does).
 */
export class WireRelay {
  /** The upstream sent `[DONE]`: what follows is ignored. */
  done = false;
  private readonly splitter = new SseSplitter();

  constructor(
    private readonly tally: StreamTally,
    private readonly includeUsage: boolean,
    /** Names the upstream in error messages. */
    private readonly what: string,
  ) {}

  /** The bytes to pass on for this read (undefined when none). Throws an UpstreamError for an error event. */
  push(bytes: Buffer): Buffer | undefined {
    if (this.done) return undefined;
    const { buffer, blocks } = this.splitter.push(bytes);
    const out: Buffer[] = [];
    let runStart = 0;
    let runEnd = -1;
    for (const block of blocks) {
      if (block.data === undefined) continue;
      if (block.data === '[DONE]') {
        this.done = true;
        break;
      }
      if (!this.keep(block.data)) continue;
      if (block.start !== runEnd) {
        if (runEnd >= 0) out.push(buffer.subarray(runStart, runEnd));
        runStart = block.start;
      }
      runEnd = block.end;
    }
    if (runEnd >= 0) out.push(buffer.subarray(runStart, runEnd));
    return out.length === 0 ? undefined : out.length === 1 ? out[0] : Buffer.concat(out);
  }

  private keep(data: string): boolean {
    let parsed: (ChatChunk & { error?: unknown }) | undefined;
    if (!looksLikeObject(data) || data.includes(ERROR_KEY) || hasUsageObject(data) || (this.tally.ttft === null && CONTENT.test(data))) {
      try {
        parsed = JSON.parse(data) as ChatChunk & { error?: unknown };
      } catch {
        throw new UpstreamError('upstream_error', `${this.what} sent a malformed stream event.`, 502, false);
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new UpstreamError('upstream_error', `${this.what} sent a malformed stream event.`, 502, false);
      // The provider's error body is never passed on: the client gets Keel's error event instead.
      if (parsed.error) throw new UpstreamError('upstream_error', `${this.what} reported an error mid-stream.`, 502, false);
    }
    this.tally.relayed(data, parsed);
    return !(parsed?.usage && !this.includeUsage && Array.isArray(parsed.choices) && parsed.choices.length === 0);
  }
}
