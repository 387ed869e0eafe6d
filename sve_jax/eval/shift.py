"""Scores under distribution shift: results.json's ``shift`` section, its plot and its line.

The section (:func:`shift_section`) scores the ensemble on one test subset, clean and under
each corruption at each severity (:func:`shift_scores`: accuracy, NLL, ECE and the mean
predictive entropy, all from :mod:`sve_jax.eval.metrics`, at T = 1)::

  shift: num_examples, severities,
         clean: accuracy, nll, ece, entropy
         corruptions: {name: {severity: accuracy, nll, ece, entropy}}
         mean: {severity: ...}          (each score's mean over the corruptions)
         families: {name: family}       (noise, blur, weather, digital; characters for text)

Severities are keys as JSON writes them: ``'1'`` ... ``'5'``. :func:`shift_curves` turns a
section into curves against severity (0 = clean), :func:`plot_shift` draws curves (one run's
families, or several methods' means: ``benchmarks/shift.py``), and :func:`summary_line` is the
printed summary's line.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sve_jax.eval import metrics

#: The scores of each cell of the section.
KEYS = ('accuracy', 'nll', 'ece', 'entropy')
#: The curve of the mean over every corruption (drawn bold).
MEAN_LABEL = 'mean over corruptions'
PLOT_FILENAME = 'shift.png'

Scores = Mapping[str, float]
#: Scores by severity, 0 standing for the clean data.
Curve = Mapping[int, Scores]


def shift_scores(member_logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike,
                 mode: str = 'probs') -> dict[str, float]:
  """The ensemble's :data:`KEYS` on one (corrupted) split, at T = 1: :func:`metrics.evaluate`'s
  accuracy, NLL and ECE, and :func:`metrics.mean_predictive_entropy`."""
  scores = metrics.evaluate(member_logits, labels, mode=mode)
  return {'accuracy': scores['accuracy'], 'nll': scores['nll'], 'ece': scores['ece'],
          'entropy': metrics.mean_predictive_entropy(member_logits, mode=mode)}


def mean_scores(rows: Sequence[Scores]) -> dict[str, float]:
  """Each of :data:`KEYS`' mean over ``rows``."""
  return {key: float(np.mean([row[key] for row in rows])) for key in KEYS}


def mean_over_corruptions(corruptions: Mapping[str, Mapping[str, Scores]],
                          names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
  """Per severity, :func:`mean_scores` over the corruptions ``names`` (default: all) of
  ``{name: {severity: scores}}``."""
  names = list(corruptions) if names is None else list(names)
  return {severity: mean_scores([corruptions[name][severity] for name in names])
          for severity in corruptions[names[0]]}


def shift_section(clean: Scores, corruptions: Mapping[str, Mapping[int, Scores]],
                  families: Mapping[str, str], num_examples: int) -> dict[str, Any]:
  """The ``shift`` section (see the module docstring).

  Args:
    clean: :func:`shift_scores` of the uncorrupted subset.
    corruptions: ``{name: {severity: shift_scores}}``, every corruption at the same
      severities.
    families: each corruption's family.
    num_examples: the size of the subset.
  """
  by_name = {name: {str(s): dict(scores) for s, scores in by_severity.items()}
             for name, by_severity in corruptions.items()}
  return {'num_examples': int(num_examples),
          'severities': [int(s) for s in next(iter(by_name.values()))],
          'clean': dict(clean), 'corruptions': by_name, 'mean': mean_over_corruptions(by_name),
          'families': {name: families[name] for name in by_name}}


def shift_curves(section: Mapping[str, Any]) -> dict[str, dict[int, Scores]]:
  """Curves against severity (0 = clean) of a section: each family's mean over its
  corruptions (when there are several families), then :data:`MEAN_LABEL`'s."""
  families: dict[str, list[str]] = {}
  for name, family in section['families'].items():
    families.setdefault(family, []).append(name)
  means = {f'{family} ({len(names)})': mean_over_corruptions(section['corruptions'], names)
           for family, names in families.items()} if len(families) > 1 else {}
  means[MEAN_LABEL] = section['mean']
  return {label: {0: section['clean'], **{int(s): scores for s, scores in mean.items()}}
          for label, mean in means.items()}


def shift_figure(curves: Mapping[str, Curve], title: str) -> Figure:
  """Accuracy (left) and ECE (right) against severity, one line per curve
  (:data:`MEAN_LABEL`'s bold and black)."""
  figure = Figure(figsize=(10, 4.2), layout='constrained')
  FigureCanvasAgg(figure)
  axes = figure.subplots(1, 2)
  for ax, key, label in zip(axes, ('accuracy', 'ece'), ('accuracy', 'ECE')):
    for name, curve in curves.items():
      severities = sorted(curve)
      bold = name == MEAN_LABEL
      ax.plot(severities, [curve[s][key] for s in severities], marker='o', label=name,
              linewidth=2.5 if bold else 1.2, color='black' if bold else None)
    ax.set(xlabel='severity (0 = clean)', ylabel=label, xticks=range(6))
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize='small')
  figure.suptitle(title)
  return figure


def plot_shift(path: str | os.PathLike, curves: Mapping[str, Curve], title: str) -> str:
  """Writes :func:`shift_figure` as a PNG; returns ``path``."""
  shift_figure(curves, title).savefig(path, dpi=120)
  return os.fspath(path)


def summary_line(section: Mapping[str, Any]) -> str:
  """One line: the mean accuracy and ECE over corruptions, clean then by severity."""
  def scores(key):
    by_severity = ', '.join(f"{section['mean'][str(s)][key]:.4f}" for s in section['severities'])
    return f"{key} {section['clean'][key]:.4f} -> {by_severity}"
  return (f"shift ({section['num_examples']} test examples, mean over "
          f"{len(section['corruptions'])} corruptions; clean -> severities "
          f"{', '.join(map(str, section['severities']))}): {scores('accuracy')}; "
          f"{scores('ece')}")
