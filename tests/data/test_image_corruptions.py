"""ImageNet-C's corruptions (`sve_jax.data.image_corruptions`) on small RGB and grey images:
stronger with severity, shape and dtype kept, deterministic given a seed."""
import numpy as np
import pytest

from sve_jax.data import image_corruptions

#: Corruptions whose distance to the clean image need not grow at every severity step, on
#: ImageNet-C's own parameters: glass blur's iterations, frost's blend and crop, pixelate's
#: box sizes on tiny images and snow's random flakes are not monotone in severity, fog's
#: severities 3 and 4 share one strength (2.5; only the fractal's roughness differs), and
#: saturate first removes, then adds saturation.
NOT_MONOTONE = ('glass_blur', 'frost', 'fog', 'pixelate', 'snow', 'saturate')
#: numba compiles glass blur on first use (~4 s): tested alone, marked slow.
FAST = tuple(n for n in image_corruptions.CORRUPTIONS if n != 'glass_blur')


def _image(height, width, channels):
  """A smooth test picture: two gradients, stripes and a bright square."""
  y, x = np.mgrid[0:height, 0:width]
  planes = [x * 255 / width, y * 255 / height, ((x + y) % 16 < 8) * 200 + 20]
  image = np.stack(planes[:channels], -1)
  image[height // 4:height // 2, width // 4:width // 2] = 240
  return image.astype(np.uint8)


IMAGES = {'rgb32': _image(32, 32, 3), 'grey28': _image(28, 28, 1)}


def _distances(image, name, seed=7):
  clean = image.astype(np.float64)
  return [np.sqrt(np.mean((image_corruptions.corrupt_image(image, name, s, seed) - clean)**2))
          for s in image_corruptions.SEVERITIES]


def test_the_names_are_the_packages():
  import imagecorruptions
  assert set(image_corruptions.CORRUPTIONS) == set(imagecorruptions.get_corruption_names('all'))
  assert image_corruptions.BENCHMARK == tuple(imagecorruptions.get_corruption_names('common'))


@pytest.mark.parametrize('kind', IMAGES)
@pytest.mark.parametrize('name', FAST)
def test_each_corruption_keeps_shape_dtype_and_is_seeded(name, kind):
  image = IMAGES[kind]
  for severity in (1, 5):
    out = image_corruptions.corrupt_image(image, name, severity, seed=3)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, image_corruptions.corrupt_image(image, name, severity, 3))
  # NumPy's global generator is left as it was.
  np.random.seed(0)
  expected = np.random.rand()
  np.random.seed(0)
  image_corruptions.corrupt_image(image, name, 3, seed=3)
  assert np.random.rand() == expected


@pytest.mark.parametrize('kind', IMAGES)
@pytest.mark.parametrize('name', [n for n in FAST if n not in NOT_MONOTONE])
def test_the_image_moves_further_from_the_clean_one_as_severity_grows(name, kind):
  distances = _distances(IMAGES[kind], name)
  assert distances[0] > 0
  assert np.all(np.diff(distances) > 0), distances


@pytest.mark.parametrize('kind', IMAGES)
@pytest.mark.parametrize('name', [n for n in NOT_MONOTONE if n != 'glass_blur'])
def test_the_others_still_change_the_image_at_every_severity(name, kind):
  distances = _distances(IMAGES[kind], name)
  if name == 'saturate' and kind == 'grey28':  # no colour to (de)saturate until severity 4
    assert distances[:3] == pytest.approx([0] * 3, abs=1) and distances[4] > 5
  else:
    assert min(distances) > 1


def test_random_corruptions_differ_by_seed():
  image = IMAGES['rgb32']
  for name in ('gaussian_noise', 'impulse_noise', 'elastic_transform'):
    assert not np.array_equal(image_corruptions.corrupt_image(image, name, 3, 0),
                              image_corruptions.corrupt_image(image, name, 3, 1))


def test_a_grey_image_stays_grey_and_matches_its_rgb_copy_where_the_channels_agree():
  grey = IMAGES['grey28']
  rgb = np.repeat(grey, 3, -1)
  for name in ('contrast', 'defocus_blur', 'brightness'):  # colourless: channels stay equal
    out_rgb = image_corruptions.corrupt_image(rgb, name, 3, 0)
    out_grey = image_corruptions.corrupt_image(grey, name, 3, 0)
    np.testing.assert_allclose(out_grey[..., 0], out_rgb[..., 0], atol=1)


@pytest.mark.slow
def test_glass_blur_keeps_shape_dtype_is_seeded_and_changes_the_image():
  for image in IMAGES.values():
    out = image_corruptions.corrupt_image(image, 'glass_blur', 2, seed=3)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, image_corruptions.corrupt_image(image, 'glass_blur', 2, 3))
    assert min(_distances(image, 'glass_blur')) > 1


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match='uint8'):
    image_corruptions.corrupt_image(np.zeros((8, 8, 3), np.float32), 'contrast', 1, 0)
  with pytest.raises(ValueError, match='unknown image corruption'):
    image_corruptions.corrupt_image(IMAGES['rgb32'], 'rain', 1, 0)
  with pytest.raises(ValueError, match='severity'):
    image_corruptions.corrupt_image(IMAGES['rgb32'], 'contrast', 6, 0)
