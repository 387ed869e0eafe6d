"""The final evaluation under shift (`sve_jax.train.shift_eval`, `run.shift_plan`): each cell
scores the predictor on the subset corrupted example by example, as done by hand here."""
import ml_collections
import numpy as np
import pytest

from sve_jax.data import corruptions
from sve_jax.data import image_corruptions
from sve_jax.data import pipeline
from sve_jax.eval import report
from sve_jax.eval import shift as shift_lib
from sve_jax.train import run as run_lib
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


def _config(**shift):
  config = ml_collections.ConfigDict({'seed': 0, 'shift': {
      'enabled': True, 'corruptions': (), 'severities': (1, 2), 'max_examples': 3, **shift}})
  return config


def test_the_plan_caps_the_subset_and_defaults_to_the_modalitys_corruptions():
  source = [{'text': f'example {i}', 'label': 0} for i in range(10)]
  plan = run_lib.shift_plan(_config(), 'text', 'text', source)
  assert plan.corruptions == corruptions.DEFAULTS['text'] and len(plan.source) == 3
  assert plan.severities == (1, 2) and plan.input_key == 'text'
  assert len(run_lib.shift_plan(_config(max_examples=-1), 'text', 'text', source).source) == 10
  assert run_lib.shift_plan(_config(enabled=False), 'text', 'text', source) is None
  with pytest.raises(ValueError, match=r"^config.shift.corruptions: 'fog' is not a corruption "
                                       'of text data'):
    run_lib.shift_plan(_config(corruptions=('fog',)), 'text', 'text', source)
