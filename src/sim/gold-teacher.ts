/**
 * The simulated teacher behind `npm run sim-teacher`: it answers from the gold labels of an input file, right with a
 * chosen probability, so that every step of the pipeline can be tried for free and the numbers it reports can be
 * checked against a known truth.
 *
 * Which item a request is about is read off the request itself (the labeler sends no item id): an image by the
 * sha256 of its bytes, a text by the user message the task's template renders for it, else (another prompt, as a
 * pilot's) by the longest item text the message contains.
 */
import type { ItemInput } from '../input/types.ts';
import { SettingError } from '../errors.ts';
import { renderTemplate, sha256Hex, type Task } from '../task/task.ts';
import { defaultTeacher, lastUserText, requestLabels, type ChatMessage, type ChatRequest, type TeacherAnswer } from './openai-server.ts';

/** The models the simulator serves: `sim`, or any name starting with `sim-` (prices.json prices them at 0). */
export const SIM_MODEL = 'sim-teacher';
export const servesModel = (model: string): boolean => model === 'sim' || model.startsWith('sim-');

export interface SimSettings {
  /** Probability that an item's answer is its gold label. */
  accuracy: number;
  /** Which items are wrong, and how confident each answer is, is fixed by (seed, model, item). */
  seed: number;
}

export function checkSimSettings(s: SimSettings): void {
  if (!(s.accuracy >= 0 && s.accuracy <= 1)) throw new SettingError('accuracy', s.accuracy, 'must be between 0 and 1');
  if (!Number.isInteger(s.seed) || s.seed < 0) throw new SettingError('seed', s.seed, 'must be a whole number >= 0');
}

/** The gold labels of an input, by what a request shows of each item. */
export class GoldIndex {
  private readonly byImage = new Map<string, string>();
  private readonly byMessage = new Map<string, string>();
  /** Each text item's longest field and its gold, longest first: the fallback for prompts other than the task's. */
  private readonly texts: Array<[text: string, gold: string]> = [];
  private readonly found = new Map<string, string | null>();

  private constructor(readonly task: Task) {}

  /** Every item of `items` that has a gold label; `size` counts them. */
  static async build(task: Task, items: AsyncIterable<ItemInput>): Promise<GoldIndex> {
    const index = new GoldIndex(task);
    for await (const item of items) {
      if (item.gold === undefined) continue;
      if (item.image) {
        index.byImage.set(item.image.sha256, item.gold);
        continue;
      }
      index.byMessage.set(renderTemplate(task.template, item.fields), item.gold);
      const longest = Object.values(item.fields)
        .filter((v): v is string => typeof v === 'string')
        .sort((a, b) => b.length - a.length)[0];
      if (longest) index.texts.push([longest, item.gold]);
    }
    index.texts.sort((a, b) => b[0].length - a[0].length);
    return index;
  }

  get size(): number {
    return this.byImage.size + this.byMessage.size;
  }

  /** The gold label of the item a request is about, with the key that stands for the item; undefined if unknown. */
  lookup(req: ChatRequest): { key: string; gold: string } | undefined {
    const image = imageSha256(req);
    if (image !== undefined) {
      const gold = this.byImage.get(image);
      return gold === undefined ? undefined : { key: `image:${image}`, gold };
    }
    const message = lastUserText(req);
    const exact = this.byMessage.get(message);
    if (exact !== undefined) return { key: `text:${message}`, gold: exact };
    // Another prompt: scan once per distinct message (a resumed or relabeled item asks again with the same one).
    let hit = this.found.get(message);
    if (hit === undefined) {
      const t = this.texts.find(([text]) => message.includes(text));
      hit = t ? `${t[0]}\u0000${t[1]}` : null;
      this.found.set(message, hit);
    }
    if (hit === null) return undefined;
    const [text, gold] = hit.split('\u0000');
    return { key: `text:${text}`, gold };
  }
}

/** sha256 of the first image of the last user message, sent as a data URL; undefined for a text request. */
function imageSha256(req: ChatRequest): string | undefined {
  const users = (Array.isArray(req.body.messages) ? req.body.messages : []).filter((m: ChatMessage) => m?.role === 'user');
  const content = users[users.length - 1]?.content;
  if (!Array.isArray(content)) return undefined;
  for (const part of content) {
    const url = (part as { image_url?: { url?: unknown } }).image_url?.url;
    if (part?.type !== 'image_url' || typeof url !== 'string') continue;
    const m = /^data:[^;,]*;base64,(.*)$/s.exec(url);
    if (m) return sha256Hex(Buffer.from(m[1], 'base64'));
  }
  return undefined;
}

/** Three uniforms in [0, 1) fixed by the text: whether the answer is right, its confidence, which wrong label. */
function uniforms(text: string): [number, number, number] {
  const h = sha256Hex(text);
  return [0, 8, 16].map((i) => parseInt(h.slice(i, i + 8), 16) / 2 ** 32) as [number, number, number];
}

/**
 * The simulated answer for an item with gold label `gold`. Right with probability `accuracy`: the gold label gets
 * 0.70–0.999 of the mass. Wrong otherwise: another label (uniformly) gets 0.51–0.80 and the gold label most of the
 * rest, as an LLM's runner-up often is the truth. The other labels share what is left evenly. So confidence tells
 * right from wrong on average (a cascade has something to threshold), and soft labels carry the truth as dark
 * knowledge.
 */
export function simulatedAnswer(labels: string[], gold: string, itemKey: string, model: string, s: SimSettings): TeacherAnswer {
  const [right, confidence, pick] = uniforms(`${s.seed}\u0000${model}\u0000${itemKey}`);
  if (labels.length === 1) return { label: labels[0], probs: { [labels[0]]: 1 } };
  const others = labels.filter((l) => l !== gold);
  const isRight = right < s.accuracy;
  const answer = isRight ? gold : others[Math.floor(pick * others.length)];
  const top = isRight ? 0.7 + 0.299 * confidence : 0.51 + 0.29 * confidence;
  const probs: Record<string, number> = { [answer]: top };
  const rest = labels.filter((l) => l !== answer);
  const goldShare = isRight ? 0 : rest.length === 1 ? 1 - top : 0.75 * (1 - top);
  if (!isRight) probs[gold] = goldShare;
  const even = rest.filter((l) => probs[l] === undefined);
  for (const l of even) probs[l] = (1 - top - goldShare) / even.length;
  return { label: answer, probs };
}

/** What the simulator has answered so far, per model: how many, how many had a gold label, how many were right. */
export interface SimTally {
  answers: number;
  withGold: number;
  right: number;
  /** Requests about items with no gold label (answered by a guess). */
  unknown: number;
}

/**
 * The simulator's teacher callback: the gold-based answer when the item is known, else the fake's default guess (a
 * label the text mentions, else one by hash). `tally` counts per model.
 */
export function goldTeacher(index: GoldIndex | undefined, s: SimSettings, tally: Map<string, SimTally>) {
  return (req: ChatRequest): TeacherAnswer => {
    const model = typeof req.body.model === 'string' ? req.body.model : '';
    const t = tally.get(model) ?? { answers: 0, withGold: 0, right: 0, unknown: 0 };
    tally.set(model, t);
    t.answers++;
    const labels = requestLabels(req) ?? [];
    const known = index?.lookup(req);
    if (!known || !labels.includes(known.gold)) {
      t.unknown++;
      return defaultTeacher(req);
    }
    const answer = simulatedAnswer(labels, known.gold, known.key, model, s);
    t.withGold++;
    if ('label' in answer && answer.label === known.gold) t.right++;
    return answer;
  };
}
