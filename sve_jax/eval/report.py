"""Results of an evaluation run: the results dict, results.json, a text table, a PNG.

:func:`build_results` assembles the dict the project promises (all numbers come from
:mod:`sve_jax.eval.metrics`)::

  method, num_members,
  params: backbone, trainable_per_member, trainable_total, overhead,
  test, test_temperature_scaled: accuracy, nll, brier, ece, temperature,
  members: [{accuracy, nll, ece}, ...],  members_mean: accuracy, nll, ece,
  diversity: disagreement, mutual_information,
  validation: the ensemble's metrics, members_mean_*, disagreement, mutual_information,
  ensemble_modes: {probs, logits}: validation, test, test_temperature_scaled (, ood),
  ood: dataset (, auroc_mahalanobis, auroc_feature_disagreement: with feature scores),
       auroc_msp, auroc_entropy, auroc_mi, fpr95_mi               (only with OOD logits)
  ood_sets: {dataset: the ood section's scores, for every set}     (only with several sets)
  selective: {msp, entropy, mi}: aurc, accuracy_at_coverage {0.8, 0.9, 0.95}, curve
  human_disagreement: entropy, mutual_information, one_minus_max_prob, num_examples
                                                                 (only with agreement)
  zero_shot: validation, test, test_temperature_scaled (, ood)  (backbones without a fresh
                                                                 head: the pretrained model)
  shift: num_examples, severities, clean, corruptions, mean, families
                                                                 (with config.shift.enabled)
  singular_value_change                                          (SVE family runs)
  posterior: approximation, prior_precision, validation_nll, fit_examples, train_examples
                                                   (laplace_lora: its posterior's fit)
  checkpoint: best_step, best_val_accuracy, checkpoint_bytes, trainables_file_bytes,
              backbone_bytes                                     (:class:`BestCheckpoint`)
  learning_rate                                                  (the method's peak)
  config                                                         (the run's config as JSON)

* ``test``: the ensemble on the test split at T = 1; ``test_temperature_scaled``: at the T
  fitted on the validation split (:func:`sve_jax.eval.metrics.fit_temperature`).
* ``members``, ``members_mean``, ``diversity``: raw (T = 1) test logits.
* ``validation``: :func:`sve_jax.eval.metrics.ensemble_and_members` on the validation split.
* ``ensemble_modes``: ``validation``, ``test``, ``test_temperature_scaled`` (and ``ood``)
  under each averaging mode, from the same logits (no retraining to compare them).
* ``ood``: the test split as in-distribution against the (first) OOD set's logits, raw
  (T = 1); with feature scores (:attr:`OodLogits.feature_metrics`) also the AUROCs of the
  feature-space scores (:func:`sve_jax.eval.feature_ood.feature_ood_metrics`).
* ``ood_sets``: the same scores for each OOD set, the first included, side by side.
* ``selective``: abstaining on the least certain test examples first, ranked by each score
  (:func:`sve_jax.eval.selective.selective_section`): the risk–coverage curve, its area
  (AURC, lower is better) and the accuracy at 80%, 90% and 95% coverage, raw (T = 1).
* ``human_disagreement``: Spearman correlations of the test uncertainties with
  ``1 − agreement`` (:func:`sve_jax.eval.metrics.disagreement_correlation`).
* ``zero_shot``: the pretrained model before any training, scored as the trained ensemble is
  (:func:`zero_shot_results`): a decoder classifying by prompt with its LM's own head has a
  meaningful one, and every trained row is read against it.
* ``shift``: the ensemble on a test subset, clean and under each corruption at each severity
  (:mod:`sve_jax.eval.shift`).
* ``params``: ``trainable_total`` (by default ``num_members · trainable_per_member``) and
  ``overhead = trainable_total / backbone``.
* ``zero_shot``, ``shift`` and the last four are what a training run adds
  (``sve_jax.train.run``); a bare :func:`build_results` call leaves them out.

:func:`write_results` stores it as ``results.json``, :func:`summary_table` renders it as plain
text, and :func:`reliability_diagram` draws the calibration of the ensemble and of one member.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sve_jax.eval import metrics
from sve_jax.eval import selective
from sve_jax.eval import shift as shift_lib

RESULTS_FILENAME = 'results.json'
OOD_KEYS = ('auroc_msp', 'auroc_entropy', 'auroc_mi', 'fpr95_mi')
_SCORE_KEYS = ('accuracy', 'nll', 'brier', 'ece', 'temperature')


class Predictions(NamedTuple):
  """Member logits on one split, with its labels.

  Attributes:
    logits: ``(M, N, C)`` member logits.
    labels: ``(N,)`` integer labels.
    agreement: ``(N,)`` annotators' agreement (0–1, NaN = unknown) where the data set records
      it (feature ``sve_jax.data.AGREEMENT_FEATURE``), else ``None``.
    features: ``(M, N, D)`` the pooled features each member's head read, where asked for
      (:attr:`sve_jax.methods.MethodSetup.features`), else ``None``.
  """
  logits: np.ndarray
  labels: np.ndarray
  agreement: np.ndarray | None = None
  features: np.ndarray | None = None


class ParamCounts(NamedTuple):
  """The ``params`` section's inputs.

  Attributes:
    backbone: parameters of the pretrained backbone, head included.
    trainable_per_member: trainable parameters of one member (singular values, biases, head).
    trainable_total: trainable parameters of the whole ensemble, when they are not
      ``num_members · trainable_per_member`` (MC dropout: M samples of one trained model);
      ``None``: that product.
  """
  backbone: int
  trainable_per_member: int
  trainable_total: int | None = None


class OodLogits(NamedTuple):
  """Member logits ``(M, N_ood, C)`` on an out-of-distribution data set, and its name.

  Attributes:
    dataset: its name.
    logits: ``(M, N_ood, C)``.
    feature_metrics: AUROCs of feature-space scores of the test split against this set
      (:func:`sve_jax.eval.feature_ood.feature_ood_metrics`), reported beside the logits'
      scores; ``None``: none.
  """
  dataset: str
  logits: np.ndarray
  feature_metrics: Mapping[str, float] | None = None


class BestCheckpoint(NamedTuple):
  """The ``checkpoint`` section: which checkpoint was evaluated, and what storing it costs.

  Attributes:
    best_step: the step of the best checkpoint (the one evaluated).
    best_val_accuracy: the validation accuracy that made it the best (``None``: unrecorded).
    checkpoint_bytes: the files of the best orbax checkpoint (trainables and optimiser state).
    trainables_file_bytes: ``trainables.safetensors``, the members' trainables alone.
    backbone_bytes: the pretrained backbone's params, which every member shares.
  """
  best_step: int
  best_val_accuracy: float | None
  checkpoint_bytes: int
  trainables_file_bytes: int
  backbone_bytes: int


class RunSections(NamedTuple):
  """The sections a training run adds to the results; each ``None`` leaves its section out.

  Attributes:
    zero_shot: the pretrained model's own scores (:func:`zero_shot_results`), for a
      backbone without a fresh head.
    singular_value_change: SVE family: how far the members' s moved from the pretrained s.
    shift: the scores under corruption (:func:`sve_jax.eval.shift.shift_section`).
    posterior: a method with a posterior fitted after training (``laplace_lora``): what
      the fit recorded (its approximation, the chosen prior precision, ...).
    checkpoint: the evaluated checkpoint (:class:`BestCheckpoint`).
    learning_rate: the method's peak learning rate.
    config: the run's config as JSON.
  """
  zero_shot: Mapping[str, Any] | None = None
  singular_value_change: float | None = None
  shift: Mapping[str, Any] | None = None
  posterior: Mapping[str, Any] | None = None
  checkpoint: BestCheckpoint | None = None
  learning_rate: float | None = None
  config: Mapping[str, Any] | None = None


def build_results(method: str, validation: Predictions, test: Predictions,
                  params: ParamCounts, *, ood: OodLogits | Sequence[OodLogits] | None = None,
                  mode: str = 'probs', run: RunSections | None = None) -> dict[str, Any]:
  """Evaluates member logits and assembles the whole results dict (see the module docstring).

  Args:
    method: name of the method, e.g. ``'sve'``.
    validation: member logits and labels on the validation split.
    test: member logits, labels and (optionally) annotator agreement on the test split.
    params: the parameter counts (:class:`ParamCounts`).
    ood: optional member logits on an OOD data set, with its name; or several sets, the
      first reported as ``ood`` and all of them in ``ood_sets``.
    mode: ensemble averaging mode, see :func:`sve_jax.ensemble_probs`.
    run: what a training run adds (:class:`RunSections`); ``None`` leaves it all out.

  Returns:
    A dict of Python scalars, strings, lists and dicts.
  """
  num_members = int(np.shape(test.logits)[0])
  trainable_total = params.trainable_total
  if trainable_total is None:
    trainable_total = num_members * int(params.trainable_per_member)
  results = {
      'method': method,
      'num_members': num_members,
      'params': _params_section(params.backbone, params.trainable_per_member, trainable_total),
      **_score_sections(validation, test, ood, mode=mode),
  }
  agreement = test.agreement
  if agreement is not None and np.isfinite(np.asarray(agreement, float)).any():
    results['human_disagreement'] = metrics.disagreement_correlation(
        test.logits, agreement, mode=mode)
  results.update(_run_sections(run or RunSections()))
  return results


def _params_section(backbone_params: int, trainable_per_member: int,
                   trainable_total: int) -> dict[str, Any]:
  """The ``params`` section; ``overhead`` is what the whole ensemble trains, as a fraction of
  the frozen backbone."""
  return {
      'backbone': int(backbone_params),
      'trainable_per_member': int(trainable_per_member),
      'trainable_total': int(trainable_total),
      'overhead': trainable_total / int(backbone_params),
  }


def _run_sections(run: RunSections) -> dict[str, Any]:
  """The sections a training run adds, in the results dict's order; ``None`` leaves one out."""
  sections = {'zero_shot': dict(run.zero_shot) if run.zero_shot is not None else None,
              'singular_value_change': run.singular_value_change,
              'shift': dict(run.shift) if run.shift is not None else None,
              'posterior': dict(run.posterior) if run.posterior is not None else None,
              'checkpoint': run.checkpoint._asdict() if run.checkpoint is not None else None,
              'learning_rate': run.learning_rate, 'config': run.config}
  return {key: value for key, value in sections.items() if value is not None}


def _score_sections(validation: Predictions, test: Predictions,
                    ood: OodLogits | Sequence[OodLogits] | None, *,
                    mode: str) -> dict[str, Any]:
  """``test`` … ``ensemble_modes`` (and ``ood``, ``ood_sets``) of the results dict, in its
  order."""
  ood_sets = [] if ood is None else [ood] if isinstance(ood, OodLogits) else list(ood)
  ood = ood_sets[0] if ood_sets else None
  ood_logits = None if ood is None else ood.logits
  by_mode = {m: _mode_results(validation, test, ood_logits, mode=m)
             for m in metrics.ENSEMBLE_MODES}
  sections = {
      'test': by_mode[mode]['test'],
      'test_temperature_scaled': by_mode[mode]['test_temperature_scaled'],
      'members': metrics.member_metrics(test.logits, test.labels),
      'members_mean': metrics.members_mean(test.logits, test.labels),
      'diversity': metrics.diversity(test.logits),
      'validation': metrics.ensemble_and_members(validation.logits, validation.labels,
                                                 mode=mode),
      'ensemble_modes': by_mode,
  }
  # Feature-space scores lead where there are any: BENCHMARKS.md recommends them over MI.
  if ood is not None:
    sections['ood'] = {'dataset': ood.dataset, **(ood.feature_metrics or {}),
                       **by_mode[mode]['ood']}
  if len(ood_sets) > 1:
    sections['ood_sets'] = {
        s.dataset: {**(s.feature_metrics or {}),
                    **(by_mode[mode]['ood'] if s is ood else _ood_scores(test.logits, s.logits,
                                                                         mode))}
        for s in ood_sets}
  sections['selective'] = _selective_section(test, mode)
  return sections


def _selective_section(test: Predictions, mode: str) -> dict[str, Any]:
  """The ``selective`` section: each uncertainty score of the ensemble's test predictions
  (:func:`sve_jax.eval.metrics.uncertainty_scores`; ``msp`` is −max probability)."""
  scores = jax.device_get(metrics.uncertainty_scores(test.logits, mode))
  predictions = np.asarray(metrics.ensemble_probs(test.logits, mode)).argmax(-1)
  return selective.selective_section(scores, predictions == np.asarray(test.labels))


def _mode_results(validation: Predictions, test: Predictions, ood_logits, *,
                  mode: str) -> dict[str, Any]:
  """The ensemble's validation, test, temperature-scaled test (and OOD) scores in one mode."""
  temperature = metrics.fit_temperature(validation.logits, validation.labels, mode=mode)
  results = {
      'validation': metrics.evaluate(validation.logits, validation.labels, mode=mode),
      'test': metrics.evaluate(test.logits, test.labels, mode=mode),
      'test_temperature_scaled': metrics.evaluate(
          test.logits, test.labels, temperature=temperature, mode=mode),
  }
  if ood_logits is not None:
    results['ood'] = _ood_scores(test.logits, ood_logits, mode)
  return results


def _ood_scores(test_logits, ood_logits, mode: str) -> dict[str, float]:
  """:data:`OOD_KEYS` of :func:`sve_jax.eval.metrics.ood_metrics`, test against OOD."""
  ood = metrics.ood_metrics(test_logits, ood_logits, mode=mode)
  return {key: ood[key] for key in OOD_KEYS}


def zero_shot_results(validation: Predictions, test: Predictions,
                      ood_logits: jax.typing.ArrayLike | None = None) -> dict[str, Any]:
  """The ``zero_shot`` section: one model's ``(1, N, C)`` logits scored as the ensemble's
  ``test`` rows are: ``validation``, ``test``, ``test_temperature_scaled`` (T fitted on
  validation) and ``ood`` AUROCs (mutual information is 0 for one model)."""
  return _mode_results(validation, test, ood_logits, mode='probs')


def to_jsonable(value: Any) -> Any:
  """Converts a nest of NumPy/JAX scalars and arrays into JSON-ready Python values.

  Mappings become dicts with string keys, tuples and arrays become lists, and non-finite
  floats (NaN, ±inf) become ``None`` (JSON ``null``).
  """
  if isinstance(value, Mapping):
    return {str(key): to_jsonable(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(item) for item in value]
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    return to_jsonable(np.asarray(value).tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_results(workdir: str | os.PathLike, results: Mapping[str, Any]) -> str:
  """Writes ``results`` to ``workdir/results.json`` (indented; NaN as null); returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RESULTS_FILENAME)
  with open(path, 'w') as f:
    # allow_nan=False makes any non-finite value that slipped through an error, not bad JSON.
    json.dump(to_jsonable(results), f, indent=2, allow_nan=False)
    f.write('\n')
  return path


def _format_number(value: Any) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return 'nan'
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    return f'{int(value):,}'
  return f'{float(value):.4f}'


def _table(header: list[str], rows: list[tuple[str, Mapping[str, Any]]]) -> list[str]:
  """Left-aligned row labels, right-aligned columns; missing entries print as '-'."""
  label_width = max(len(label) for label, _ in rows)
  cells = [[_format_number(row[key]) if key in row else '-' for key in header]
           for _, row in rows]
  widths = [max([len(key)] + [len(cell[i]) for cell in cells]) for i, key in enumerate(header)]
  lines = [' ' * label_width + ''.join(f'  {key:>{w}}' for key, w in zip(header, widths))]
  for (label, _), row_cells in zip(rows, cells):
    lines.append(f'{label:<{label_width}}' +
                 ''.join(f'  {cell:>{w}}' for cell, w in zip(row_cells, widths)))
  return lines


def summary_table(results: Mapping[str, Any]) -> str:
  """Renders a results dict as a plain-text report; absent sections are left out.

  Floats are printed with 4 decimals, integers with thousands separators.
  """
  lines = [f"method: {results.get('method', '?')}    members: {results.get('num_members', '?')}"]
  if 'params' in results:
    params = results['params']
    lines.append('params:  ' + '  '.join(
        f'{key} {_format_number(params[key])}' for key in
        ('backbone', 'trainable_per_member', 'trainable_total', 'overhead') if key in params))
  splits = [(label, results[key]) for key, label in
            (('test', 'test (raw)'), ('test_temperature_scaled', 'test (T-scaled)'))
            if key in results]
  zero_shot = results.get('zero_shot', {})
  splits += [(label, zero_shot[key]) for key, label in
             (('test', 'zero-shot test (raw)'),
              ('test_temperature_scaled', 'zero-shot test (T-scaled)')) if key in zero_shot]
  if splits:
    lines += ['', *_table(list(_SCORE_KEYS), splits)]
  if results.get('members'):
    lines += ['', *_table(['accuracy', 'nll', 'ece'],
                          [(f'member {i}', member) for i, member in enumerate(results['members'])])]
  for section in ('members_mean', 'diversity', 'ood', 'human_disagreement'):
    if section in results:
      entries = results[section]
      title = section if 'dataset' not in entries else f"{section} ({entries['dataset']})"
      numbers = [(key, value) for key, value in entries.items() if key != 'dataset']
      lines += ['', *_table([key for key, _ in numbers], [(title, dict(numbers))])]
  if 'ood_sets' in results:
    sets = results['ood_sets']
    keys = list(dict.fromkeys(key for entry in sets.values() for key in entry))
    lines += ['', *_table(keys, [(f'ood ({name})', entry) for name, entry in sets.items()])]
  if 'selective' in results:
    aurc = {f'aurc_{name}': entry['aurc'] for name, entry in results['selective'].items()}
    lines += ['', *_table(list(aurc), [('selective (test)', aurc)])]
  if 'shift' in results:
    lines += ['', shift_lib.summary_line(results['shift'])]
  return '\n'.join(lines) + '\n'


def reliability_diagram(path: str | os.PathLike,
                        member_logits: jax.typing.ArrayLike,
                        labels: jax.typing.ArrayLike,
                        *,
                        member_index: int = 0,
                        mode: str = 'probs',
                        temperature: float = 1.) -> str:
  """Writes a reliability diagram PNG for the ensemble and one member; returns ``path``.

  Top panel: per-bin accuracy against confidence (the 15 bins of
  :func:`sve_jax.eval.metrics.calibration_bins`) for the ensemble and for member ``member_index``
  side by side, with the diagonal of perfect calibration and each ECE in the legend. Bottom
  panel: the fraction of examples per confidence bin. Empty bins draw no accuracy bar.

  Args:
    path: output file (PNG).
    member_logits: ``(M, N, C)``.
    labels: ``(N,)``.
    member_index: which member to draw beside the ensemble.
    mode: ensemble averaging mode, see :func:`sve_jax.ensemble_probs`.
    temperature: T applied to the ensemble and to the member.
  """
  curves = {
      'ensemble': metrics.ensemble_probs(member_logits, mode, temperature),
      f'member {member_index}':
          metrics.member_probs(np.asarray(member_logits)[member_index], temperature),
  }
  figure = Figure(figsize=(6, 7), layout='constrained')
  FigureCanvasAgg(figure)
  top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={'height_ratios': (3, 1)})
  colors = ('tab:blue', 'tab:orange')
  for offset, ((name, probs), color) in enumerate(zip(curves.items(), colors)):
    bins = metrics.CalibrationBins(*map(np.asarray, metrics.calibration_bins(probs, labels)))
    ece = float(metrics.ece(probs, labels))
    half_width = np.diff(bins.edges) / 2.
    lefts = bins.edges[:-1] + offset * half_width
    filled = bins.counts > 0
    top.bar(lefts[filled], bins.accuracy[filled], width=half_width[filled], align='edge',
            color=color, edgecolor='black', linewidth=0.5, label=f'{name} (ECE {ece:.3f})')
    bottom.bar(lefts, bins.counts / bins.counts.sum(), width=half_width, align='edge',
               color=color, edgecolor='black', linewidth=0.5, label=name)
  top.plot([0., 1.], [0., 1.], linestyle='--', color='gray', label='perfect calibration')
  title = f'Reliability ({mode} averaging'
  title += ')' if temperature == 1. else f', T = {temperature:.3g})'
  top.set(title=title, ylabel='accuracy', xlim=(0., 1.), ylim=(0., 1.))
  top.legend(loc='upper left')
  bottom.set(xlabel='confidence (max probability)', ylabel='fraction of examples')
  figure.savefig(path, dpi=120)
  return os.fspath(path)
