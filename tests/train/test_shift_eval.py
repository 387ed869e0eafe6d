"""The final evaluation under shift (`sve_jax.train.shift_eval`): each cell scores the
predictor on the subset corrupted example by example, as done by hand here."""
import numpy as np
import pytest

from sve_jax.data import corruptions
from sve_jax.data import image_corruptions
from sve_jax.data import pipeline
from sve_jax.eval import report
from sve_jax.eval import shift as shift_lib
from sve_jax.train import shift_eval


def _logits(images):
  """Two members' logits of 3 classes from the images' brightness and contrast."""
  x = np.asarray(images, np.float64).reshape(len(images), -1) / 255.
  features = np.stack([x.mean(-1), x.std(-1), 0.5 * np.ones(len(x))], -1)
  return np.stack([4. * features, 6. * features[:, ::-1]])


def _predictor(trainables, split):
  """A stand-in for `evaluate.make_predictor`'s: reads the split in batches of 4."""
  del trainables
  logits, labels = [], []
  for batch in pipeline.eval_batches(split.source, global_batch_size=4):
    out = split.transform(batch)
    logits.append(_logits(out['inputs'][batch['mask']]))
    labels.append(out['label'][batch['mask']])
  return report.Predictions(np.concatenate(logits, 1), np.concatenate(labels))


def _transform(batch):
  return {'inputs': np.stack(batch['image']), 'label': np.asarray(batch['label'])}


def test_each_cell_scores_the_subset_corrupted_example_by_example():
  rng = np.random.default_rng(0)
  source = [{'image': rng.integers(0, 256, (28, 28, 1), dtype=np.uint8), 'label': i % 3}
            for i in range(6)]
  plan = shift_eval.ShiftPlan(source, 'image', ('gaussian_noise', 'contrast'), (1, 4), seed=2)
  section = shift_eval.evaluate_shift(plan, _predictor, None, _transform, 'probs')
  labels = np.array([e['label'] for e in source])
  assert section['clean'] == pytest.approx(
      shift_lib.shift_scores(_logits([e['image'] for e in source]), labels))
  for name in plan.corruptions:
    for severity in plan.severities:
      images = [image_corruptions.corrupt_image(
          e['image'], name, severity, corruptions.example_seed(2, name, severity, i))
          for i, e in enumerate(source)]
      assert section['corruptions'][name][str(severity)] == pytest.approx(
          shift_lib.shift_scores(_logits(images), labels))
  assert section['families'] == {'gaussian_noise': 'noise', 'contrast': 'digital'}
  assert section['num_examples'] == 6 and section['severities'] == [1, 4]
