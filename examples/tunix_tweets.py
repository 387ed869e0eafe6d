r"""SVE on a tunix Gemma 3 270M: tweet sentiment by prompt, trained by tunix's PeftTrainer.

  python examples/tunix_tweets.py --workdir=workdir/tunix_tweets

What it does, in order:

1. Loads Gemma 3 270M from its offline GGUF packages into tunix's ``Gemma3``
   (``--model=smollm2``: SmolLM2-135M-Instruct as tunix's ``Llama3``), with its tokenizer.
2. Wraps it as a classifier by prompt (:class:`PromptClassifier`), then as ``--members``
   SVE members (``sve_jax.tunix.sve.SVEEnsemble``): each member trains its own singular
   values of every attention and MLP projection, as ``nnx.LoRAParam``.
3. Trains ``--steps`` steps of ``--batch_size`` tweets with tunix's ``PeftTrainer``
   (AdamW, the method's recipe: ``sve_jax.train.state.make_optimizer``), checkpointing the
   members into ``--workdir/checkpoints``; a rerun with the same flags resumes there.
4. Scores the test split with ``sve_jax.eval.metrics``: the zero-shot model (the pretrained
   model itself) and the trained ensemble. Prints a table and writes
   ``--workdir/results.json``.

The task is the project's (``configs/smollm2_tweets.py``): the tweets of the
``tweet_sentiment`` builder become the prompt ``Tweet: {text}\nSentiment:``, and a class's
logit is the LM's logit of its label word's first token (" negative", " neutral",
" positive") at the prompt's last token.

**The loss.** Each training row is tunix's own ``(input_tokens, input_mask)``: the prompt
followed by the label word's first token, with a loss mask that keeps that token alone.
tunix's default PEFT loss on such rows would be the next-token cross-entropy of the label
token over the whole vocabulary. The example trains instead with :func:`make_loss_fn`: the
cross-entropy of the same target over the label words' tokens only, a softmax over the
classes. Two reasons:

- it is the distribution the evaluation scores (accuracy, NLL, ECE over 3 classes) and the
  one the project's own decoder trains (``sve_jax.models.llama``);
- it is cheap. The vocabulary loss needs the LM head at every position. Gemma's head has
  262,144 rows, so it costs more than the 18 layers do. For 8 prompts of 48 tokens, the
  jitted gradient of that head, sliced afterwards to the last position's 3 words, counted
  258 GFLOP in XLA's cost analysis, which XLA did not reduce. The 3 rows at one position
  counted 61 kFLOP. :class:`PromptClassifier` reads Gemma's final hidden state (its
  ``output_hidden_states``) and applies the head at the class position only. tunix's
  ``Llama3`` has no such output, so for SmolLM2 it computes the full logits and slices
  them; its 49,152-row head is about a fifth of its forward pass.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import time
from typing import Any, Callable, Iterator

from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tunix.sft import peft_trainer
from tunix.sft import utils as sft_utils

from sve_jax.data import datasets
from sve_jax.data import pipeline
from sve_jax.data import transforms
from sve_jax.eval import metrics
from sve_jax.models import llama
from sve_jax.train import state as state_lib
from sve_jax.train import steps as steps_lib
from sve_jax.train import user_errors
from sve_jax.tunix import gguf_models
from sve_jax.tunix import sve as tunix_sve

PROMPT = 'Tweet: {text}\nSentiment:'
VERBALIZER = (' negative', ' neutral', ' positive')  # the tweet_sentiment classes, in order
#: ``--model`` → the path of its offline GGUF file.
MODELS: dict[str, Callable[[], str]] = {
    'gemma3': gguf_models.offline_gemma3_270m_path,
    'smollm2': llama.offline_smollm2_path,
}

FLAGS = flags.FLAGS
flags.DEFINE_enum('model', 'gemma3', sorted(MODELS), 'Gemma 3 270M or SmolLM2-135M-Instruct.')
flags.DEFINE_string('workdir', None, 'Checkpoints and results.json go here.', required=True)
flags.DEFINE_string('data_dir', '', "tfds data_dir; '' = tfds_data beside the workdir.")
flags.DEFINE_integer('members', 4, 'SVE members M.', lower_bound=1)
flags.DEFINE_integer('steps', 12, 'Training steps.', lower_bound=1)
flags.DEFINE_integer('batch_size', 8, 'Tweets per training step.', lower_bound=1)
flags.DEFINE_float('learning_rate', 1e-2, 'Peak AdamW rate (warm-up, then cosine).',
                   lower_bound=0.)
flags.DEFINE_integer('train_examples', 96, 'Seeded subset of the training tweets.',
                     lower_bound=1)
flags.DEFINE_integer('eval_examples', 160, 'Seeded subset of the test tweets.', lower_bound=1)
flags.DEFINE_integer('eval_batch_size', 32, 'Tweets per evaluation batch.', lower_bound=1)
flags.DEFINE_integer('max_length', 48, "Prompt tokens kept (the prompt's last ones).",
                     lower_bound=2)
flags.DEFINE_integer('checkpoint_every', 5, 'Steps between checkpoints.', lower_bound=1)
flags.DEFINE_integer('seed', 0, 'Data order, subsets and the members\' initial noise.')


# --------------------------------------------------------------------------------------------
# The classifier by prompt.
# --------------------------------------------------------------------------------------------

class PromptClassifier(nnx.Module):
  """A tunix decoder as a classifier by prompt: the LM's logits of the label tokens.

  Calling it gives ``(B, C)``: at ``class_positions[b]`` of row ``b``, the logit of each of
  ``label_ids``. Gemma 3's head is applied there only, to its final hidden state; a model
  without ``output_hidden_states`` (tunix's ``Llama3``) computes every logit, then slices.
  """

  def __init__(self, model: nnx.Module, label_ids: tuple[int, ...]):
    self.model = model
    self.label_ids = tuple(int(i) for i in label_ids)

  def __call__(self, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array,
               class_positions: jax.Array) -> jax.Array:
    rows = jnp.arange(tokens.shape[0])
    ids = jnp.asarray(self.label_ids)
    if 'output_hidden_states' not in inspect.signature(self.model.__call__).parameters:
      logits, _ = self.model(tokens, positions, None, attention_mask)
      return logits[rows, class_positions][:, ids]
    # The full logits are left unused, so jit drops them; pop the sown state so that none
    # of it outlives the call.
    self.model(tokens, positions, None, attention_mask, output_hidden_states=True)
    (hidden,) = nnx.pop(self.model, nnx.Intermediate)['all_hidden_states'].get_value()
    return self.model.embedder.decode(hidden[rows, class_positions])[:, ids]


def class_rules(path: str, leaf: Any) -> Any:
  """``TUNIX_RULES`` for the tunix model inside a :class:`PromptClassifier` (``model/...``)."""
  return tunix_sve.TUNIX_RULES(path.removeprefix('model/'), leaf)


def make_loss_fn(label_ids: tuple[int, ...]) -> Callable[..., jax.Array]:
  """``PeftTrainer``'s loss: the mean over members of the class cross-entropy.

  It takes tunix's PEFT inputs. In each row, ``input_mask`` keeps one token, the label
  word's first token; the row's class is that token's index in ``label_ids``, and its logits
  are read one position earlier (the prompt's last token). See the module docstring.
  """
  ids = jnp.asarray(label_ids)

  def loss_fn(model: tunix_sve.SVEEnsemble, input_tokens: jax.Array, input_mask: jax.Array,
              positions: jax.Array, attention_mask: jax.Array) -> jax.Array:
    target = jnp.argmax(input_mask, axis=-1)
    label_tokens = jnp.take_along_axis(input_tokens, target[:, None], axis=-1)
    labels = jnp.argmax(label_tokens == ids, axis=-1)
    member_logits = model(input_tokens, positions, attention_mask, target - 1)
    return steps_lib.member_cross_entropy(member_logits, labels).mean()

  return loss_fn


# --------------------------------------------------------------------------------------------
# Data: tweets as tunix's inputs.
# --------------------------------------------------------------------------------------------

def model_inputs(tokens: np.ndarray, valid: np.ndarray, loss_mask: np.ndarray) -> dict:
  """tunix's PEFT inputs of right-padded rows: ``valid`` marks the real tokens."""
  valid = jnp.asarray(valid, bool)
  return {'input_tokens': jnp.asarray(tokens, jnp.int32),
          'input_mask': jnp.asarray(loss_mask, bool),
          'positions': sft_utils.build_positions_from_mask(valid),
          'attention_mask': sft_utils.make_causal_attn_mask(valid)}


def training_inputs(batch: dict, label_ids: tuple[int, ...], pad_id: int) -> dict:
  """A tokenized batch (``input_ids``, ``attention_mask``, ``label``) as training rows: each
  prompt followed by its label word's first token, the only token the loss mask keeps."""
  ids, mask = batch['input_ids'], batch['attention_mask']
  rows, length = np.arange(len(ids)), mask.sum(axis=-1)
  tokens = np.concatenate([ids, np.full((len(ids), 1), pad_id, ids.dtype)], axis=1)
  tokens[rows, length] = np.asarray(label_ids)[batch['label']]
  columns = np.arange(tokens.shape[1])[None]
  return model_inputs(tokens, columns <= length[:, None], columns == length[:, None])


def load_tweets(data_dir: str, train_examples: int, eval_examples: int, seed: int
                ) -> tuple[datasets.Dataset, pipeline.Source, pipeline.Source]:
  """``(dataset, train, test)``: the ``tweet_sentiment`` corpus with seeded subsets."""
  dataset = datasets.get_dataset({'name': 'tweet_sentiment', 'max_train_examples':
                                  train_examples, 'subsample_seed': seed}, data_dir)
  return (dataset, dataset.splits['train'],
          pipeline.subsample(dataset.splits['test'], eval_examples, seed))


def tweet_transform(dataset: datasets.Dataset, tokenizer, pad_id: int, max_length: int):
  """Raw batch → prompts' ``input_ids``, ``attention_mask`` (right-padded), ``label``."""
  tokenize = lambda texts: llama.tokenize(
      tokenizer, [llama.format_prompt(PROMPT, t) for t in texts], max_length, pad_id)
  return transforms.text_transform(tokenize, text_key=dataset.input_key,
                                   label_key=dataset.label_key)


def training_batches(source, transform, label_ids, pad_id, steps: int, batch_size: int,
                     seed: int) -> Iterator[dict]:
  """``steps`` training batches in the project's seeded epoch order, as tunix's inputs.

  A resumed ``PeftTrainer`` skips the batches it trained already, so every run must yield
  the same sequence (it does: batch ``k`` depends on ``seed`` and ``k`` only).
  """
  batches = pipeline.train_dataset(source, global_batch_size=batch_size, seed=seed,
                                   transform=transform)
  return (training_inputs(batches[k], label_ids, pad_id) for k in range(steps))


# --------------------------------------------------------------------------------------------
# Training and evaluation.
# --------------------------------------------------------------------------------------------

def train(ensemble: tunix_sve.SVEEnsemble, batches: Iterator[dict], label_ids, workdir: str
          ) -> dict[str, Any]:
  """Trains ``ensemble``'s members with tunix's ``PeftTrainer`` up to ``--steps``, resuming
  from the latest checkpoint in ``workdir/checkpoints``; returns what the run did."""
  optimizer = state_lib.make_optimizer(FLAGS.learning_rate, FLAGS.steps,
                                       warmup_steps=FLAGS.steps // 10)
  config = peft_trainer.TrainingConfig(
      eval_every_n_steps=FLAGS.steps + 1, max_steps=FLAGS.steps,
      checkpoint_root_directory=os.path.join(os.path.abspath(workdir), 'checkpoints'),
      checkpointing_options=ocp.CheckpointManagerOptions(
          save_interval_steps=FLAGS.checkpoint_every, max_to_keep=1))
  trainer = peft_trainer.PeftTrainer(ensemble, optimizer, config)
  resumed_from = trainer.train_steps
  trainer.with_loss_fn(make_loss_fn(label_ids)).train(batches)  # closes: saves the last step
  logger = trainer.metrics_logger  # holds this run's steps only (none on a finished resume)
  losses = (logger.get_metric_history('', 'loss', 'train')
            if logger.metric_exists('', 'loss', 'train') else [])
  return {'resumed_from_step': int(resumed_from), 'trained_steps': int(trainer.train_steps),
          'train_losses': [round(float(x), 4) for x in losses]}


@nnx.jit
def _class_logits(model: PromptClassifier, inputs: dict) -> jax.Array:
  return model(inputs['input_tokens'], inputs['positions'], inputs['attention_mask'],
               inputs['class_positions'])


def eval_inputs(source, transform, batch_size: int) -> tuple[list[dict], np.ndarray]:
  """``(batches, labels)`` of ``source``: each batch the classifier's inputs and ``keep``
  (its real, unpadded rows); the labels of those rows, in order."""
  batches, labels = [], []
  for batch in pipeline.eval_batches(source, global_batch_size=batch_size,
                                     transform=transform):
    mask = batch['attention_mask']
    batches.append({**model_inputs(batch['input_ids'], mask, mask),
                    'class_positions': llama.last_positions(mask), 'keep': batch['mask']})
    labels.append(batch['label'][batch['mask']])
  return batches, np.concatenate(labels)


def class_logits(model: PromptClassifier, batches: list[dict]) -> np.ndarray:
  """``(N, C)``: one plain classifier's class logits on :func:`eval_inputs`' batches."""
  return np.concatenate([np.asarray(_class_logits(model, b))[b['keep']] for b in batches])


def member_logits(ensemble: tunix_sve.SVEEnsemble, num_members: int, batches: list[dict]
                  ) -> np.ndarray:
  """``(M, N, C)``, one member at a time as a plain classifier: each member's kernels are
  composed once, not once per batch as calling the ensemble would."""
  return np.stack([class_logits(ensemble.member_model(m), batches)
                   for m in range(num_members)])


def scores(member_logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
  """The report's scores of an ensemble (``sve_jax.eval.metrics``): the ensemble's accuracy,
  NLL, Brier, ECE, its members' mean, disagreement, MI, ensemble NLL / members' mean NLL and
  each member's own."""
  summary = metrics.ensemble_and_members(member_logits, labels)
  return {**summary, 'nll_ratio': summary['nll'] / summary['members_mean_nll'],
          'members': metrics.member_metrics(member_logits, labels)}


def relative_change(before: Any, after: Any) -> float:
  """``‖after − before‖ / ‖before‖`` over all leaves: how far training moved the members."""
  diff = sum(float(np.sum((np.asarray(a) - np.asarray(b)) ** 2))
             for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)))
  norm = sum(float(np.sum(np.asarray(b) ** 2)) for b in jax.tree.leaves(before))
  return float(np.sqrt(diff / norm))


def print_table(results: dict[str, Any]) -> None:
  """The test split's scores: zero-shot, the SVE ensemble and its members' mean."""
  zero, sve = results['zero_shot'], results['sve']
  rows = [('zero-shot', zero['accuracy'], zero['nll'], zero['ece'], float('nan')),
          (f'SVE, M = {results["num_members"]}', sve['accuracy'], sve['nll'], sve['ece'],
           sve['disagreement']),
          ('SVE members (mean)', sve['members_mean_accuracy'], sve['members_mean_nll'],
           sve['members_mean_ece'], float('nan'))]
  print(f'\n{results["model"]}, {results["num_test_examples"]} test tweets, '
        f'{results["trained_steps"]} steps of {results["batch_size"]}')
  print(f'{"":20s} {"accuracy":>8s} {"NLL":>7s} {"ECE":>7s} {"disagree":>8s}')
  for name, *values in rows:
    print(f'{name:20s} ' + ' '.join(f'{v:{w}.3f}' for v, w in zip(values, (8, 7, 7, 8))))
  print(f'ensemble NLL / members\' mean NLL: {sve["nll_ratio"]:.4f}\n')


class Stopwatch:
  """Wall seconds of a run's stages, printed as each one ends."""

  def __init__(self):
    self.start = self.last = time.perf_counter()
    self.seconds = {}

  def lap(self, stage: str) -> None:
    now = time.perf_counter()
    self.seconds[stage] = round(now - self.last, 1)
    self.last = now
    print(f'{stage}: {self.seconds[stage]:.1f} s', flush=True)

  def total(self) -> dict[str, float]:
    return {**self.seconds, 'total': round(time.perf_counter() - self.start, 1)}


def main(argv: list[str]) -> None:
  del argv
  # orbax's per-save chatter and tunix's per-step lines only from WARNING up (as train.py).
  for noisy in ('orbax', 'absl'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  watch, workdir = Stopwatch(), FLAGS.workdir
  os.makedirs(workdir, exist_ok=True)
  data_dir = FLAGS.data_dir or os.path.join(os.path.dirname(os.path.abspath(workdir)),
                                            'tfds_data')
  dataset, train_source, test_source = load_tweets(
      data_dir, FLAGS.train_examples, FLAGS.eval_examples, FLAGS.seed)
  watch.lap('data')
  path = MODELS[FLAGS.model]()
  model, tokenizer, pad_id = gguf_models.load_tunix_model(path)
  label_ids = llama.verbalizer_ids(tokenizer, VERBALIZER)
  classifier = PromptClassifier(model, label_ids)
  watch.lap('load')
  transform = tweet_transform(dataset, tokenizer, pad_id, FLAGS.max_length)
  batches, labels = eval_inputs(test_source, transform, FLAGS.eval_batch_size)
  logits = {'zero_shot': class_logits(classifier, batches)[None]}
  watch.lap('zero-shot evaluation')
  ensemble = tunix_sve.SVEEnsemble(classifier, FLAGS.members, key=jax.random.key(FLAGS.seed),
                                   rules=class_rules)
  del model, classifier  # the ensemble holds all it needs: free the pretrained kernels
  initial = jax.tree.map(np.array, ensemble.trainables())
  watch.lap('decompose')
  run = train(ensemble, training_batches(train_source, transform, label_ids, pad_id,
                                         FLAGS.steps, FLAGS.batch_size, FLAGS.seed),
              label_ids, workdir)
  watch.lap('train')
  logits['sve'] = member_logits(ensemble, FLAGS.members, batches)
  watch.lap('evaluation')
  results = {
      'model': FLAGS.model, 'weights': path, 'num_members': FLAGS.members,
      'batch_size': FLAGS.batch_size, 'learning_rate': FLAGS.learning_rate,
      'max_length': FLAGS.max_length, 'num_train_examples': len(train_source),
      'num_test_examples': int(len(labels)), 'prompt': PROMPT, 'verbalizer': list(VERBALIZER),
      **run,
      'members_relative_change': relative_change(initial, ensemble.trainables()),
      'zero_shot': scores(logits['zero_shot'], labels), 'sve': scores(logits['sve'], labels),
      'wall_seconds': watch.total()}
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  print_table(results)


if __name__ == '__main__':
  user_errors.run_cli(main)
