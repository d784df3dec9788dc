import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BudgetExceeded } from '../src/errors.ts';
import { Budget, costOf, resolvePrice } from '../src/label/cost.ts';
import { RateLimiter } from '../src/label/rate-limit.ts';
import { DEFAULT_RETRY, parseDuration, retryDelayMs, serverWaitMs } from '../src/teacher/retry.ts';
import { redactSecrets } from '../src/secrets.ts';

test('rate-limit headers: the longest requested wait wins', () => {
  assert.equal(serverWaitMs({ 'retry-after-ms': '250' }), 250);
  assert.equal(serverWaitMs({ 'retry-after': '2' }), 2000);
  assert.equal(serverWaitMs({ 'retry-after': '1', 'x-ratelimit-reset-requests': '1.5s' }), 1500);
  assert.equal(serverWaitMs({ 'x-ratelimit-reset-tokens': '6m0s' }), 360_000);
  const inTwoSeconds = new Date(Date.now() + 2000).toUTCString();
  const w = serverWaitMs({ 'retry-after': inTwoSeconds })!;
  assert.ok(w > 0 && w <= 2000, `HTTP-date retry-after gives ${w}`);
  assert.equal(serverWaitMs({}), undefined);
  assert.equal(serverWaitMs(new Headers({ 'retry-after-ms': '40' })), 40);
  assert.equal(parseDuration('20ms'), 20);
  assert.equal(parseDuration('1h2m3.5s'), 3_723_500);
  assert.equal(parseDuration('soon'), undefined);
});

test('backoff doubles with jitter, is capped, and defers to the server', () => {
  const policy = { ...DEFAULT_RETRY, baseDelayMs: 100, maxDelayMs: 1000 };
  assert.equal(
    retryDelayMs(0, policy, undefined, () => 1),
    100,
  );
  assert.equal(
    retryDelayMs(3, policy, undefined, () => 1),
    800,
  );
  assert.equal(
    retryDelayMs(3, policy, undefined, () => 0),
    400,
  );
  assert.equal(
    retryDelayMs(10, policy, undefined, () => 1),
    1000,
  );
  assert.equal(retryDelayMs(0, policy, 5000), 5000);
  assert.equal(retryDelayMs(0, policy, 10 * 60_000), policy.maxServerWaitMs);
});

test('prices: flags win, else the longest matching key; unknown models are an error', () => {
  const table = { models: { 'gpt-4o': { input: 2.5, output: 10 }, 'gpt-4o-mini': { input: 0.15, output: 0.6 } } };
  assert.equal(resolvePrice('gpt-4o-mini-2024-07-18', table, 'prices.json').input, 0.15);
  assert.equal(resolvePrice('gpt-4o', table, 'prices.json').output, 10);
  assert.equal(resolvePrice('whatever', undefined, 'prices.json', 0, 0).input, 0);
  assert.throws(() => resolvePrice('llama-3', table, 'prices.json'), /prices\.json: model "llama-3" has no price/);
  assert.equal(costOf({ input: 1, output: 2, source: '' }, 1000, 500), 0.002);
});

test('the budget never lets reservations exceed the cap, and waits for in-flight requests to settle', async () => {
  const b = new Budget(1.0);
  await b.reserve(0.4);
  await b.reserve(0.4);
  let third = false;
  const p = b.reserve(0.4).then(() => (third = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(third, false, 'the third reservation waits: 1.2 > cap');
  b.settle(0.4, 0.05); // the first request really cost 5 cents
  await p;
  assert.equal(third, true);
  b.settle(0.4, 0.05);
  b.settle(0.4, 0.05);
  assert.ok(Math.abs(b.total - 0.15) < 1e-12);
  const idle = new Budget(0.1, 0.05);
  await assert.rejects(idle.reserve(0.06), BudgetExceeded);
  await idle.reserve(0.05);
});

test('the rate limiter hands out at most its bucket at once, then refills over time', async () => {
  const limiter = new RateLimiter({ rpm: 60 }); // bucket of 10, refilling 1 per second
  let started = 0;
  const all = Array.from({ length: 12 }, () => limiter.acquire(1).then(() => started++));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(started, 10, 'ten start at once; the others wait for the refill');
  await Promise.all(all);
  assert.equal(started, 12);
});

test('secrets are masked in messages, including the masked keys servers echo back', () => {
  const key = 'sk-proj-abcdefghijklmnop';
  assert.equal(redactSecrets(`bad key ${key}!`, [key]), 'bad key [redacted]!');
  assert.equal(redactSecrets('Incorrect API key provided: sk-proj-ab***********op.', []), 'Incorrect API key provided: sk-[redacted]');
});
