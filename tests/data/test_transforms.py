"""Preprocessing (`sve_jax.data.transforms`): normalisation, seeded augmentation, resizing
and text decoding, on NumPy batches."""
import numpy as np

from sve_jax.data import pipeline
from sve_jax.data import transforms


def test_normalize_images_known_values():
  images = np.array([0, 51, 255], np.uint8).reshape(1, 1, 3, 1)
  out = transforms.normalize_images(images, mean=[0.5], std=[0.25])
  np.testing.assert_allclose(out.ravel(), [-2.0, -1.2, 2.0], rtol=1e-6)
  assert out.dtype == np.float32


def test_augmentation_is_seeded_crop_and_flip():
  image = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
  seeds = pipeline.example_seeds(seed=0, epoch=0, indices=np.arange(64))
  out = transforms.augment_images([image] * 64, seeds, (6, 10))
  np.testing.assert_array_equal(out, transforms.augment_images([image] * 64, seeds, (6, 10)))
  assert len({o.tobytes() for o in out}) > 32  # Different seeds crop differently.
  # A crop of the whole image leaves only the flip: identity or a mirror.
  whole = transforms.augment_images([image] * 64, seeds, (6, 10),
                                    scale=(1.0, 1.0), ratio=(10 / 6, 10 / 6))
  flipped = [bool((o == image[:, ::-1]).all()) for o in whole]
  assert all(f or (o == image).all() for f, o in zip(flipped, whole))
  assert 0 < sum(flipped) < 64
  later = pipeline.example_seeds(seed=0, epoch=1, indices=np.arange(64))
  assert not np.array_equal(later, seeds)


def test_crop_boxes_stay_inside_the_image():
  rng = np.random.default_rng(0)
  for height, width in [(32, 32), (5, 40), (300, 7), (1, 1)]:
    for _ in range(50):
      top, left, h, w = transforms.random_resized_crop_box(height, width, rng)
      assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
      assert h > 0 and w > 0


def test_text_transform_decodes_and_keeps_mask():
  batch = {'text': [b'h\xc3\xa9llo', 'plain'], 'label': np.array([2, 0]),
           'mask': np.array([True, False])}
  received = []

  def tokenize(texts):
    received.extend(texts)
    return {'input_ids': np.zeros((len(texts), 4), np.int32)}

  out = transforms.text_transform(tokenize)(batch)
  assert received == ['héllo', 'plain']
  assert out['label'].dtype == np.int32 and out['label'].tolist() == [2, 0]
  assert out['mask'].tolist() == [True, False] and out['input_ids'].shape == (2, 4)


def test_resize_and_channels_for_mixed_sizes():
  images = [np.full((4, 9, 1), 7, np.uint8), np.full((12, 3, 1), 200, np.uint8)]
  out = transforms.to_channels(transforms.resize_images(images, (5, 5)), 3)
  assert out.shape == (2, 5, 5, 3)
  assert (out[0] == 7).all() and (out[1] == 200).all()


def test_normalize_images_is_the_per_channel_formula():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
  mean, std = rng.uniform(0.2, 0.8, 3), rng.uniform(0.1, 0.5, 3)
  expected = (images.astype(np.float64) / 255 - mean) / std  # in float64
  got = transforms.normalize_images(images, tuple(mean), tuple(std))
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
