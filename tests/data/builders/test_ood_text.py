"""The OOD text builders prepared and read back: `ood_text` (standard-library docstring
sentences) and `fortunes_text` (Debian's fortune cookies)."""
import os

from sve_jax import data
from sve_jax.data import fortunes
from sve_jax.data import stdlib_text

from conftest import all_examples


def test_ood_text_sentences(shared_data_dir):
  dataset = data.get_dataset({'name': 'ood_text'}, shared_data_dir)
  assert list(dataset.splits) == ['test'] and dataset.label_key is None
  texts = [ex['text'].decode() for ex in all_examples(dataset.splits['test'])]
  assert 1500 <= len(texts) <= 2000 and len(set(texts)) == len(texts)
  assert all(6 <= len(t.split()) <= 40 and t.endswith('.') for t in texts)
  assert 'os' in dataset.info.metadata['modules']


def test_options_choose_the_modules_and_the_limits(tmp_path):
  dataset = data.get_dataset({'name': 'ood_text', 'modules': ['textwrap'], 'max_sentences': 5},
                             str(tmp_path))
  examples = sorted(all_examples(dataset.splits['test']), key=lambda ex: int(ex['id']))
  assert [int(ex['id']) for ex in examples] == list(range(5))  # ids in walk order
  assert [ex['text'].decode() for ex in examples] == stdlib_text.docstring_sentences(
      ('textwrap',), max_sentences=5)


def test_fortunes_text_matches_the_cookie_file(shared_data_dir):
  dataset = data.get_dataset({'name': 'fortunes_text'}, shared_data_dir)
  assert list(dataset.splits) == ['test'] and dataset.label_key is None
  examples = sorted(all_examples(dataset.splits['test']), key=lambda ex: int(ex['id']))
  texts = [ex['text'].decode() for ex in examples]
  # The source read independently: entries between '%' lines, whitespace collapsed.
  with open(os.path.join(fortunes.FORTUNES_DIR, 'fortunes'), encoding='utf-8') as f:
    raw = [' '.join(entry.split()) for entry in f.read().split('\n%\n')]
  expected = list(dict.fromkeys(t for t in raw if 3 <= len(t.split()) <= 40))
  assert texts == expected and len(texts) > 400
  assert dataset.info.metadata['files'] == ['fortunes']


def test_options_choose_the_files_and_the_limits(tmp_path):
  (tmp_path / 'cookies').write_text('A short quip.\n%\nA somewhat longer quip, this one.\n')
  dataset = data.get_dataset({'name': 'fortunes_text', 'fortunes_dir': str(tmp_path),
                              'files': ['cookies'], 'max_words': 3}, str(tmp_path / 'data'))
  assert [ex['text'].decode() for ex in all_examples(dataset.splits['test'])] == [
      'A short quip.']
