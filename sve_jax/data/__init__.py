"""Data: tfds builders for local data, input pipelines, preprocessing.

Everything reads through tfds random-access `data_source`s over array_record
files, so no TensorFlow is needed. Typical use in `train.py`:

  dataset = data.get_dataset(config.data, data_dir)
  transform = data.image_transform(size=(224, 224), augment=True)
  for batch, position in data.train_batches(
      dataset.splits['train'], global_batch_size=16, seed=0, start=position,
      num_epochs=10, process_index=jax.process_index(),
      process_count=jax.process_count(), transform=transform):
    ...  # save `position.as_dict()` with each checkpoint
"""

from sve_jax.data.datasets import Dataset
from sve_jax.data.datasets import get_dataset
from sve_jax.data.datasets import is_known_dataset
from sve_jax.data.pipeline import Position
from sve_jax.data.pipeline import Subset
from sve_jax.data.pipeline import eval_batches
from sve_jax.data.pipeline import num_eval_batches
from sve_jax.data.pipeline import steps_per_epoch
from sve_jax.data.pipeline import subsample
from sve_jax.data.pipeline import train_batches
from sve_jax.data.transforms import IMAGENET_MEAN
from sve_jax.data.transforms import IMAGENET_STD
from sve_jax.data.transforms import image_transform
from sve_jax.data.transforms import text_transform
