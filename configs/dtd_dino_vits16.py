r"""SVE (M=4) on DINO ViT-S/16, Describable Textures (DTD).

  python train.py --config=configs/dtd_dino_vits16.py --workdir=workdir/dtd \
      --config.model.path=hf-hub:timm/vit_small_patch16_224.dino \
      --config.data.data_dir=/path/to/tensorflow_datasets
"""
from configs import vision_common


def get_config():
  return vision_common.vision_config(
      'dtd', 'dino_vits16', {'train': 'train', 'validation': 'validation', 'test': 'test'})
