"""SVE for Google's tunix: its NNX LLMs (Llama 3, Gemma 3) from offline GGUF weights.

- :mod:`sve_jax.tunix.gguf_models`: llama.cpp GGUF files as tunix models, with their
  tokenizers (SmolLM2-135M-Instruct as tunix's ``Llama3``, Gemma 3 270M as its ``Gemma3``).
- :mod:`sve_jax.tunix.sve`: SVE on tunix's NNX models (``SVEEnsemble``), trained by tunix's
  ``PeftTrainer``.

Needs the ``tunix`` extra (``pip install '.[tunix]'``, pins in ``requirements-tunix.txt``).
The rest of ``sve_jax`` never imports this package (``tests/test_layering.py``).
"""
import importlib.util

if importlib.util.find_spec('tunix') is None:
  raise ImportError("sve_jax.tunix needs Google's tunix, which is not installed: "
                    "pip install '.[tunix]'")
