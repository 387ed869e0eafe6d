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
#: OpenAI CLIP's pixel statistics (timm's ``OPENAI_CLIP_MEAN``/``OPENAI_CLIP_STD``).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
