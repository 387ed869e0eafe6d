"""``report.html``: one self-contained page a person can read after a run.

The page needs no network: figures are PNGs drawn with matplotlib and inlined as data URIs,
the style sheet is inline, and the one script only checks that the page rendered (it records
failed figures and script errors on ``<body>``, which the browser test reads). It shows:

* the summary table (the ensemble raw and temperature-scaled, the members' mean, each member,
  and the pretrained model zero-shot where the run has it), with AURC;
* the OOD table: per OOD set, the AUROC of each score (the logits' and, where the run
  computed them, the feature-space scores) and the FPR at 95% TPR by MI;
* with a shift evaluation, the mean over corruptions of accuracy, NLL, ECE and predictive
  entropy per severity, and its curves (as ``shift.png``);
* the reliability diagram, learning curves from ``metrics.jsonl`` (loss, validation NLL and
  accuracy, and OOD AUROC where recorded), the risk–coverage curves, and histograms of each
  OOD score for in-distribution against OOD examples;
* the test examples with the highest mutual information, and the most confident mistakes,
  each with the members' votes.

:func:`write_html_report` writes it from a :class:`ReportInputs`.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sve_jax.eval import metrics
from sve_jax.eval import shift as shift_lib

REPORT_FILENAME = 'report.html'
#: How many examples each example table lists.
NUM_EXAMPLES = 20
#: The summary's columns, by their ``results.json`` key.
SUMMARY_KEYS = ('accuracy', 'nll', 'brier', 'ece')
#: The uncertainty scores of the risk–coverage and OOD figures, by their results.json name.
SCORE_LABELS = {'msp': '1 − max probability', 'entropy': 'predictive entropy',
                'mi': 'mutual information'}


@dataclasses.dataclass(frozen=True)
class ReportInputs:
  """What the page is made from.

  Attributes:
    results: the run's results dict (``results.json``).
    test_logits: ``(M, N, C)`` member logits on the test split.
    test_labels: ``(N,)``.
    class_names: one name per class.
    describe: ``index -> str``, the test example shown in the example tables (its text).
    metrics_path: the run's ``metrics.jsonl`` (absent: no learning curves).
    reliability_png: the run's reliability diagram (absent: left out).
    ood_logits: ``(M, N_ood, C)`` member logits on the OOD set, or ``None``.
  """
  results: Mapping[str, Any]
  test_logits: np.ndarray
  test_labels: np.ndarray
  class_names: Sequence[str]
  describe: Callable[[int], str]
  metrics_path: str | None = None
  reliability_png: str | None = None
  ood_logits: np.ndarray | None = None


def _png_uri(figure: Figure) -> str:
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=100)
  return 'data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode('ascii')


def _figure(ncols: int = 1, width: float = 6.) -> tuple[Figure, Any]:
  figure = Figure(figsize=(width, 3.6), layout='constrained')
  FigureCanvasAgg(figure)
  return figure, figure.subplots(1, ncols)


def read_metrics_log(path: str | None) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl`` (``[]`` when there is none)."""
  if not path or not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def learning_curves_figure(records: Sequence[Mapping[str, Any]]) -> str | None:
  """Loss, validation NLL/accuracy and (if logged) OOD AUROC against step, as a data URI."""
  def series(key):
    points = [(r['step'], r[key]) for r in records if r.get(key) is not None]
    return tuple(zip(*points)) if points else None

  panels = [('training loss', ['loss']), ('validation', ['val_nll', 'val_accuracy']),
            ('OOD AUROC', [k for k in ('ood_auroc_msp', 'ood_auroc_entropy', 'ood_auroc_mi')])]
  panels = [(title, [(k, series(k)) for k in keys if series(k)]) for title, keys in panels]
  panels = [(title, lines) for title, lines in panels if lines]
  if not panels:
    return None
  figure, axes = _figure(len(panels), width=4. * len(panels))
  for ax, (title, lines) in zip(np.atleast_1d(axes), panels):
    for key, (steps, values) in lines:
      ax.plot(steps, values, marker='.', label=key)
    ax.set(title=title, xlabel='step')
    ax.legend()
  return _png_uri(figure)


def risk_coverage_figure(selective: Mapping[str, Any]) -> str:
  """Each score's risk–coverage curve (``results['selective']``), as a data URI."""
  figure, ax = _figure()
  for name, entry in selective.items():
    ax.plot(entry['curve']['coverage'], entry['curve']['risk'],
            label=f"{SCORE_LABELS.get(name, name)} (AURC {entry['aurc']:.4f})")
  ax.set(title='Risk against coverage (test)', xlabel='coverage', ylabel='error rate',
         xlim=(0., 1.))
  ax.legend()
  return _png_uri(figure)


def ood_histograms_figure(scores_in: Mapping[str, np.ndarray],
                          scores_out: Mapping[str, np.ndarray]) -> str:
  """Per score, histograms of test (in-distribution) against OOD examples, as a data URI."""
  figure, axes = _figure(len(scores_in), width=4. * len(scores_in))
  for ax, name in zip(np.atleast_1d(axes), scores_in):
    both = np.concatenate([scores_in[name], scores_out[name]])
    bins = np.linspace(both.min(), both.max() + 1e-9, 30)
    ax.hist(scores_in[name], bins=bins, alpha=0.6, density=True, label='test')
    ax.hist(scores_out[name], bins=bins, alpha=0.6, density=True, label='OOD')
    ax.set(title=SCORE_LABELS.get(name, name), xlabel='score (higher = less certain)')
    ax.legend()
  return _png_uri(figure)


def uncertainty_scores(member_logits: np.ndarray, mode: str) -> dict[str, np.ndarray]:
  """``{'msp': 1 − max prob, 'entropy', 'mi'}`` per example, higher = less certain."""
  scores = {k: np.asarray(v, np.float64)
            for k, v in metrics.uncertainty_scores(member_logits, mode).items()}
  scores['msp'] = 1. + scores['msp']   # uncertainty_scores gives −max prob
  return scores


def example_tables(inputs: ReportInputs, mode: str,
                   count: int = NUM_EXAMPLES) -> dict[str, list[dict[str, Any]]]:
  """The ``count`` test examples of highest MI, and the ``count`` most confident mistakes.

  Returns:
    ``{'highest_mi': rows, 'confident_mistakes': rows}``; a row has ``index``, ``text``,
    ``label``, ``prediction``, ``confidence``, ``mi`` and ``votes`` (each member's class).
  """
  logits = np.asarray(inputs.test_logits)
  probs = np.asarray(metrics.ensemble_probs(logits, mode))
  prediction = probs.argmax(-1)
  confidence = probs.max(-1)
  mi = uncertainty_scores(logits, mode)['mi']
  votes = logits.argmax(-1)            # (M, N)
  names = list(inputs.class_names)

  def row(i):
    return {'index': int(i), 'text': inputs.describe(int(i)),
            'label': names[int(inputs.test_labels[i])], 'prediction': names[int(prediction[i])],
            'confidence': float(confidence[i]), 'mi': float(mi[i]),
            'votes': [names[int(v)] for v in votes[:, i]]}

  mistakes = np.flatnonzero(prediction != np.asarray(inputs.test_labels))
  confident = mistakes[np.argsort(-confidence[mistakes], kind='stable')][:count]
  return {'highest_mi': [row(i) for i in np.argsort(-mi, kind='stable')[:count]],
          'confident_mistakes': [row(i) for i in confident]}


def _number(value: Any) -> str:
  return '–' if value is None else f'{float(value):.4f}'


def summary_rows(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
  """``(label, scores)`` rows of the summary table, from ``results.json``'s sections."""
  rows = [(label, results[key]) for key, label in (
      ('test', 'ensemble (raw)'), ('test_temperature_scaled', 'ensemble (T-scaled)'),
      ('members_mean', 'members, mean')) if key in results]
  rows += [(f'member {i}', member) for i, member in enumerate(results.get('members', ()))]
  zero_shot = results.get('zero_shot', {})
  rows += [(label, zero_shot[key]) for key, label in (
      ('test', 'zero-shot (raw)'), ('test_temperature_scaled', 'zero-shot (T-scaled)'))
      if key in zero_shot]
  return rows


def _summary_html(results: Mapping[str, Any]) -> str:
  selective = results.get('selective', {})
  aurc = selective.get('msp', {}).get('aurc')
  header = ''.join(f'<th>{key}</th>' for key in SUMMARY_KEYS) + '<th>AURC (MSP)</th>'
  lines = [f'<table id="summary"><tr><th></th>{header}</tr>']
  for label, scores in summary_rows(results):
    cells = ''.join(f'<td data-key="{key}">{_number(scores.get(key))}</td>'
                    for key in SUMMARY_KEYS)
    extra = _number(aurc) if label == 'ensemble (raw)' else '–'
    lines.append(f'<tr data-row="{html.escape(label)}"><th>{html.escape(label)}</th>{cells}'
                 f'<td data-key="aurc">{extra}</td></tr>')
  return '\n'.join(lines + ['</table>'])


def ood_rows(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
  """``(dataset, scores)`` rows of the OOD table: ``ood_sets``, else the ``ood`` section."""
  if 'ood_sets' in results:
    return list(results['ood_sets'].items())
  if 'ood' in results:
    return [(results['ood'].get('dataset') or 'OOD', results['ood'])]
  return []


def _ood_html(results: Mapping[str, Any]) -> str:
  rows = ood_rows(results)
  if not rows:
    return ''
  keys = list(dict.fromkeys(k for _, scores in rows for k in scores if k != 'dataset'))
  header = ''.join(f'<th>{html.escape(key)}</th>' for key in keys)
  lines = ['<h2>OOD detection (test split against each OOD set)</h2>',
           f'<table id="ood"><tr><th>OOD set</th>{header}</tr>']
  for name, scores in rows:
    cells = ''.join(f'<td data-key="{key}">{_number(scores.get(key))}</td>' for key in keys)
    lines.append(f'<tr data-row="{html.escape(str(name))}"><th>{html.escape(str(name))}</th>'
                 f'{cells}</tr>')
  return '\n'.join(lines + ['</table>'])


def shift_rows(section: Mapping[str, Any]) -> list[tuple[str, Mapping[str, float]]]:
  """``(severity, scores)`` rows of the shift table: clean, then each severity's mean over
  the corruptions."""
  return [('clean', section['clean'])] + [
      (str(s), section['mean'][str(s)]) for s in section['severities']]


def _shift_html(results: Mapping[str, Any]) -> str:
  section = results.get('shift')
  if not section:
    return ''
  header = ''.join(f'<th>{key}</th>' for key in shift_lib.KEYS)
  lines = [f"<h2>Under corruption ({section['num_examples']} test examples, mean over "
           f"{len(section['corruptions'])} corruptions)</h2>",
           f'<table id="shift"><tr><th>severity</th>{header}</tr>']
  for severity, scores in shift_rows(section):
    cells = ''.join(f'<td data-key="{key}">{_number(scores[key])}</td>'
                    for key in shift_lib.KEYS)
    lines.append(f'<tr data-row="{severity}"><th>{severity}</th>{cells}</tr>')
  return '\n'.join(lines + ['</table>'])


def _examples_html(title: str, rows: list[dict[str, Any]]) -> str:
  head = ('<tr><th>#</th><th>example</th><th>label</th><th>prediction</th>'
          '<th>confidence</th><th>MI</th><th>members\' votes</th></tr>')
  body = ''.join(
      f'<tr><td>{r["index"]}</td><td>{html.escape(r["text"])}</td>'
      f'<td>{html.escape(r["label"])}</td><td>{html.escape(r["prediction"])}</td>'
      f'<td>{r["confidence"]:.3f}</td><td>{r["mi"]:.4f}</td>'
      f'<td>{html.escape(", ".join(r["votes"]))}</td></tr>' for r in rows)
  return f'<h2>{html.escape(title)}</h2><table class="examples">{head}{body}</table>'


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
table.examples td:nth-child(2) { text-align: left; max-width: 520px; }
img { max-width: 100%; display: block; margin: 1em 0; }
"""
# Records on <body> whether every figure decoded and whether any script error happened:
# the browser test reads these attributes from the rendered DOM.
_CHECK_SCRIPT = """
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const failed = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  document.body.dataset.figures = String(images.length);
  document.body.dataset.failedFigures = failed.join('|');
  document.body.dataset.errors = window.__errors.join('|');
  document.body.dataset.rendered = 'yes';
});
"""


def render_html(inputs: ReportInputs) -> str:
  """The page as one string (see the module docstring)."""
  results = inputs.results
  mode = results.get('config', {}).get('ensemble_mode', 'probs')
  figures = []
  if inputs.reliability_png and os.path.exists(inputs.reliability_png):
    with open(inputs.reliability_png, 'rb') as f:
      figures.append(('reliability diagram',
                      'data:image/png;base64,' + base64.b64encode(f.read()).decode('ascii')))
  curves = learning_curves_figure(read_metrics_log(inputs.metrics_path))
  if curves:
    figures.append(('learning curves', curves))
  if results.get('selective'):
    figures.append(('risk-coverage', risk_coverage_figure(results['selective'])))
  if inputs.ood_logits is not None:
    figures.append(('OOD scores', ood_histograms_figure(
        uncertainty_scores(inputs.test_logits, mode),
        uncertainty_scores(inputs.ood_logits, mode))))
  if results.get('shift'):
    figures.append(('accuracy and ECE under corruption', _png_uri(shift_lib.shift_figure(
        shift_lib.shift_curves(results['shift']), 'mean over corruptions per severity'))))
  tables = example_tables(inputs, mode)
  title = (f"{results.get('method', '?')} · {results.get('num_members', '?')} members · "
           f"{results.get('config', {}).get('data', {}).get('name', '')}")
  parts = [
      '<!DOCTYPE html><html><head><meta charset="utf-8">',
      f'<title>sve_jax report: {html.escape(title)}</title>',
      f'<style>{_STYLE}</style><script>{_CHECK_SCRIPT}</script></head><body>',
      f'<h1>{html.escape(title)}</h1>', '<h2>Summary (test split)</h2>',
      _summary_html(results), _ood_html(results), _shift_html(results)]
  parts += [f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" src="{uri}">'
            for name, uri in figures]
  parts.append(_examples_html(f'The {NUM_EXAMPLES} test examples of highest mutual '
                              'information', tables['highest_mi']))
  parts.append(_examples_html(f'The {NUM_EXAMPLES} most confident mistakes',
                              tables['confident_mistakes']))
  parts.append('</body></html>')
  return '\n'.join(parts)


def write_html_report(workdir: str, inputs: ReportInputs) -> str:
  """Writes ``workdir/report.html`` atomically (a temporary file, then a rename); its path."""
  path = os.path.join(workdir, REPORT_FILENAME)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(render_html(inputs))
  os.replace(path + '.tmp', path)
  return path
