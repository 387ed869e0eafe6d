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
"""

from sve_jax.data.builders import AGREEMENT_FEATURE
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
from sve_jax.data.transforms import text_transform
