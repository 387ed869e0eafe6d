"""ImageNet-C's common corruptions of uint8 images, seeded, grey images included.

The corruptions are those of Hendrycks & Dietterich (ICLR 2019), which ImageNet-C and
CIFAR-10/100-C apply, as implemented by the ``imagecorruptions`` package (Michaelis et al.,
2019; PyPI ``imagecorruptions-imaug``, the maintained fork that runs on NumPy 2). No
corruption needs Wand/ImageMagick there, and frost's images ship with the package, so all 19
work offline. :data:`BENCHMARK` are the 15 that ImageNet-C and CIFAR-100-C report; the other
four (speckle noise, Gaussian blur, spatter, saturate) are the held-out "extra" set.
``saturate`` changes colour saturation: on grey images it is the identity at severities 1-3.

:func:`corrupt_image` differs from ``imagecorruptions.corrupt`` in three ways:
* it is deterministic given ``seed``: NumPy's global generator, which the package draws from,
  is seeded for the call and then restored (glass blur and impulse noise take the seed
  directly);
* a grey ``(H, W, 1)`` image is repeated to RGB for the package, and its result converted
  back to one channel by ITU-R 601 luma (``0.299 R + 0.587 G + 0.114 B``);
* images under 32 pixels a side (Fashion-MNIST's 28) are accepted: the package's
  ``corrupt`` refuses them, its corruption functions do not.

The package (with OpenCV, scikit-image and numba) is imported on first use only.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import numpy as np
from PIL import Image

#: Every corruption, by name, with its family (as ImageNet-C groups them).
FAMILIES = {
    'gaussian_noise': 'noise', 'shot_noise': 'noise', 'impulse_noise': 'noise',
    'defocus_blur': 'blur', 'glass_blur': 'blur', 'motion_blur': 'blur', 'zoom_blur': 'blur',
    'snow': 'weather', 'frost': 'weather', 'fog': 'weather',
    'brightness': 'digital', 'contrast': 'digital', 'elastic_transform': 'digital',
    'pixelate': 'digital', 'jpeg_compression': 'digital',
    # ImageNet-C's held-out extras.
    'speckle_noise': 'noise', 'gaussian_blur': 'blur', 'spatter': 'weather',
    'saturate': 'digital',
}
CORRUPTIONS = tuple(FAMILIES)
#: The 15 corruptions ImageNet-C and CIFAR-100-C report (the package's ``'common'``).
BENCHMARK = CORRUPTIONS[:15]
SEVERITIES = (1, 2, 3, 4, 5)

#: Corruptions whose function takes the seed itself (numba's or scikit-image's generator).
_SEEDED = ('impulse_noise', 'glass_blur')
_LUMA = np.array([0.299, 0.587, 0.114])


@functools.cache
def _functions() -> dict:
  """``imagecorruptions``' corruption functions by name (imported once, on first use)."""
  import imagecorruptions  # pylint: disable=g-import-not-at-top
  return imagecorruptions.corruption_dict


@contextlib.contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
  """Seeds NumPy's global generator for the block, then restores its state."""
  state = np.random.get_state()
  np.random.seed(seed)
  try:
    yield
  finally:
    np.random.set_state(state)


def corrupt_image(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
  """``image`` under corruption ``name`` at ``severity``, as ImageNet-C makes it.

  Args:
    image: uint8 ``(H, W, C)``, C = 1 (grey) or 3 (RGB).
    name: one of :data:`CORRUPTIONS`.
    severity: 1-5.
    seed: in ``[0, 2**32)``; the same seed gives the same image.

  Returns:
    uint8, ``image``'s shape: the corrupted image, rounded to the nearest level.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f'expected a uint8 (height, width, 1 or 3) image, got {image.dtype} '
                     f'{image.shape}')
  if name not in FAMILIES:
    raise ValueError(f'unknown image corruption {name!r}; known: {CORRUPTIONS}')
  if severity not in SEVERITIES:
    raise ValueError(f'severity must be an integer in [1, 5], got {severity!r}')
  grey = image.shape[-1] == 1
  rgb = np.repeat(image, 3, axis=-1) if grey else image
  kwargs = {'seed': seed} if name in _SEEDED else {}
  with _global_numpy_seed(seed):
    out = _functions()[name](Image.fromarray(rgb), severity, **kwargs)
  out = np.asarray(out, np.float64)
  if grey:
    out = (out @ _LUMA)[..., None]
  return np.rint(np.clip(out, 0, 255)).astype(np.uint8)
