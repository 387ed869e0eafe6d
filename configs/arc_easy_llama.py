r"""SVE (M=16) on Meta-Llama-3-8B, ARC-Easy multiple choice by the answer letters' logits.

The paper's language setting: M = 16 members on a 7-8B decoder, ARC-Easy (tfds
`ai2_arc/ARC-Easy`: 2,251 train, 570 validation, 2,376 test questions). Each question becomes

  Question: Which gas do plants take in from the air?
  A. oxygen
  B. carbon dioxide
  C. nitrogen
  D. helium
  Answer:

and a class's logit is the LM's logit of its letter's token (" A" ... " E") at the last
prompt token: no new head, every member shares the pretrained LM head.

The data's quirks, and how they are handled (sve_jax/data/multiple_choice.py):
* **3, 4 or 5 choices.** The class set is fixed: the five letters A-E (the names of tfds's
  `answerKey` ClassLabel), with one label word each. A question with fewer choices masks the
  letters it lacks: their logits are set to -1e9 (probability exactly 0, and finite, so no
  metric meets inf - inf), in training, evaluation and the zero-shot row alike. Accuracy, NLL
  and calibration are thus over each question's own choices.
* **Labels "1".."4" instead of "A".."D".** Choices are shown lettered by position (A, B, C,
  ...), and the answer is the position of `answerKey` among the choices' labels; digits count
  from "1" = A (tfds's builder already maps them so), so a 1-4 question reads as A-D.
* **Bad data** (an answer that is none of the choices, a repeated label, more choices than
  letters) stops the run before the model loads, with one line naming the split and the
  question's id: `error: ai2_arc/ARC-Easy split 'train': multiple-choice example 'Mercury_7'
  ...` (exit status 2).

Model: `hf-hub:meta-llama/Meta-Llama-3-8B` (gated: accept its licence on Hugging Face, then
`huggingface-cli login`). Why it: a Llama-family base model of the paper's size whose
byte-level BPE tokenizer makes " A" ... " E" single, distinct tokens, exactly the token that
follows "Answer:". SentencePiece tokenizers (Llama-2, Mistral) prepend "▁" to every text they
encode, so for them set `--config.model.verbalizer="('A', 'B', 'C', 'D', 'E')"` (each
encodes to "▁A", ...), e.g. with `--config.model.path=hf-hub:meta-llama/Llama-2-7b-hf`, the
7B shape `benchmarks.memory` measured. Any `llama`, `mistral` or `qwen2` checkpoint works.

Scale: bfloat16 computation (params float32), per-layer rematerialisation, the factored SVE
path (composing 16 members' kernels would take 16 models' memory), and the frozen factors
split FSDP-style over the data axis (`mesh.frozen='fsdp'`): at 7B, U and Vᵀ take ~38 GiB in
float32, ~5 GiB per device on 8 (BENCHMARKS.md, "Memory at scale": a training step of
Llama-2-7B's shape, M = 16, remat, factored, needs ~11 GiB per device on 8 with a batch of 8
× 256 tokens). Evaluation keeps the factored path under FSDP.

Needs, downloaded once (no network at run time after that):
* the weights into the Hugging Face cache (`HF_HUB_CACHE`; the first online run fetches
  config.json, tokenizer files and the safetensors shards, ~16 GB);
* ARC-Easy prepared as array_record in `--config.data.data_dir` (`--config.data.download=True`
  once, where there is internet; it needs no TensorFlow).

  python train.py --config=configs/arc_easy_llama.py --workdir=workdir/arc_easy \
      --config.data.data_dir=/path/to/tensorflow_datasets --config.data.download=True
"""
from configs import common


def get_config():
  c = common.base_config()
  c.model.name = 'llama'
  c.model.path = 'hf-hub:meta-llama/Meta-Llama-3-8B'
  # The data gives the question and its lettered choices as {text}; the prompt asks for the
  # letter, whose token scores each class.
  c.model.prompt = '{text}\nAnswer:'
  c.model.verbalizer = (' A', ' B', ' C', ' D', ' E')  # the answer letters, class order
  c.model.max_length = 256     # keeps a prompt's last tokens; ARC prompts are far shorter
  c.model.dtype = 'bfloat16'
  c.model.remat = True
  c.execution = 'factored'
  c.mesh.frozen = 'fsdp'
  c.data.name = 'ai2_arc/ARC-Easy'
  c.num_members = 16
  c.batch_size = 16
  c.eval_batch_size = 16
  c.num_epochs = 10
  return c
