"""Corrupted views of a split (`sve_jax.data.corruptions`): per-example seeds independent of
how the view is read, labels untouched, and the checks of configured names."""
import numpy as np
import pytest

from sve_jax.data import corruptions
from sve_jax.data import image_corruptions
from sve_jax.data import pipeline
from sve_jax.data import text_noise


def _images(n):
  rng = np.random.default_rng(0)
  return [{'image': rng.integers(0, 256, (28, 28, 1), dtype=np.uint8), 'label': i % 3}
          for i in range(n)]


def test_a_view_corrupts_each_example_with_its_own_seed_however_it_is_read():
  source = _images(5)
  view = corruptions.CorruptedSource(source, 'image',
                                     corruptions.Corruption('gaussian_noise', 2, seed=4))
  assert len(view) == 5
  batch = pipeline.read_examples(view, [3, 1])  # through __getitems__
  for example, i in zip(batch, [3, 1]):
    expected = image_corruptions.corrupt_image(
        source[i]['image'], 'gaussian_noise', 2,
        corruptions.example_seed(4, 'gaussian_noise', 2, i))
    np.testing.assert_array_equal(example['image'], expected)
    np.testing.assert_array_equal(view[i]['image'], expected)  # one at a time: the same
    assert example['label'] == source[i]['label']
  # Through the evaluation pipeline, in batches of 2 with padding.
  images = np.concatenate([b['image'][b['mask']] for b in pipeline.eval_batches(
      view, global_batch_size=2)])
  np.testing.assert_array_equal(images, [view[i]['image'] for i in range(5)])
  noise = [view[i]['image'].astype(int) - source[i]['image'] for i in (0, 1)]
  assert not np.array_equal(*noise)  # each example draws its own noise


def test_text_examples_come_back_corrupted_as_str():
  source = [{'text': 'the quick brown fox jumps over the lazy dog'.encode(), 'label': 1}]
  view = corruptions.CorruptedSource(source, 'text', corruptions.Corruption('char_drop', 5, 0))
  out = view[0]['text']
  assert out == text_noise.corrupt_text('the quick brown fox jumps over the lazy dog',
                                        'char_drop', 5, corruptions.example_seed(0, 'char_drop',
                                                                                 5, 0))
  assert len(out) == len(source[0]['text']) - 7  # round(0.2 · 35 letters)


def test_example_seeds_differ_by_every_coordinate():
  seeds = {corruptions.example_seed(*args) for args in [
      (0, 'contrast', 1, 0), (1, 'contrast', 1, 0), (0, 'fog', 1, 0), (0, 'contrast', 2, 0),
      (0, 'contrast', 1, 1)]}
  assert len(seeds) == 5 and all(0 <= s < 2**32 for s in seeds)


def test_names_by_modality_and_families():
  assert set(corruptions.DEFAULTS['image']) <= set(corruptions.BY_MODALITY['image'])
  assert corruptions.DEFAULTS['text'] == text_noise.CORRUPTIONS
  assert corruptions.family('shot_noise') == 'noise'
  assert corruptions.family('char_swap') == 'characters'


def test_configured_names_and_severities_are_checked_naming_the_key():
  corruptions.check_names(('contrast', 'char_typo'), 'config.shift.corruptions')
  with pytest.raises(ValueError, match=r"^config.shift.corruptions: 'rain' is not a known"):
    corruptions.check_names(('rain',), 'config.shift.corruptions')
  with pytest.raises(ValueError, match="'char_typo' is not a corruption of image data"):
    corruptions.check_names(('contrast', 'char_typo'), 'k', modality='image')
  with pytest.raises(ValueError, match='repeats'):
    corruptions.check_names(('fog', 'fog'), 'k')
  corruptions.check_severities((1, 5), 'config.shift.severities')
  for bad in ((), (0,), (6,), (1, 1), (True,)):
    with pytest.raises(ValueError, match=r'^config.shift.severities=.* must be distinct'):
      corruptions.check_severities(bad, 'config.shift.severities')
