// The fake OpenAI-compatible upstream of the gateway suite, in a process of its own (forked by
// lib/fake-upstream.ts, run with `node --import tsx`), so that it does not share an event loop with
// the load generator: it is the test suite's fake (server/test/helpers/fake-openai.ts), unchanged.
// The parent drives it over IPC: set the behaviour, and take the counts of the requests that ended.
import { startFakeOpenAI, type Behaviour } from '../../server/test/helpers/fake-openai.js';
import type { FakeCommand, FakeReply, FakeStats } from './fake-upstream.js';

const send = (message: FakeReply): void => {
  process.send?.(message);
};

const fake = await startFakeOpenAI({ apiKey: process.env.FAKE_UPSTREAM_API_KEY || undefined });
let behaviour: Behaviour = {};

/** Requests that ended (finished, aborted or broken off) since the last take, folded out of `fake.requests`. */
let ended: FakeStats = { received: 0, finished: 0, aborted: 0, broken: 0, byPath: {} };

/**
 * The fake records every request and never forgets one by itself; under load that would be hundreds
 * of thousands of objects (and garbage-collector work slowing the baseline down). Ended requests are
 * therefore counted and dropped every quarter second; those in flight stay until they end.
 */
function fold(): void {
  const inFlight = [];
  for (const r of fake.requests) {
    if (r.abortedAt !== undefined) ended.aborted++;
    else if (r.brokenAt !== undefined) ended.broken++;
    else if (r.finishedAt !== undefined) ended.finished++;
    else {
      inFlight.push(r);
      continue;
    }
    ended.received++;
    ended.byPath[r.path] = (ended.byPath[r.path] ?? 0) + 1;
  }
  fake.requests.length = 0;
  fake.requests.push(...inFlight);
}
setInterval(fold, 250).unref();

/** What ended since the previous take; requests still in flight are left for the next one. */
function take(): FakeStats & { inFlight: number } {
  fold();
  const stats = { ...ended, inFlight: fake.requests.length };
  ended = { received: 0, finished: 0, aborted: 0, broken: 0, byPath: {} };
  return stats;
}

process.on('message', (raw) => {
  const command = raw as FakeCommand;
  const id = command.id;
  try {
    switch (command.op) {
      case 'behave':
        behaviour = command.behaviour;
        fake.behave(behaviour);
        send({ id, ok: true });
        break;
      case 'take':
        send({ id, ok: true, stats: take() });
        break;
      default:
        send({ id, ok: false, error: `unknown op ${JSON.stringify((raw as { op?: unknown }).op)}` });
    }
  } catch (err) {
    send({ id, ok: false, error: (err as Error).message });
  }
});

// The parent going away (or stopping us) ends the process: nothing here outlives a run.
process.on('disconnect', () => {
  void fake.close().finally(() => process.exit(0));
});
process.on('SIGTERM', () => {
  void fake.close().finally(() => process.exit(0));
});

send({ id: 0, ok: true, url: fake.url });
