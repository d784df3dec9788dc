/**
 * Label quality by self-confidence, the score cleanlab ranks label issues by by default: Northcutt, Jiang
 * and Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels" (JAIR 2021), and the cleanlab
 * library's `cleanlab.rank.get_self_confidence_for_each_label` (the default `method="self_confidence"` of
 * `get_label_quality_scores`). The score of an item is the probability a model gives the item's given label;
 * the lower, the more likely the label is wrong. cleanlab asks for out-of-sample (out-of-fold) predictions:
 * a model that trained on the label has mostly learned to repeat it.
 */
import { TargetsError } from '../targets/types.ts';
import { checkClass } from '../targets/vector.ts';

/** The predicted probability of the given label: cleanlab's self-confidence, in [0, 1]. */
export function selfConfidence(predProbs: ArrayLike<number>, given: number): number {
  checkClass(given, predProbs.length, 'the given label');
  let total = 0;
  for (let k = 0; k < predProbs.length; k++) {
    if (!(predProbs[k] >= 0)) throw new TargetsError(`predicted probability ${k} is ${predProbs[k]}, expected a number ≥ 0`);
    total += predProbs[k];
  }
  // Stored fp16 distributions sum to 1 only approximately; a score must not depend on that rounding.
  if (!(total > 0)) throw new TargetsError('the predicted probabilities sum to 0');
  return predProbs[given] / total;
}
