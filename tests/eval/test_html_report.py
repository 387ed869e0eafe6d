"""report.html: self-contained, renders in headless Chromium with every figure and no error,
and its summary shows results.json's numbers."""
import dataclasses
import html.parser
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from sve_jax.eval import html_report
from sve_jax.eval import metrics
from sve_jax.eval import selective

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--enable-logging=stderr',
                  '--v=0', '--virtual-time-budget=5000')


def _inputs(tmp_path, with_ood=True):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 60)
  logits = rng.normal(size=(3, 60, 3)) + 2. * np.eye(3)[labels]
  scores = lambda split: {k: float(v) for k, v in metrics.evaluate(logits, labels).items()}
  members = metrics.member_metrics(logits, labels)
  correct = np.asarray(metrics.ensemble_probs(logits)).argmax(-1) == labels
  uncertainty = html_report.uncertainty_scores(logits, 'probs')
  results = {
      'method': 'sve', 'num_members': 3, 'config': {'data': {'name': 'toy'}},
      'test': scores('test'),
      'test_temperature_scaled': metrics.evaluate(logits, labels, temperature=1.3),
      'members': members, 'members_mean': metrics.members_mean(logits, labels),
      'zero_shot': {'test': {'accuracy': 0.4, 'nll': 1.05, 'brier': 0.6, 'ece': 0.1}},
      'selective': selective.selective_section(uncertainty, correct)}
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    for step in (5, 10):
      f.write(json.dumps({'step': step, 'epoch': 0, 'loss': 1. / step}) + '\n')
      f.write(json.dumps({'step': step, 'val_nll': 0.9, 'val_accuracy': 0.6,
                          'ood_auroc_mi': 0.7}) + '\n')
  return html_report.ReportInputs(
      results=results, test_logits=logits, test_labels=labels,
      class_names=('negative', 'neutral', 'positive'),
      describe=lambda i: f'tweet <{i}> & more', metrics_path=str(tmp_path / 'metrics.jsonl'),
      ood_logits=rng.normal(size=(3, 40, 3)) if with_ood else None)


class _Summary(html.parser.HTMLParser):
  """The summary table's cells: ``{row label: {key: text}}``, and every <img> src."""

  def __init__(self):
    super().__init__()
    self.rows, self.images, self.body = {}, [], {}
    self._row = self._key = None
    self._in_summary = False

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == 'body':
      self.body = attrs
    if tag == 'table':
      self._in_summary = attrs.get('id') == 'summary'
    if tag == 'img':
      self.images.append(attrs['src'])
    if self._in_summary and tag == 'tr' and 'data-row' in attrs:
      self._row = attrs['data-row']
      self.rows[self._row] = {}
    if self._in_summary and tag == 'td':
      self._key = attrs.get('data-key')

  def handle_data(self, data):
    if self._row and self._key:
      self.rows[self._row][self._key] = data.strip()
      self._key = None


def test_examples_are_the_highest_mi_and_the_most_confident_mistakes(tmp_path):
  inputs = _inputs(tmp_path)
  tables = html_report.example_tables(inputs, 'probs', count=5)
  mi = np.asarray(metrics.mutual_information(metrics.member_probs(inputs.test_logits)))
  assert [r['index'] for r in tables['highest_mi']] == list(np.argsort(-mi)[:5])
  probs = np.asarray(metrics.ensemble_probs(inputs.test_logits))
  wrong = np.flatnonzero(probs.argmax(-1) != inputs.test_labels)
  expected = wrong[np.argsort(-probs.max(-1)[wrong])][:5]
  assert [r['index'] for r in tables['confident_mistakes']] == list(expected)
  first = tables['confident_mistakes'][0]
  assert first['prediction'] != first['label'] and len(first['votes']) == 3


@pytest.mark.slow  # over 5 s on 2 cores
def test_the_page_is_self_contained(tmp_path):
  page = html_report.render_html(_inputs(tmp_path))
  assert not re.search(r'(src|href)="(https?:)?//', page)
  # Example text is escaped, not markup.
  assert 'tweet &lt;0&gt; &amp; more' in page and 'tweet <0>' not in page


@pytest.mark.slow
def test_report_renders_in_chromium_with_every_figure_and_the_results_numbers(tmp_path):
  assert CHROMIUM, 'no chromium on PATH: `bash scripts/setup.sh --test` installs it (as root)'
  inputs = _inputs(tmp_path)
  path = html_report.write_html_report(str(tmp_path), inputs)
  proc = subprocess.run(
      [CHROMIUM, *CHROMIUM_FLAGS, f'--user-data-dir={tmp_path / "profile"}', '--dump-dom',
       f'file://{path}'], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  console = [line for line in proc.stderr.splitlines() if 'CONSOLE' in line]
  assert not [line for line in console if 'rror' in line], console
  dom = _Summary()
  dom.feed(proc.stdout)
  assert dom.body.get('data-rendered') == 'yes', proc.stdout[:500]
  assert dom.body['data-figures'] == '3'          # learning curves, risk-coverage, OOD
  assert dom.body['data-failed-figures'] == '' and dom.body['data-errors'] == ''
  assert all(src.startswith('data:image/png;base64,') for src in dom.images)
  results = inputs.results
  expected = {'ensemble (raw)': results['test'],
              'ensemble (T-scaled)': results['test_temperature_scaled'],
              'members, mean': results['members_mean'], 'member 2': results['members'][2],
              'zero-shot (raw)': results['zero_shot']['test']}
  for row, scores in expected.items():
    for key in ('accuracy', 'nll', 'ece'):
      assert float(dom.rows[row][key]) == pytest.approx(scores[key], abs=5e-5), (row, key)
  assert float(dom.rows['ensemble (raw)']['aurc']) == pytest.approx(
      results['selective']['msp']['aurc'], abs=5e-5)


def test_the_ood_table_lists_each_sets_aurocs_feature_scores_included(tmp_path):
  inputs = _inputs(tmp_path, with_ood=False)
  sets = {'ood_text': {'auroc_mi': 0.61, 'auroc_mahalanobis': 0.93},
          'fortunes_text': {'auroc_mi': 0.55, 'auroc_mahalanobis': 0.71}}
  assert html_report.ood_rows({'ood': {'dataset': 'ood_text', **sets['ood_text']}}) == [
      ('ood_text', {'dataset': 'ood_text', **sets['ood_text']})]
  page = html_report.render_html(dataclasses.replace(
      inputs, results={**inputs.results, 'ood': {'dataset': 'ood_text', **sets['ood_text']},
                       'ood_sets': sets}))
  table = page[page.index('<table id="ood">'):]
  table = table[:table.index('</table>')]
  for name, scores in sets.items():
    row = re.search(f'<tr data-row="{name}">(.*?)</tr>', table).group(1)
    assert re.findall(r'data-key="(\w+)">([\d.]+)<', row) == [
        (key, f'{value:.4f}') for key, value in scores.items()]
  assert 'id="ood"' not in html_report.render_html(inputs)  # no OOD set, no table


def test_a_shift_evaluation_gets_its_table_of_mean_scores_per_severity_and_its_figure(tmp_path):
  from sve_jax.eval import shift
  inputs = _inputs(tmp_path, with_ood=False)
  by_severity = lambda acc: {'accuracy': acc, 'nll': 1. - acc, 'ece': acc / 10, 'entropy': 0.5}
  section = shift.shift_section(
      by_severity(0.9), {'fog': {1: by_severity(0.8), 3: by_severity(0.4)},
                         'blur': {1: by_severity(0.6), 3: by_severity(0.2)}},
      {'fog': 'weather', 'blur': 'blur'}, num_examples=40)
  page = html_report.render_html(dataclasses.replace(
      inputs, results={**inputs.results, 'shift': section}))
  table = page[page.index('<table id="shift">'):]
  table = table[:table.index('</table>')]
  rows = {severity: dict(re.findall(r'data-key="(\w+)">([\d.]+)<', cells)) for severity, cells
          in re.findall(r'<tr data-row="(\w+)"><th>\w+</th>(.*?)</tr>', table)}
  # Clean, then each severity's mean over the two corruptions: (0.8 + 0.6) / 2, (0.4 + 0.2) / 2.
  assert {s: float(r['accuracy']) for s, r in rows.items()} == pytest.approx(
      {'clean': 0.9, '1': 0.7, '3': 0.3})
  assert float(rows['3']['ece']) == pytest.approx(0.03)
  assert 'alt="accuracy and ECE under corruption"' in page
  plain = html_report.render_html(inputs)
  assert 'id="shift"' not in plain and 'under corruption' not in plain
