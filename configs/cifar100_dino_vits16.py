r"""SVE (M=4) on DINO ViT-S/16, CIFAR-100, CIFAR-10 as OOD (the paper's OOD setting).

Needs the tfds catalog data prepared (array_record) in config.data.data_dir, and the timm
weights `timm/vit_small_patch16_224.dino`, by Hugging Face repo id (downloaded once into the
hub cache; read from it with HF_HUB_OFFLINE=1) or as a local model.safetensors path:

  python train.py --config=configs/cifar100_dino_vits16.py --workdir=workdir/cifar100 \
      --config.model.path=hf-hub:timm/vit_small_patch16_224.dino \
      --config.data.data_dir=/path/to/tensorflow_datasets
"""
from configs import vision_common


def get_config():
  c = vision_common.vision_config(
      'cifar100', 'dino_vits16',
      {'train': 'train[:90%]', 'validation': 'train[90%:]', 'test': 'test'}, ood='cifar10')
  c.ood.split = 'test'
  return c
