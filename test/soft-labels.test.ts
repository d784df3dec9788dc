import { test } from 'node:test';
import assert from 'node:assert/strict';
import { softLabelFromLogprobs, SoftLabelError, type SoftLabel, type TokenLogprob, type TopLogprob } from '../src/teacher/soft-labels.ts';

/** A candidate: its text, or its UTF-8 bytes (then `token` is the garbled decoding), and its probability. */
type Alt = [text: string | number[], prob: number];

function alt([text, prob]: Alt): TopLogprob {
  return typeof text === 'string'
    ? { token: text, logprob: Math.log(prob) }
    : { token: Buffer.from(text).toString('utf8'), bytes: text, logprob: Math.log(prob) };
}

/** A generated token; its own probability is taken from `alts` when listed there, else `prob`. */
function gen(text: string | number[], alts: Alt[] = [], prob = 1): TokenLogprob {
  const listed = alts.find(([t]) => JSON.stringify(t) === JSON.stringify(text));
  return { ...alt([text, listed ? listed[1] : prob]), top_logprobs: alts.map(alt) };
}

function assertProbs(actual: SoftLabel, expected: number[]): void {
  assert.equal(actual.probs.length, expected.length);
  actual.probs.forEach((p, i) => {
    assert.ok(Math.abs(p - expected[i]) < 1e-9, `probs[${i}] = ${p}, expected ${expected[i]} (${actual.probs})`);
  });
  assert.ok(Math.abs(actual.probs.reduce((a, b) => a + b, 0) - 1) < 1e-9, 'probs sum to 1');
}

test('single-token labels, value in the token after `":"`', () => {
  const tokens = [
    gen('{"'),
    gen('label'),
    gen('":"'),
    gen('billing', [
      ['billing', 0.6],
      ['refund', 0.3],
      ['other"}', 0.05],
      ['Billing', 0.02],
    ]),
    gen('"}'),
  ];
  // `other"}` runs past the closing quote: still "other". "Billing" matches no label: ignored.
  // Top sum 0.97; leftover 0.03 dropped since every class was seen. Normalise by 0.95.
  const s = softLabelFromLogprobs(tokens, ['billing', 'refund', 'other']);
  assertProbs(s, [0.6 / 0.95, 0.3 / 0.95, 0.05 / 0.95]);
  assert.equal(s.sparse, false);
  assert.equal(s.seen, 3);
});

test('an unseen class gets the leftover mass', () => {
  const tokens = [
    gen('{"label":"'),
    gen('billing', [
      ['billing', 0.6],
      ['refund', 0.3],
      ['Billing', 0.02],
    ]),
    gen('"}'),
  ];
  // Top sum 0.92, leftover 0.08 goes to "other". Total 0.98.
  const s = softLabelFromLogprobs(tokens, ['billing', 'refund', 'other']);
  assertProbs(s, [0.6 / 0.98, 0.3 / 0.98, 0.08 / 0.98]);
  assert.equal(s.sparse, true);
  assert.equal(s.seen, 2);
});

test('multi-token label: its first token carries the mass', () => {
  const tokens = [
    gen('{"label":"'),
    gen('feature', [
      ['feature', 0.5],
      ['bug', 0.3],
      ['question', 0.15],
      ['feat', 0.02],
    ]),
    gen(' request', [[' request', 0.99]]),
    gen('"}'),
  ];
  // "feature" and "feat" both only fit "feature request": 0.52. All seen, total 0.97.
  const s = softLabelFromLogprobs(tokens, ['feature request', 'bug', 'question']);
  assertProbs(s, [0.52 / 0.97, 0.3 / 0.97, 0.15 / 0.97]);
  assert.equal(s.seen, 3);
});

test('a generated shared first token is split by the next position', () => {
  const tokens = [
    gen('{"label":"'),
    gen('bug', [
      ['bug', 0.8],
      ['billing', 0.2],
    ]),
    gen(' report', [
      [' report', 0.7],
      [' fix', 0.3],
    ]),
    gen('"}'),
  ];
  // "bug" (0.8) fits both bug labels; next position: 0.7 / 0.3.
  // bug report = 0.8 * 0.7 = 0.56, bug fix = 0.8 * 0.3 = 0.24, billing = 0.2.
  const s = softLabelFromLogprobs(tokens, ['bug report', 'bug fix', 'billing']);
  assertProbs(s, [0.56, 0.24, 0.2]);
  assert.equal(s.sparse, false);
  assert.equal(s.seen, 3);
});

test('leftover at the next position goes to an unseen label sharing the prefix', () => {
  const tokens = [
    gen('{"label":"'),
    gen('bug', [
      ['bug', 0.8],
      ['billing', 0.15],
    ]),
    gen(' report', [
      [' report', 0.6],
      [' fix', 0.3],
    ]),
    gen('"}'),
  ];
  // Next position: report 0.6, fix 0.3, leftover 0.1 to unseen "bug triage"; sums to 1.
  // First position: bug 0.8 -> 0.48 / 0.24 / 0.08; billing 0.15. Every class got mass, so
  // the first position's leftover 0.05 is dropped. Total 0.95.
  const s = softLabelFromLogprobs(tokens, ['bug report', 'bug fix', 'bug triage', 'billing']);
  assertProbs(s, [0.48 / 0.95, 0.24 / 0.95, 0.08 / 0.95, 0.15 / 0.95]);
  assert.equal(s.sparse, true);
  assert.equal(s.seen, 3);
});

test('a shared first token that was not generated is split evenly', () => {
  const tokens = [
    gen('{"label":"'),
    gen('billing', [
      ['billing', 0.7],
      ['bug', 0.3],
    ]),
    gen('"}', [
      ['"}', 0.9],
      [' report', 0.1],
    ]), // says nothing about "bug": not its continuation
  ];
  const s = softLabelFromLogprobs(tokens, ['bug report', 'bug fix', 'billing']);
  assertProbs(s, [0.15, 0.15, 0.7]);
  assert.equal(s.sparse, false);
  assert.equal(s.seen, 3);
});

test('a generated shared token at the end of the answer is split evenly', () => {
  const tokens = [
    gen('{"label":"'),
    gen('bug', [
      ['bug', 0.9],
      ['billing', 0.1],
    ]),
  ];
  const s = softLabelFromLogprobs(tokens, ['bug report', 'bug fix', 'billing']);
  assertProbs(s, [0.45, 0.45, 0.1]);
});

test('top-20 truncation with 30 classes: unseen classes share the leftover', () => {
  const labels = Array.from({ length: 30 }, (_, i) => `c${String(i).padStart(2, '0')}`);
  // 15 labels at 0.04 each (0.6) and 5 non-labels at 0.02 each (0.1): top sum 0.7,
  // leftover 0.3 over the 15 unseen labels = 0.02 each. Total 0.6 + 0.3 = 0.9.
  const top: Alt[] = [...labels.slice(0, 15).map((l): Alt => [l, 0.04]), ...['x1', 'x2', 'x3', 'x4', 'x5'].map((x): Alt => [x, 0.02])];
  const s = softLabelFromLogprobs([gen('{"label":"'), gen('c00', top), gen('"}')], labels);
  assertProbs(
    s,
    labels.map((_, i) => (i < 15 ? 0.04 / 0.9 : 0.02 / 0.9)),
  );
  assert.equal(s.sparse, true);
  assert.equal(s.seen, 15);
});

test('a token holding the opening quote and the first letter', () => {
  const tokens = [
    gen('{"label":'),
    gen('"b', [
      ['"b', 0.6],
      ['"f', 0.2],
      ['"', 0.1],
      [' "', 0.05],
    ]),
    gen('illing', [
      ['illing', 0.75],
      ['ug', 0.25],
    ]),
    gen('"}'),
  ];
  // pre = `"`. "b" fits billing and bug and was generated: 0.6 * (0.75, 0.25) = 0.45 / 0.15.
  // `"` is exactly pre (empty fragment), not generated: 0.1 / 3 to each. `"f` -> feature 0.2.
  // ` "` does not start with pre: ignored. All seen, total 0.9.
  const s = softLabelFromLogprobs(tokens, ['billing', 'bug', 'feature']);
  const third = 0.1 / 3;
  assertProbs(s, [(0.45 + third) / 0.9, (0.15 + third) / 0.9, (0.2 + third) / 0.9]);
  assert.equal(s.seen, 3);
});

test('whitespace around the colon, and a value token that straddles the opening quote', () => {
  const tokens = [
    gen('{ "label" : "re', [
      ['{ "label" : "re', 0.5],
      ['{ "label" : "bi', 0.3],
      ['{"label":"bi', 0.2],
    ]),
    gen('fund"}'),
  ];
  // pre = `{ "label" : "`. "re" -> refund 0.5, "bi" -> billing 0.3; the last does not start
  // with pre. Leftover 0 to "other". Total 0.8.
  const s = softLabelFromLogprobs(tokens, ['refund', 'billing', 'other']);
  assertProbs(s, [0.5 / 0.8, 0.3 / 0.8, 0]);
  assert.equal(s.sparse, true);
  assert.equal(s.seen, 2);
});

test('whitespace after the colon, with a shared prefix', () => {
  const tokens = [
    gen('{"label"'),
    gen(':'),
    gen(' "'),
    gen('ref', [
      ['ref', 0.6],
      ['bill', 0.3],
    ]),
    gen('und', [
      ['und', 0.9],
      ['usal', 0.05],
    ]),
    gen('"}'),
  ];
  // Next position: (0.9, 0.05) / 0.95. First: refund 0.6 * 0.9/0.95, refusal 0.6 * 0.05/0.95,
  // billing 0.3; leftover 0.1 dropped; total 0.9.
  const s = softLabelFromLogprobs(tokens, ['refund', 'refusal', 'billing']);
  assertProbs(s, [(0.6 * 0.9) / 0.95 / 0.9, (0.6 * 0.05) / 0.95 / 0.9, 0.3 / 0.9]);
});

test('only the top-level key counts', () => {
  const tokens = [
    gen('{"meta":{"label":"'),
    gen('x', [['x', 0.5]]),
    gen('"},"kind":"label","label":"'),
    gen('refund', [
      ['refund', 0.7],
      ['billing', 0.3],
    ]),
    gen('"}'),
  ];
  const s = softLabelFromLogprobs(tokens, ['refund', 'billing']);
  assertProbs(s, [0.7, 0.3]);
});

test('a custom field name', () => {
  const tokens = [
    gen('{"category":"'),
    gen('refund', [
      ['refund', 0.4],
      ['billing', 0.4],
    ]),
    gen('"}'),
  ];
  assertProbs(softLabelFromLogprobs(tokens, ['refund', 'billing'], 'category'), [0.5, 0.5]);
});

test('labels with characters that JSON escapes', () => {
  // Answer: {"label":"say \"hi\""}
  const tokens = [
    gen('{"label":"'),
    gen('say', [
      ['say', 0.9],
      ['other', 0.1],
    ]),
    gen(' \\"', [
      [' \\"', 0.6],
      [' bye', 0.3],
      [' "', 0.1],
    ]),
    gen('hi'),
    gen('\\""}'),
  ];
  // Next position: ` \"` -> say "hi" 0.6, ` bye` 0.3; ` "` would end the string at `say `: ignored.
  // Conditional (2/3, 1/3) of 0.9 -> 0.6 / 0.3; other 0.1.
  const s = softLabelFromLogprobs(tokens, ['say "hi"', 'say bye', 'other']);
  assertProbs(s, [0.6, 0.3, 0.1]);
});

test('non-ASCII labels split mid-character use bytes', () => {
  // Answer: {"label":"café"} with é = C3 A9 split over two tokens.
  const tokens = [
    gen('{"label":"'),
    gen('caf', [
      ['caf', 0.9],
      ['tea', 0.1],
    ]),
    gen(
      [0xc3],
      [
        [[0xc3], 0.7],
        ['e', 0.2],
        [[0xc3, 0xa8], 0.05],
      ],
    ),
    gen([0xa9, 0x22, 0x7d]),
  ];
  // Next position: C3 fits café (garbled `token` would not), "e" fits cafe, C3 A8 (è) fits
  // nothing; all seen, (0.7, 0.2) / 0.9. First: 0.9 * 7/9 = 0.7, 0.9 * 2/9 = 0.2; tea 0.1.
  const s = softLabelFromLogprobs(tokens, ['café', 'cafe', 'tea']);
  assertProbs(s, [0.7, 0.2, 0.1]);
  assert.equal(s.seen, 3);
});

test('a generated token missing from the top list still counts', () => {
  const tokens = [
    gen('{"label":"'),
    gen(
      'refund',
      [
        ['billing', 0.6],
        ['other', 0.38],
      ],
      0.01,
    ),
    gen('"}'),
  ];
  // Candidates 0.6 + 0.38 + 0.01; all seen; total 0.99.
  const s = softLabelFromLogprobs(tokens, ['billing', 'refund', 'other']);
  assertProbs(s, [0.6 / 0.99, 0.01 / 0.99, 0.38 / 0.99]);
});

test('errors', () => {
  const labels = ['billing', 'refund'];
  assert.throws(() => softLabelFromLogprobs([], labels), SoftLabelError);
  // No top-level label key (only a nested one).
  assert.throws(() => softLabelFromLogprobs([gen('{"meta":{"label":"'), gen('billing'), gen('"}}')], labels), SoftLabelError);
  assert.throws(() => softLabelFromLogprobs([gen('{"category":"'), gen('billing', [['billing', 1]]), gen('"}')], labels), SoftLabelError);
  // Not a string value.
  assert.throws(() => softLabelFromLogprobs([gen('{"label":'), gen('null}')], labels), SoftLabelError);
  // Answer ends at the opening quote.
  assert.throws(() => softLabelFromLogprobs([gen('{"label":"')], labels), SoftLabelError);
  // The sampled label is unknown and no candidate is a label: leftover alone is no answer.
  assert.throws(
    () =>
      softLabelFromLogprobs(
        [
          gen('{"label":"'),
          gen('spam', [
            ['spam', 0.9],
            ['Spam', 0.05],
          ]),
          gen('"}'),
        ],
        labels,
      ),
    SoftLabelError,
  );
});
