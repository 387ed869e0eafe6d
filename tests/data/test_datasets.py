"""tfds catalog data that TensorFlow must prepare: a clear early error where TF is absent."""
import importlib.util

import pytest
import tensorflow_datasets as tfds

from sve_jax import data
from sve_jax.data import datasets


class Downloaded(Exception):
  """Raised instead of downloading."""


@pytest.fixture
def without_tensorflow_or_network(monkeypatch):
  if importlib.util.find_spec('tensorflow') is not None:
    # CI has no TF, and runs the real check; where TF is installed, act as if it were not.
    monkeypatch.setattr(datasets, '_tensorflow_installed', lambda: False)

  def download_and_prepare(*args, **kwargs):
    raise Downloaded

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', download_and_prepare)


def test_image_data_names_the_tf_extra_before_any_download(without_tensorflow_or_network,
                                                           tmp_path):
  with pytest.raises(RuntimeError, match=r"preparing cifar100 needs TensorFlow \(its "
                                         r"\['image'\] features.*nothing was downloaded.*"
                                         r"pip install -e '\.\[tf\]'"):
    data.get_dataset({'name': 'cifar100', 'download': True}, str(tmp_path))


def test_text_data_goes_on_to_download(without_tensorflow_or_network, tmp_path):
  with pytest.raises(Downloaded):  # GLUE's features are text: no TF needed to prepare.
    data.get_dataset({'name': 'glue/sst2', 'download': True}, str(tmp_path))
