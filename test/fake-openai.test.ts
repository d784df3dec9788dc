import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { fakeTokenize, INVALID_JSON_CONTENT, startFakeTeacher, type FakeTeacher, type FakeTeacherOptions } from './fake-openai.ts';

type ChatParams = OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming;

/** The request the pipeline sends: a strict json_schema whose label enum lists the classes. */
function classify(text: string, labels: string[], extra: Partial<ChatParams> = {}): ChatParams {
  return {
    model: 'teacher-model',
    messages: [
      { role: 'system', content: 'Classify the ticket.' },
      { role: 'user', content: text },
    ],
    response_format: {
      type: 'json_schema',
      json_schema: {
        name: 'classification',
        strict: true,
        schema: {
          type: 'object',
          properties: { label: { type: 'string', enum: labels } },
          required: ['label'],
          additionalProperties: false,
        },
      },
    },
    ...extra,
  };
}

function clientFor(fake: FakeTeacher, options: { timeout?: number } = {}) {
  return new OpenAI({ apiKey: 'test', baseURL: fake.url, maxRetries: 0, ...options });
}

/** Run `fn` against a fresh server and always close it. */
async function withFake<T>(opts: FakeTeacherOptions, fn: (fake: FakeTeacher, client: OpenAI) => Promise<T>): Promise<T> {
  const fake = await startFakeTeacher(opts);
  try {
    return await fn(fake, clientFor(fake));
  } finally {
    await fake.close();
  }
}

/** top_logprobs at one token position as token → probability. */
function probsAt(choice: OpenAI.Chat.Completions.ChatCompletion.Choice, position: number): Map<string, number> {
  const entry = choice.logprobs?.content?.[position];
  assert.ok(entry, `no logprobs at position ${position}`);
  return new Map(entry.top_logprobs.map((t) => [t.token, Math.exp(t.logprob)]));
}

const sum = (values: Iterable<number>) => [...values].reduce((a, b) => a + b, 0);
const close = (actual: number | undefined, expected: number, what = '') =>
  assert.ok(actual !== undefined && Math.abs(actual - expected) < 1e-9, `${what}: ${actual} != ${expected}`);

/** Index of the first label-value token in `{"label":"..."}`. */
const VALUE = 3;

describe('fakeTokenize', () => {
  test('splits the JSON answer like a BPE would', () => {
    assert.deepEqual(fakeTokenize('{"label":"bug report"}'), ['{"', 'label', '":"', 'bug', ' report', '"}']);
    assert.deepEqual(fakeTokenize('{"label":"billing"}'), ['{"', 'label', '":"', 'bill', 'ing', '"}']);
    assert.deepEqual(fakeTokenize('{"label":"other"}'), ['{"', 'label', '":"', 'other', '"}']);
  });

  test('tokens always concatenate back to the content', () => {
    for (const content of [
      '{"label":"a \\"quoted\\" classification"}',
      INVALID_JSON_CONTENT,
      '  two  spaces ',
      'naïve café—überlong',
      '',
    ]) {
      assert.equal(fakeTokenize(content).join(''), content);
    }
  });
});

describe('fake teacher over the openai client', () => {
  let fake: FakeTeacher;
  let client: OpenAI;
  before(async () => {
    fake = await startFakeTeacher();
    client = clientFor(fake);
  });
  after(() => fake.close());

  test('answers with the argmax label, usage and a request id', async () => {
    const labels = ['billing', 'shipping', 'other'];
    const { data, response } = await client.chat.completions.create(classify('My BILLING address is wrong', labels)).withResponse();
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.model, 'teacher-model');
    assert.equal(data.choices.length, 1);
    assert.equal(data.choices[0].message.content, '{"label":"billing"}');
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.equal(data.choices[0].logprobs, null);
    assert.match(response.headers.get('x-request-id') ?? '', /^req_fake_\d+$/);
    const promptChars = 'Classify the ticket.'.length + 'My BILLING address is wrong'.length;
    assert.deepEqual(data.usage && { ...data.usage }, {
      prompt_tokens: Math.ceil(promptChars / 4),
      completion_tokens: 6, // {" label ":" bill ing "}
      total_tokens: Math.ceil(promptChars / 4) + 6,
    });
    assert.equal(fake.requests.at(-1)?.headers.authorization, 'Bearer test');
  });

  test('top logprobs at the label position sum to the default distribution', async () => {
    const labels = ['billing', 'shipping', 'other'];
    const res = await client.chat.completions.create(classify('please fix my billing', labels, { logprobs: true, top_logprobs: 5 }));
    const choice = res.choices[0];
    const content = choice.logprobs?.content ?? [];
    assert.deepEqual(
      content.map((t) => t.token),
      fakeTokenize(choice.message.content ?? ''),
    );
    const atLabel = probsAt(choice, VALUE);
    assert.deepEqual([...atLabel.keys()], ['bill', 'ship', 'other']); // sorted by logprob, ties in label order
    close(atLabel.get('bill'), 0.8, 'bill');
    close(atLabel.get('ship'), 0.1, 'ship');
    close(atLabel.get('other'), 0.1, 'other');
    close(sum(atLabel.values()), 1, 'total');
    // The generated token's own logprob is its candidate's, and bytes are its UTF-8.
    close(Math.exp(content[VALUE].logprob), 0.8, 'own logprob');
    assert.deepEqual(content[VALUE].bytes, [...Buffer.from('bill')]);
    // Structural tokens are near-certain, with a couple of unlikely alternatives.
    assert.equal(content[0].logprob, -1e-6);
    assert.equal(content[0].top_logprobs.length, 3);
    assert.ok(content[0].top_logprobs.slice(1).every((t) => t.logprob < -10));
  });

  test('an unmentioned label is chosen by hash with probability 0.6', async () => {
    const labels = ['alpha', 'beta', 'gamma', 'delta'];
    const res = await client.chat.completions.create(classify('nothing relevant here', labels, { logprobs: true, top_logprobs: 20 }));
    const atLabel = probsAt(res.choices[0], VALUE);
    assert.equal(atLabel.size, 4);
    const chosen = JSON.parse(res.choices[0].message.content ?? '').label as string;
    close(atLabel.get(chosen), 0.6, chosen);
    for (const other of labels.filter((l) => l !== chosen)) close(atLabel.get(other), 0.4 / 3, other);
    // Same text, same answer.
    const again = await client.chat.completions.create(classify('nothing relevant here', labels));
    assert.equal(again.choices[0].message.content, res.choices[0].message.content);
  });

  test('multi-token labels give conditional probabilities at later positions', async () => {
    const labels = ['bug report', 'bug fix', 'question'];
    const res = await client.chat.completions.create(classify('this is a bug fix request', labels, { logprobs: true, top_logprobs: 5 }));
    const choice = res.choices[0];
    assert.equal(choice.message.content, '{"label":"bug fix"}');
    // First piece: "bug" carries the mass of both bug labels.
    const first = probsAt(choice, VALUE);
    assert.deepEqual([...first.keys()], ['bug', 'ques']);
    close(first.get('bug'), 0.9, 'bug');
    close(first.get('ques'), 0.1, 'ques');
    // Second piece: conditional on "bug".
    const second = probsAt(choice, VALUE + 1);
    assert.deepEqual([...second.keys()], [' fix', ' report']);
    close(second.get(' fix'), 0.8 / 0.9, 'fix');
    close(second.get(' report'), 0.1 / 0.9, 'report');
    // The chain rule recovers the class probability.
    const content = choice.logprobs?.content ?? [];
    close(Math.exp(content[VALUE].logprob + content[VALUE + 1].logprob), 0.8, 'p(bug fix)');
  });

  test('a label that is a prefix of another competes with the closing token', async () => {
    const labels = ['bill', 'billing'];
    const res = await client.chat.completions.create(classify('about the bill', labels, { logprobs: true, top_logprobs: 5 }));
    // "bill" (0.8) and "billing" (0.2) share the first piece; then `"}` competes with "ing".
    const choice = res.choices[0];
    assert.equal(choice.message.content, '{"label":"bill"}');
    close(probsAt(choice, VALUE).get('bill'), 1, 'bill');
    const next = probsAt(choice, VALUE + 1);
    close(next.get('"}'), 0.8, 'close');
    close(next.get('ing'), 0.2, 'ing');
  });

  test('top_logprobs keeps only the K most likely first tokens', async () => {
    const labels = ['alpha', 'beta', 'gamma', 'delta'];
    const res = await client.chat.completions.create(classify('gamma ray', labels, { logprobs: true, top_logprobs: 2 }));
    const content = res.choices[0].logprobs?.content ?? [];
    assert.ok(content.every((t) => t.top_logprobs.length <= 2));
    const atLabel = probsAt(res.choices[0], VALUE);
    assert.equal(atLabel.size, 2);
    close(atLabel.get('gamma'), 0.8, 'gamma');
  });

  test('n=5 at temperature 1 returns 5 sampled choices', async () => {
    const labels = ['billing', 'shipping', 'other'];
    const res = await client.chat.completions.create(
      classify('where is my parcel', labels, { n: 5, temperature: 1, logprobs: true, top_logprobs: 3 }),
    );
    assert.equal(res.choices.length, 5);
    res.choices.forEach((choice, i) => {
      assert.equal(choice.index, i);
      assert.ok(labels.includes(JSON.parse(choice.message.content ?? '').label));
      close(sum(probsAt(choice, VALUE).values()), 1, 'label mass');
    });
    assert.equal(res.usage?.completion_tokens, sum(res.choices.map((c) => fakeTokenize(c.message.content ?? '').length)));
  });

  test('sampled choices differ when the distribution is flat, and are greedy at temperature 0', async () => {
    const labels = ['a', 'b', 'c', 'd', 'e'];
    await withFake({ teacher: () => ({ label: 'c', probs: Object.fromEntries(labels.map((l) => [l, 1])) }) }, async (_fake, flatClient) => {
      const sampled = await flatClient.chat.completions.create(classify('x', labels, { n: 20, temperature: 1 }));
      assert.ok(new Set(sampled.choices.map((c) => c.message.content)).size > 1);
      const greedy = await flatClient.chat.completions.create(classify('x', labels, { n: 3 }));
      assert.deepEqual(
        greedy.choices.map((c) => c.message.content),
        Array(3).fill('{"label":"c"}'),
      );
    });
  });

  test('GET /v1/models lists one model; unknown routes are 404 JSON', async () => {
    const models = await client.models.list();
    assert.equal(models.data.length, 1);
    const res = await fetch(`${fake.url}/nope`);
    assert.equal(res.status, 404);
    const body = (await res.json()) as { error: { message: string } };
    assert.match(body.error.message, /nope/);
  });

  test('a request without a label enum is a 400', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
      (err) => err instanceof OpenAI.BadRequestError && err.param === 'response_format',
    );
  });
});

describe('options', () => {
  test('rejectLogprobs answers 400 like servers without logprobs', async () => {
    await withFake({ rejectLogprobs: true }, async (fake, client) => {
      await assert.rejects(
        client.chat.completions.create(classify('x', ['a', 'b'], { logprobs: true, top_logprobs: 2 })),
        (err) =>
          err instanceof OpenAI.BadRequestError &&
          err.param === 'logprobs' &&
          err.type === 'invalid_request_error' &&
          /logprobs is not supported/.test(err.message),
      );
      // Without logprobs the same server answers.
      const ok = await client.chat.completions.create(classify('x', ['a', 'b']));
      assert.equal(ok.choices.length, 1);
      assert.equal(fake.requests.length, 2);
      assert.equal(fake.answered, 1);
    });
  });

  test('a raw teacher answer is sent as is', async () => {
    await withFake({ teacher: () => ({ raw: '{"label": "spaced"}' }) }, async (_fake, client) => {
      const res = await client.chat.completions.create(classify('x', ['a'], { logprobs: true, top_logprobs: 1 }));
      assert.equal(res.choices[0].message.content, '{"label": "spaced"}');
      assert.equal(res.choices[0].logprobs?.content?.map((t) => t.token).join(''), '{"label": "spaced"}');
    });
  });

  test('latencyMs delays answers and a custom usage is reported', async () => {
    await withFake({ latencyMs: 50, usage: () => ({ prompt_tokens: 7, completion_tokens: 3 }) }, async (_fake, client) => {
      const started = performance.now();
      const res = await client.chat.completions.create(classify('x', ['a', 'b']));
      assert.ok(performance.now() - started >= 45);
      assert.deepEqual(res.usage && { ...res.usage }, { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 });
    });
  });
});

describe('faults', () => {
  test('429 is a RateLimitError with the retry headers', async () => {
    const headers = { 'retry-after': '1', 'retry-after-ms': '50', 'x-ratelimit-reset-requests': '20ms' };
    await withFake({ fault: (_req, n) => (n === 1 ? { kind: 'status', status: 429, headers } : undefined) }, async (fake, client) => {
      const err = await client.chat.completions.create(classify('x', ['a', 'b'])).catch((e: unknown) => e);
      assert.ok(err instanceof OpenAI.RateLimitError);
      assert.equal(err.status, 429);
      assert.equal(err.code, 'rate_limit_exceeded');
      assert.equal(err.headers?.get('retry-after'), '1');
      assert.equal(err.headers?.get('retry-after-ms'), '50');
      assert.equal(err.headers?.get('x-ratelimit-reset-requests'), '20ms');
      // The next request succeeds; only it is billed.
      await client.chat.completions.create(classify('x', ['a', 'b']));
      assert.equal(fake.requests.length, 2);
      assert.equal(fake.answered, 1);
    });
  });

  test('500, 502 and 503 are InternalServerErrors', async () => {
    for (const status of [500, 502, 503] as const) {
      await withFake({ fault: () => ({ kind: 'status', status }) }, async (_fake, client) => {
        const err = await client.chat.completions.create(classify('x', ['a'])).catch((e: unknown) => e);
        assert.ok(err instanceof OpenAI.InternalServerError, `status ${status}`);
        assert.equal(err.status, status);
      });
    }
  });

  test('a custom error body is passed through', async () => {
    const body = { error: { message: 'custom overload', type: 'server_error', code: 'overloaded' } };
    await withFake({ fault: () => ({ kind: 'status', status: 503, body }) }, async (_fake, client) => {
      const err = await client.chat.completions.create(classify('x', ['a'])).catch((e: unknown) => e);
      assert.ok(err instanceof OpenAI.InternalServerError);
      assert.equal(err.code, 'overloaded');
      assert.match(err.message, /custom overload/);
    });
  });

  test('drop is an APIConnectionError (not a timeout)', async () => {
    await withFake({ fault: () => ({ kind: 'drop' }) }, async (fake, client) => {
      const err = await client.chat.completions.create(classify('x', ['a'])).catch((e: unknown) => e);
      assert.ok(err instanceof OpenAI.APIConnectionError);
      assert.ok(!(err instanceof OpenAI.APIConnectionTimeoutError));
      assert.equal(fake.requests.length, 1);
      assert.equal(fake.answered, 0);
    });
  });

  test('hang is an APIConnectionTimeoutError with a short timeout', async () => {
    await withFake({ fault: () => ({ kind: 'hang' }) }, async (fake) => {
      const client = clientFor(fake, { timeout: 100 });
      const err = await client.chat.completions.create(classify('x', ['a'])).catch((e: unknown) => e);
      assert.ok(err instanceof OpenAI.APIConnectionTimeoutError);
      assert.equal(fake.answered, 0);
    });
  });

  test('close() returns promptly with a hung request in flight', async () => {
    const fake = await startFakeTeacher({ fault: () => ({ kind: 'hang' }), latencyMs: 0 });
    const pending = clientFor(fake)
      .chat.completions.create(classify('x', ['a']))
      .catch((e: unknown) => e);
    while (fake.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
    const started = performance.now();
    await fake.close();
    assert.ok(performance.now() - started < 5000, 'close() hung (it should not wait for hung requests)');
    assert.ok((await pending) instanceof OpenAI.APIConnectionError);
  });

  test('close() also interrupts a request waiting out latencyMs', async () => {
    const fake = await startFakeTeacher({ latencyMs: 60_000 });
    const pending = clientFor(fake)
      .chat.completions.create(classify('x', ['a']))
      .catch((e: unknown) => e);
    while (fake.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
    const started = performance.now();
    await fake.close();
    assert.ok(performance.now() - started < 5000, 'close() hung (it should not wait for hung requests)');
    assert.ok((await pending) instanceof OpenAI.APIConnectionError);
  });

  test('invalid-json answers prose with consistent logprobs', async () => {
    await withFake({ fault: () => ({ kind: 'invalid-json' }) }, async (fake, client) => {
      const res = await client.chat.completions.create(classify('x', ['billing', 'other'], { logprobs: true, top_logprobs: 3 }));
      const choice = res.choices[0];
      assert.equal(choice.message.content, 'I think it is billing');
      const content = choice.logprobs?.content ?? [];
      assert.deepEqual(
        content.map((t) => t.token),
        ['I', ' think', ' it', ' is', ' bill', 'ing'],
      );
      for (const t of content) {
        assert.equal(t.top_logprobs.find((c) => c.token === t.token)?.logprob, t.logprob);
        assert.ok(sum(t.top_logprobs.map((c) => Math.exp(c.logprob))) <= 1 + 1e-9);
      }
      assert.equal(fake.answered, 1);
    });
  });

  test('unknown-label answers a label outside the enum', async () => {
    await withFake({ fault: () => ({ kind: 'unknown-label' }) }, async (_fake, client) => {
      const res = await client.chat.completions.create(classify('billing', ['billing', 'other'], { logprobs: true, top_logprobs: 5 }));
      const choice = res.choices[0];
      assert.equal(choice.message.content, '{"label":"banana"}');
      const atLabel = probsAt(choice, VALUE);
      assert.ok(atLabel.has('banana'));
      close(sum(atLabel.values()), 1, 'label mass');
    });
  });
});
