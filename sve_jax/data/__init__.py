"""Data: tfds builders for local data, input pipelines on grain, preprocessing.

Everything reads through tfds random-access `data_source`s over array_record
files, so no TensorFlow is needed. Typical use (see `sve_jax.train.loop`):

  dataset = data.get_dataset(config.data, data_dir)
  transform = data.image_transform(size=(224, 224), augment=True)
  batches = data.iterate(data.train_dataset(
      dataset.splits['train'], global_batch_size=16, seed=0, num_epochs=10,
      process_index=jax.process_index(), process_count=jax.process_count(),
      transform=transform), state=saved_state)
  for batch in batches:
    ...  # save `batches.get_state()` with each checkpoint

The modules, one concept each:

* `datasets`: a data config to random-access splits (`get_dataset`);
* `pipeline`: shuffled, resumable, per-process batches on grain;
* `transforms`: raw batches to model batches (tokenised text, normalised images);
* `builders`: the local tfds builders, one module per family, and `LOCAL_BUILDERS`;
* `options`: the builders' options, declared once as config dataclass fields;
* readers of local files, free of tfds: `tables` (CSV, TSV, JSON lines), `images` (class
  folders, PIL decoding), `idx` (MNIST's format), `labels` (vocabulary, indices),
  `splits` (seeded splits), `stdlib_text` (docstring sentences), `fingerprint` (of files).
"""

from sve_jax.data.builders import AGREEMENT_FEATURE
from sve_jax.data.builders import LOCAL_BUILDERS
from sve_jax.data.datasets import Dataset
from sve_jax.data.datasets import get_dataset
from sve_jax.data.datasets import is_known_dataset
from sve_jax.data.pipeline import Subset
from sve_jax.data.pipeline import eval_batches
from sve_jax.data.pipeline import eval_dataset
from sve_jax.data.pipeline import iterate
from sve_jax.data.pipeline import member_train_dataset
from sve_jax.data.pipeline import num_eval_batches
from sve_jax.data.pipeline import steps_per_epoch
from sve_jax.data.pipeline import subsample
from sve_jax.data.pipeline import train_dataset
from sve_jax.data.transforms import IMAGENET_MEAN
from sve_jax.data.transforms import IMAGENET_STD
from sve_jax.data.transforms import image_transform
from sve_jax.data.transforms import normalize_images
from sve_jax.data.transforms import text_transform

__all__ = [
    # Data sets: a config to random-access splits.
    'AGREEMENT_FEATURE', 'Dataset', 'LOCAL_BUILDERS', 'get_dataset', 'is_known_dataset',
    # The pipeline: batches on grain.
    'Subset', 'eval_batches', 'eval_dataset', 'iterate', 'member_train_dataset',
    'num_eval_batches', 'steps_per_epoch', 'subsample', 'train_dataset',
    # Transforms: raw batches to model batches.
    'IMAGENET_MEAN', 'IMAGENET_STD', 'image_transform', 'normalize_images', 'text_transform',
]
