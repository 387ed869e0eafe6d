"""Pixel statistics that pretrained image backbones were trained with.

Both the data transforms (``sve_jax.data.transforms``) and the backbones' configs
(``sve_jax.models``) read them here, so neither package imports the other.
"""

#: torchvision / timm ImageNet statistics (DINO, DINOv2, EfficientNet-Lite).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: AugReg (Google big_vision) models take pixels mapped to [-1, 1].
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
