"""The ``shift`` section (`sve_jax.eval.shift`): every score equals the one computed by hand
in NumPy from the same logits; means over corruptions; curves, plot and summary line."""
import json

import numpy as np
import pytest
from scipy import special

from sve_jax.eval import report
from sve_jax.eval import shift


def _numpy_scores(member_logits, labels):
  """Accuracy, NLL, 15-bin ECE and mean entropy of the mean of the members' softmaxes."""
  probs = special.softmax(np.asarray(member_logits, np.float64), axis=-1).mean(0)
  confidence, predicted = probs.max(-1), probs.argmax(-1)
  correct = predicted == labels
  bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)
  ece = sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * np.mean(bins == b)
            for b in range(15) if np.any(bins == b))
  return {'accuracy': correct.mean(), 'nll': -np.log(probs[np.arange(len(labels)), labels]).mean(),
          'ece': ece, 'entropy': -(probs * np.log(probs)).sum(-1).mean()}


def _logits(seed, scale):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(3, 40, 4)) * scale, rng.integers(0, 4, 40)


@pytest.fixture(scope='module')
def section():
  """A section of 2 corruptions at severities 1 and 3, from random logits; and the logits."""
  clean = _logits(0, 2.)
  cells = {('fog', 1): _logits(1, 1.5), ('fog', 3): _logits(2, 1.),
           ('shot_noise', 1): _logits(3, 1.2), ('shot_noise', 3): _logits(4, 0.5)}
  scored = {}
  for (name, severity), (logits, labels) in cells.items():
    scored.setdefault(name, {})[severity] = shift.shift_scores(logits, labels)
  return (shift.shift_section(shift.shift_scores(*clean), scored,
                              {'fog': 'weather', 'shot_noise': 'noise'}, num_examples=40),
          clean, cells)


def test_every_score_equals_numpy_from_the_same_logits(section):
  section, clean, cells = section
  assert section['clean'] == pytest.approx(_numpy_scores(*clean), abs=1e-5)
  for (name, severity), (logits, labels) in cells.items():
    assert section['corruptions'][name][str(severity)] == pytest.approx(
        _numpy_scores(logits, labels), abs=1e-5)
  for severity in ('1', '3'):
    expected = {key: np.mean([_numpy_scores(*cells[(name, int(severity))])[key]
                              for name in ('fog', 'shot_noise')]) for key in shift.KEYS}
    assert section['mean'][severity] == pytest.approx(expected, abs=1e-5)
  assert section['severities'] == [1, 3] and section['num_examples'] == 40
  assert section['families'] == {'fog': 'weather', 'shot_noise': 'noise'}


def test_the_section_survives_results_json_and_prints_one_line(section, tmp_path):
  section = section[0]
  with open(report.write_results(tmp_path, {'shift': section})) as f:
    assert json.load(f)['shift'] == section
  line = [l for l in report.summary_table({'shift': section}).splitlines()
          if l.startswith('shift')]
  assert line == [shift.summary_line(section)]
  assert (f"accuracy {section['clean']['accuracy']:.4f} -> "
          f"{section['mean']['1']['accuracy']:.4f}, {section['mean']['3']['accuracy']:.4f}"
          in line[0])


def test_curves_start_clean_and_follow_each_family_then_the_mean(section, tmp_path):
  section = section[0]
  curves = shift.shift_curves(section)
  assert list(curves) == ['weather (1)', 'noise (1)', shift.MEAN_LABEL]
  assert curves['weather (1)'] == {0: section['clean'], 1: section['corruptions']['fog']['1'],
                                   3: section['corruptions']['fog']['3']}
  assert curves[shift.MEAN_LABEL][3] == section['mean']['3']
  path = shift.plot_shift(tmp_path / shift.PLOT_FILENAME, curves, 'shift')
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  one_family = {**section, 'families': {'fog': 'weather', 'shot_noise': 'weather'}}
  assert list(shift.shift_curves(one_family)) == [shift.MEAN_LABEL]
