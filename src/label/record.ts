/**
 * How an answer becomes a label, the same for the live path and the batch ingest: a completion is interpreted into
 * a hard label and a distribution (per soft mode), and every paid answer is stored — its response row always, a
 * label row once it settles the item.
 */
import type { ChatCompletion } from 'openai/resources/chat/completions';
import { TeacherError } from '../errors.ts';
import { defaultSoftFormat, encodeSoft, probsToLogprobs, type SoftFormat } from '../soft/codec.ts';
import type { Store } from '../store/store.ts';
import { parseAnswer } from '../teacher/answer.ts';
import { softModeName } from '../teacher/request.ts';
import { softLabelFromLogprobs, SoftLabelError } from '../teacher/soft-labels.ts';
import type { LabelOptions } from './types.ts';

/** One paid answer and what it cost. */
export interface Paid {
  completion: ChatCompletion;
  latencyMs: number;
  promptTokens: number;
  completionTokens: number;
  cost: number;
}

/** What the answers to one request key have added up to in a run (the label row's totals). */
export interface AttemptTotals {
  promptTokens: number;
  completionTokens: number;
  cost: number;
  latencyMs: number;
  attempts: number;
  /** Invalid answers so far. */
  invalid: number;
  lastRaw: string | null;
  lastError: string;
}

export function freshTotals(): AttemptTotals {
  return { promptTokens: 0, completionTokens: 0, cost: 0, latencyMs: 0, attempts: 0, invalid: 0, lastRaw: null, lastError: '' };
}

/** The invalid answers a key already has in a run (after a batch, or a killed live run), as the label row's totals. */
export function priorAttempts(store: Store, runId: number, requestKey: string): AttemptTotals {
  const { lastBody, ...sums } = store.invalidAnswers(runId, requestKey);
  const body = lastBody as { choices?: Array<{ content?: string | null }> } | undefined;
  return { ...sums, invalid: sums.attempts, lastRaw: body?.choices?.[0]?.content ?? null, lastError: 'invalid answer' };
}

/**
 * Record one paid answer to a request: its response row always, and a label row when it settles the item (a valid
 * answer, or the invalid answer beyond `maxInvalid`). The one place answers become labels, for the live path and the
 * batch ingest alike. `totals` (the key's earlier answers in this run) is updated. Returns what the item needs next;
 * throws the TeacherError of an answer that shows no request of this run can work (no logprobs), after storing it.
 */
export function recordAnswer(
  o: LabelOptions,
  runId: number,
  itemId: number,
  requestKey: string,
  paid: Paid,
  totals: AttemptTotals,
): 'labeled' | 'failed' | 'invalid' {
  totals.promptTokens += paid.promptTokens;
  totals.completionTokens += paid.completionTokens;
  totals.cost += paid.cost;
  totals.latencyMs += paid.latencyMs;
  totals.attempts++;
  const outcome = interpretCompletion(o, paid.completion);
  totals.lastRaw = outcome.raw;
  o.store.recordResponse({
    requestKey,
    runId,
    itemId,
    status: outcome.ok ? 'ok' : 'invalid',
    body: responseBody(paid.completion),
    promptTokens: paid.promptTokens,
    completionTokens: paid.completionTokens,
    cost: paid.cost,
    latencyMs: paid.latencyMs,
  });
  const { invalid: _invalid, lastRaw: _raw, lastError: _error, ...sums } = totals;
  if (outcome.ok) {
    o.store.recordLabel({
      itemId,
      runId,
      requestKey,
      status: 'ok',
      label: outcome.label,
      soft: outcome.soft,
      softMethod: softModeName(o.settings.soft),
      sparse: outcome.sparse,
      raw: outcome.raw,
      ...sums,
      error: null,
    });
    return 'labeled';
  }
  if (outcome.fatal) throw outcome.fatal;
  totals.lastError = outcome.error;
  if (++totals.invalid <= o.maxInvalid) return 'invalid';
  o.store.recordLabel({
    itemId,
    runId,
    requestKey,
    status: 'failed',
    label: null,
    soft: null,
    softMethod: softModeName(o.settings.soft),
    sparse: false,
    raw: totals.lastRaw,
    ...sums,
    error: `${o.maxInvalid + 1} invalid answers; last: ${totals.lastError}`,
  });
  return 'failed';
}

export type Outcome =
  | { ok: true; label: string; soft: Buffer | null; sparse: boolean; raw: string }
  | { ok: false; error: string; raw: string | null; fatal?: TeacherError };

function storeFormatOf(o: Pick<LabelOptions, 'task' | 'storeFormat'>): SoftFormat {
  return o.storeFormat ?? defaultSoftFormat(o.task.labels.length);
}

/** Turn a completion into a hard label and a distribution, per soft mode. */
export function interpretCompletion(o: Pick<LabelOptions, 'task' | 'settings' | 'storeFormat'>, completion: ChatCompletion): Outcome {
  const labels = o.task.labels;
  const mode = o.settings.soft;
  const first = completion.choices[0];
  const raw = first?.message?.content ?? null;
  if (mode.kind === 'samples') {
    const votes = completion.choices.map((c) => parseAnswer(c.message?.content, labels));
    const valid = votes.filter((v): v is { ok: true; label: string } => v.ok);
    if (valid.length === 0) return { ok: false, error: (votes[0] as { error: string } | undefined)?.error ?? 'no choices', raw };
    const counts = labels.map((l) => valid.filter((v) => v.label === l).length);
    const probs = counts.map((c) => c / valid.length);
    // Majority vote; a tie goes to the label that was sampled first.
    const best = Math.max(...counts);
    const hard = valid.find((v) => counts[labels.indexOf(v.label)] === best)!.label;
    return {
      ok: true,
      label: hard,
      soft: encodeSoft({ kind: 'probs', values: Float32Array.from(probs) }, storeFormatOf(o)),
      sparse: false,
      raw: JSON.stringify(completion.choices.map((c) => c.message?.content ?? null)),
    };
  }
  const parsed = parseAnswer(raw, labels);
  if (!parsed.ok) return { ok: false, error: parsed.error, raw };
  if (mode.kind === 'none') return { ok: true, label: parsed.label, soft: null, sparse: false, raw: raw! };
  const tokens = first.logprobs?.content;
  if (!tokens || tokens.length === 0) {
    return {
      ok: false,
      error: 'no logprobs in the answer',
      raw,
      fatal: new TeacherError('the server returned no logprobs; use --soft samples:N (self-consistency) or --soft none'),
    };
  }
  try {
    const soft = softLabelFromLogprobs(tokens, labels);
    return {
      ok: true,
      label: parsed.label,
      soft: encodeSoft({ kind: 'logprobs', values: probsToLogprobs(soft.probs) }, storeFormatOf(o)),
      sparse: soft.sparse,
      raw: raw!,
    };
  } catch (e) {
    if (e instanceof SoftLabelError) return { ok: false, error: `cannot read label probabilities: ${e.message}`, raw };
    throw e;
  }
}

/**
 * What is kept of a response: enough to recompute the labels (content and
 * token logprobs), nothing about the request's credentials. A token's `bytes`
 * are kept only where its text cannot stand for them (a split UTF-8
 * character shows as U+FFFD): that makes the stored body several times smaller.
 */
export function responseBody(c: ChatCompletion): unknown {
  return {
    id: c.id,
    model: c.model,
    usage: c.usage,
    choices: c.choices.map((ch) => ({
      content: ch.message?.content ?? null,
      finish_reason: ch.finish_reason,
      logprobs: ch.logprobs?.content?.map(compactToken) ?? null,
    })),
  };
}

type Logprob = { token: string; logprob: number; bytes?: number[] | null };

function compactLogprob(t: Logprob): Logprob {
  return t.token.includes('\uFFFD') && t.bytes
    ? { token: t.token, logprob: t.logprob, bytes: t.bytes }
    : { token: t.token, logprob: t.logprob };
}

function compactToken(t: Logprob & { top_logprobs?: Logprob[] }): unknown {
  return { ...compactLogprob(t), top_logprobs: (t.top_logprobs ?? []).map(compactLogprob) };
}
