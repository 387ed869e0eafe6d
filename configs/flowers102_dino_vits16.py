r"""SVE (M=4) on DINO ViT-S/16, Oxford Flowers-102 (paper: 95.4% acc, ECE 1.0).

  python train.py --config=configs/flowers102_dino_vits16.py --workdir=workdir/flowers \
      --config.model.path=hf-hub:timm/vit_small_patch16_224.dino \
      --config.data.data_dir=/path/to/tensorflow_datasets
"""
from configs import vision_common


def get_config():
  return vision_common.vision_config(
      'oxford_flowers102', 'dino_vits16',
      {'train': 'train', 'validation': 'validation', 'test': 'test'})
