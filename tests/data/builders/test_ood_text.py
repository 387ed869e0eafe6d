"""The `ood_text` builder: standard-library docstring sentences prepared and read back."""
from sve_jax import data
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
