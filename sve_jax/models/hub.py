"""Weights by Hugging Face Hub repo id, through ``huggingface_hub``'s cache.

``config.model.path`` (and :func:`repo_id`) accept a repo instead of a local path:

* ``hf-hub:<org>/<name>``: always a repo (timm's spelling);
* ``<org>/<name>``: a repo when no local path of that name exists.

:func:`fetch` resolves a repo with ``huggingface_hub``, so its cache and settings apply:
files land once in ``HF_HUB_CACHE`` (default ``~/.cache/huggingface/hub``); with
``HF_HUB_OFFLINE=1``, or without a network, the cached snapshot is read and nothing is
downloaded. Only the files a loader reads are fetched, and of the weights only the first
format found, not every copy a repo holds.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

from sve_jax.models.weights_io import WeightsError

HUB_PREFIX = 'hf-hub:'
# <org>/<name> as the hub spells repo ids; a local path has other shapes ('/x', './x', 'a/b/c').
_BARE_REPO_ID = re.compile(r'[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]')


def repo_id(path: str) -> str | None:
  """The hub repo ``path`` names, or ``None`` when it is a local path.

  ``hf-hub:<id>`` always names a repo; a bare ``<org>/<name>`` does when no file or folder
  of that name exists (relative to the working directory).
  """
  path = os.fspath(path)
  if path.startswith(HUB_PREFIX):
    return path[len(HUB_PREFIX):]
  if _BARE_REPO_ID.fullmatch(path) and not os.path.exists(path):
    return path
  return None


def fetch(repo: str, weight_files: Sequence[str],
          other_files: Sequence[str] = ('config.json',)) -> tuple[str, str]:
  """Fetches (or finds cached) the files of ``repo`` a loader needs.

  Args:
    repo: a hub repo id, e.g. ``timm/vit_small_patch16_224.dino``.
    weight_files: weights file names in order of preference; the first the repo has is
      fetched, the others are not.
    other_files: ``fnmatch`` patterns of the other files to fetch (configs, tokenizer).

  Returns:
    ``(folder, weights)``: the local snapshot folder and the path of the weights file in it.

  Raises:
    WeightsError: the repo is not cached and cannot be downloaded (offline, unknown,
      gated), or it has none of ``weight_files``; names the repo and what was looked for.
  """
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  from huggingface_hub import constants  # pylint: disable=g-import-not-at-top
  from huggingface_hub import errors  # pylint: disable=g-import-not-at-top

  where = (f'the Hugging Face cache {constants.HF_HUB_CACHE}'
           + (' (HF_HUB_OFFLINE=1: no download)' if constants.HF_HUB_OFFLINE else ''))
  try:
    folder = huggingface_hub.snapshot_download(repo, allow_patterns=list(other_files))
  except (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, errors.HFValidationError,
          OSError) as e:
    raise WeightsError(
        f'{HUB_PREFIX}{repo}: cannot find the repo in {where} or download it '
        f'({type(e).__name__}: {_first_line(e)}); looked for {list(other_files)} and one of '
        f'{list(weight_files)}') from e
  for name in weight_files:
    try:
      return folder, huggingface_hub.hf_hub_download(repo, name)
    except errors.EntryNotFoundError:  # Also the offline "not in the cache".
      continue
  present = sorted(os.path.relpath(os.path.join(root, f), folder)
                   for root, _, files in os.walk(folder) for f in files)
  raise WeightsError(
      f'{HUB_PREFIX}{repo}: no usable weights file in {where}: looked for one of '
      f'{list(weight_files)}; the snapshot {folder} holds {present}')


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [''])[0]
