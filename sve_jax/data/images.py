"""Image files: a folder with one subfolder per class, and decoding one image with PIL."""

from __future__ import annotations

import logging
import os

import numpy as np

IMAGE_SUFFIXES = ('.bmp', '.gif', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp')


def list_image_folder(folder: str | os.PathLike) -> list[tuple[str, str]]:
  """Lists `(relative path, class name)` of a folder with a subfolder per class.

  Subfolders and files are sorted by name; hidden entries are ignored, and files
  without an image suffix (`IMAGE_SUFFIXES`) are skipped with a warning that
  counts them.

  Raises:
    ValueError: naming the folder if it has no class subfolder or no image, or
      naming a class subfolder that holds no image.
  """
  if not os.path.isdir(folder):
    raise ValueError(f'{folder}: not a folder (expected one subfolder per class).')
  classes = sorted(e.name for e in os.scandir(folder)
                   if e.is_dir() and not e.name.startswith('.'))
  if not classes:
    raise ValueError(f'{folder}: no class subfolders (expected one per class).')
  files, skipped = [], []
  for name in classes:
    entries = [e for e in sorted(os.scandir(os.path.join(folder, name)), key=lambda e: e.name)
               if e.is_file() and not e.name.startswith('.')]
    images = [e for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
    skipped += [f'{name}/{e.name}' for e in entries if e not in images]
    if not images:
      raise ValueError(f'{os.path.join(folder, name)}: class folder without image files '
                       f'(suffixes {IMAGE_SUFFIXES}); add images or remove the folder, as a '
                       'class without examples cannot be learned.')
    files += [(f'{name}/{e.name}', name) for e in images]
  if skipped:
    logging.warning('%s: skipped %d file(s) without an image suffix %s: %s', folder,
                    len(skipped), IMAGE_SUFFIXES, skipped[:5])
  if not files:
    raise ValueError(f'{folder}: no image files with suffix in {IMAGE_SUFFIXES}.')
  return files


def load_image(path: str | os.PathLike, size: tuple[int, int],
               channels: int = 3) -> np.ndarray:
  """Decodes an image with PIL and resizes it (bilinear) to `size = (h, w)`.

  Any PIL mode is converted: grey to RGB repeats the grey level, and an alpha
  channel is dropped (not composited onto a background).

  Returns:
    uint8 array of shape `(h, w, channels)`; `channels` is 3 (RGB) or 1 (L).

  Raises:
    ValueError: naming the file if PIL cannot decode it (corrupt or not an image).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  mode = {3: 'RGB', 1: 'L'}[channels]
  try:
    with Image.open(path) as image:
      resized = image.convert(mode).resize((size[1], size[0]), Image.BILINEAR)
  except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for damaged files
    raise ValueError(f'{path}: cannot decode the image ({type(e).__name__}: {e}); replace '
                     'or delete the file.') from None
  return np.asarray(resized, np.uint8).reshape(size[0], size[1], channels)
