r"""SVE (M=4) on DINOv2 ViT-S/14, Oxford-IIIT Pets (paper: 90.1% acc, ECE 2.2).

  python train.py --config=configs/pets_dinov2_vits14.py --workdir=workdir/pets \
      --config.model.path=hf-hub:timm/vit_small_patch14_dinov2.lvd142m \
      --config.data.data_dir=/path/to/tensorflow_datasets
"""
from configs import vision_common


def get_config():
  return vision_common.vision_config(
      'oxford_iiit_pet', 'dinov2_vits14',
      {'train': 'train[:90%]', 'validation': 'train[90%:]', 'test': 'test'})
