"""The paper's vision protocol (docs/method.md) on a tfds catalog data set and a local ViT."""
from configs import common


def vision_config(dataset: str, preset: str, splits: dict, ood: str = ''):
  """SVE, M = 4, AdamW 1e-3 / wd 0.05, warm-up + cosine, clip 1.0, batch 16, 10 epochs."""
  c = common.base_config()
  c.model.name = 'vit'
  c.model.preset = preset
  # A timm HF repo id or a local checkpoint (README). '' = the offline weights of the presets
  # that ship them (sve_jax.models.vit.OFFLINE_PATHS; DINOv2's is a saliency model's backbone).
  c.model.path = ''
  c.model.image_size = 224
  c.data.name = dataset
  c.data.splits = splits
  c.data.augment = True         # random resized crop + horizontal flip
  c.ood.name = ood
  c.num_members = 4
  c.batch_size = 16
  c.eval_batch_size = 64
  c.num_epochs = 10
  return c
