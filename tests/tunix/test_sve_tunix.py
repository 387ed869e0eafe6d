"""SVE on tiny random tunix decoders: layouts, exact members, and tunix's PeftTrainer."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from tunix.models.gemma3 import model as gemma3
from tunix.models.llama3 import model as llama3
from tunix.models.qwen2 import model as qwen2
from tunix.models.qwen3 import model as qwen3
from tunix.sft import checkpoint_manager
from tunix.sft import peft_trainer
from tunix.sft import utils as sft_utils

import sve_jax
from sve_jax import tree as tree_lib
from sve_jax.tunix import sve as tunix_sve

D, F, N, H, VOCAB = 32, 64, 4, 8, 64  # width, MLP width, heads, head_dim, vocabulary
_SHAPE = dict(num_layers=2, embed_dim=D, hidden_dim=F, num_heads=N, head_dim=H)


def tiny_model(family: str, kv_heads: int = 2) -> nnx.Module:
  """A 2-layer tunix decoder of ``family`` with random weights (tunix zero-inits its MLPs)."""
  if family == 'gemma3':
    config = gemma3.ModelConfig(**_SHAPE, num_embed=VOCAB, num_kv_heads=kv_heads,
                                sliding_window_size=4, param_dtype=jnp.float32)
    make = lambda: gemma3.Gemma3(config, rngs=nnx.Rngs(0))
  else:
    module, cls = {'llama3': (llama3, 'Llama3'), 'qwen2': (qwen2, 'Qwen2'),
                   'qwen3': (qwen3, 'Qwen3')}[family]
    config = module.ModelConfig(**_SHAPE, vocab_size=VOCAB, num_kv_heads=kv_heads,
                                rope_theta=10_000, norm_eps=1e-5)
    make = lambda: getattr(module, cls)(config, rngs=nnx.Rngs(0))
  model = nnx.eval_shape(make)  # shapes only: numpy fills them below, with nothing to compile
  shapes, treedef = jax.tree.flatten(nnx.state(model))
  rng = np.random.default_rng(0)
  leaves = [1. + 0.1 * rng.standard_normal(x.shape) if len(x.shape) == 1  # norms, biases
            else rng.standard_normal(x.shape) / np.sqrt(x.shape[0] if len(x.shape) == 2 else D)
            for x in shapes]
  nnx.update(model, jax.tree.unflatten(treedef, [jnp.asarray(x, jnp.float32) for x in leaves]))
  return model


def batch(seq_len: int = 6, size: int = 2) -> dict:
  """PeftTrainer's model inputs, as tunix builds them from tokens and a mask."""
  tokens = jax.random.randint(jax.random.key(2), (size, seq_len), 1, VOCAB)
  mask = jnp.arange(seq_len)[None] < jnp.array([[seq_len], [seq_len - 2]])  # right padding
  return dict(input_tokens=tokens, input_mask=mask,
              positions=sft_utils.build_positions_from_mask(mask),
              attention_mask=sft_utils.make_causal_attn_mask(mask))


@nnx.jit
def model_logits(model, inputs):
  return model(inputs['input_tokens'], inputs['positions'], None, inputs['attention_mask'])[0]


def matrix_view(name: str, w: np.ndarray) -> np.ndarray:
  """The matrix (or stack) a projection multiplies its input by, written out per kernel."""
  if name in ('q_proj', 'k_proj', 'v_proj'):        # (d, heads, head_dim): 'BTD,DNH->BTNH'
    return w.reshape(w.shape[0], -1)
  if name in ('o_proj', 'attn_vec_einsum'):         # (heads, head_dim, d): 'BTNH,NHD->BTD'
    return w.reshape(-1, w.shape[-1])
  if name == 'q_einsum':                            # (heads, d, head_dim): 'BTD,NDH->BTNH'
    return w.transpose(1, 0, 2).reshape(w.shape[1], -1)
  if name in ('kv_einsum', 'qkv_einsum'):           # (c, heads, d, head_dim): c matrices
    return w.transpose(0, 2, 1, 3).reshape(w.shape[0], w.shape[2], -1)
  assert name == 'kernel'                           # nnx.Linear (in, out)
  return w


#: (family, kv heads) -> the decomposed kernels of one layer and the per-member leaves.
CASES = {
    ('llama3', 2): ({'attn/q_proj/w', 'attn/k_proj/w', 'attn/v_proj/w', 'attn/o_proj/w'}, set()),
    ('qwen3', 2): ({'attn/q_proj/w', 'attn/k_proj/w', 'attn/v_proj/w', 'attn/o_proj/w'}, set()),
    ('qwen2', 2): ({'attn/q_proj/w', 'attn/k_proj/w', 'attn/v_proj/w', 'attn/o_proj/w'},
                   {'attn/q_bias', 'attn/k_bias', 'attn/v_bias'}),
    ('gemma3', 2): ({'attn/q_einsum/w', 'attn/kv_einsum/w', 'attn/attn_vec_einsum/w'}, set()),
    ('gemma3', 4): ({'attn/qkv_einsum/w', 'attn/attn_vec_einsum/w'}, set()),
}
MLP = {'mlp/gate_proj/kernel', 'mlp/up_proj/kernel', 'mlp/down_proj/kernel'}


@pytest.mark.parametrize('family,kv_heads', list(CASES))
def test_rules_decompose_every_projection_by_its_matrix_and_compose_exactly(family, kv_heads):
  params = nnx.to_pure_dict(nnx.state(tiny_model(family, kv_heads)))
  frozen, s = sve_jax.decompose(params, tunix_sve.TUNIX_RULES)
  kernels, members = CASES[family, kv_heads]
  layers = [f'layers/{i}/' for i in range(2)]
  assert set(sve_jax.factorize.layouts(frozen)) == {l + k for l in layers for k in kernels | MLP}
  singular = sve_jax.factorize.factored_paths(frozen)
  assert {'/'.join(p) for p in tree_lib.flatten_paths(s) if p not in singular} == {
      l + b for l in layers for b in members}
  flat_params, flat_s = tree_lib.flatten_paths(params), tree_lib.flatten_paths(s)
  for path in singular:  # s is the SVD of the matrix the projection applies
    view = matrix_view(path[-2] if path[-1] == 'w' else 'kernel', np.asarray(flat_params[path]))
    np.testing.assert_allclose(flat_s[path], np.linalg.svd(view, compute_uv=False),
                               rtol=1e-5, atol=1e-6)
  composed = tree_lib.flatten_paths(sve_jax.compose(frozen, s))
  assert composed.keys() == flat_params.keys()
  for path, leaf in flat_params.items():
    np.testing.assert_allclose(composed[path], leaf, rtol=1e-5, atol=1e-6, err_msg=str(path))


@pytest.mark.parametrize('family,kv_heads', list(CASES))
def test_every_member_is_the_pretrained_model_without_noise(family, kv_heads):
  model, inputs = tiny_model(family, kv_heads), batch()
  reference = np.asarray(model_logits(model, inputs))
  ensemble = tunix_sve.SVEEnsemble(model, 3, key=jax.random.key(0), noise_std=0.)
  member_logits = np.asarray(model_logits(ensemble, inputs))
  assert member_logits.shape == (3,) + reference.shape
  for logits in member_logits:
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)
  noisy = tunix_sve.SVEEnsemble(model, 3, key=jax.random.key(0), noise_std=0.1)
  noisy_logits = np.asarray(model_logits(noisy, inputs))
  assert not np.allclose(noisy_logits[0], noisy_logits[1], atol=1e-3)
  np.testing.assert_allclose(noisy_logits[1], model_logits(noisy.member_model(1), inputs),
                             rtol=1e-4, atol=1e-4)


def test_a_misshapen_projection_names_its_path():
  params = nnx.to_pure_dict(nnx.state(tiny_model('llama3')))
  params['layers'][1]['attn']['o_proj']['w'] = jnp.zeros((N * H, D))  # flattened heads
  with pytest.raises(sve_jax.LayoutError, match='layers/1/attn/o_proj/w'):
    sve_jax.decompose(params, tunix_sve.TUNIX_RULES)


class NoProjections(nnx.Module):
  """An embedding and a norm: nothing a rule of TUNIX_RULES decomposes."""

  def __init__(self):
    self.embedder = nnx.Embed(VOCAB, D, rngs=nnx.Rngs(0))
    self.final_norm = nnx.RMSNorm(D, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('make_model,members,message', [
    (lambda: tiny_model('llama3'), 0, 'num_members must be >= 1, got 0'),
    (NoProjections, 2, 'decompose none of the 2 weights of NoProjections'),
    (lambda: tiny_model('llama3'), -1, 'num_members must be >= 1, got -1'),
], ids=['no members', 'no projections', 'negative members'])
def test_nothing_to_train_is_a_one_line_value_error(make_model, members, message):
  with pytest.raises(ValueError, match=message) as error:
    tunix_sve.SVEEnsemble(make_model(), members, key=jax.random.key(0))
  assert '\n' not in str(error.value)


def _leaves(tree) -> dict:
  """``{key path: a numpy copy of the leaf}``: copies, so later updates cannot reach them."""
  return {jax.tree_util.keystr(k): np.array(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _config(directory) -> peft_trainer.TrainingConfig:
  return peft_trainer.TrainingConfig(
      eval_every_n_steps=100, max_steps=4, checkpoint_root_directory=str(directory),
      checkpointing_options=ocp.CheckpointManagerOptions(save_interval_steps=1,
                                                         max_to_keep=1))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A 3-member SVE of a tiny Qwen2 (biases too) after 4 PeftTrainer steps on one batch,
  checkpointed every step; with snapshots taken before training."""
  model, inputs, m = tiny_model('qwen2'), batch(), 3
  ensemble = tunix_sve.SVEEnsemble(model, m, key=jax.random.key(0))
  before = dict(frozen=_leaves(nnx.state(ensemble, tunix_sve.SVEFrozen)),
                lora=_leaves(nnx.state(ensemble, nnx.LoRAParam)),
                all=_leaves(nnx.state(ensemble)),
                loss=float(tunix_sve.sve_loss_fn(ensemble, **inputs)),
                per_member=[float(peft_trainer._default_loss_fn(ensemble.member_model(i),
                                                                **inputs)) for i in range(m)])
  directory = tmp_path_factory.mktemp('sve_checkpoints')
  trainer = peft_trainer.PeftTrainer(ensemble, optax.adam(1e-2), _config(directory))
  trainer.with_loss_fn(tunix_sve.sve_loss_fn).train([inputs] * 4)
  return dict(model=model, ensemble=ensemble, trainer=trainer, inputs=inputs, members=m,
              directory=directory, before=before)


@pytest.mark.slow  # compiles a train step and writes orbax checkpoints
def test_peft_trainer_trains_exactly_the_sve_trainables(trained):
  ensemble, before, m = trained['ensemble'], trained['before'], trained['members']
  assert trained['trainer'].train_steps == 4
  # Nothing but the frozen split and the members: no Param left to train by mistake.
  assert len(before['all']) == len(before['frozen']) + len(before['lora'])
  # The loss is tunix's own default loss of each member alone, averaged over members.
  np.testing.assert_allclose(before['loss'], np.mean(before['per_member']), rtol=1e-5)
  # (a) Every member leaf moved; U, Vᵀ and every other weight is bit-identical.
  frozen_after = _leaves(nnx.state(ensemble, tunix_sve.SVEFrozen))
  assert frozen_after.keys() == before['frozen'].keys()
  assert all(np.array_equal(frozen_after[k], v) for k, v in before['frozen'].items())
  lora_after = _leaves(nnx.state(ensemble, nnx.LoRAParam))
  assert not any(np.array_equal(lora_after[k], v) for k, v in before['lora'].items())
  # (b) The batch's loss went down.
  assert float(tunix_sve.sve_loss_fn(ensemble, **trained['inputs'])) < before['loss'] - 0.05
  # (c) M x (sum of ranks + biases) trainables, counted from the config by hand:
  # q, o: min(d, heads·head_dim); k, v: min(d, kv_heads·head_dim); gate, up, down: min(d, ffn).
  ranks = 2 * min(D, N * H) + 2 * min(D, 2 * H) + 3 * min(D, F)
  biases = N * H + 2 * 2 * H
  trainable = m * 2 * (ranks + biases)
  assert sum(v.size for v in lora_after.values()) == trainable
  # (d) Adam's two moments cover those trainables and nothing else (its counters aside).
  opt_state = _leaves(nnx.state(trained['trainer'].optimizer, nnx.optimizer.OptState))
  assert sum(v.size for v in opt_state.values()
             if np.issubdtype(v.dtype, np.floating)) == 2 * trainable


@pytest.mark.slow  # reads the orbax checkpoint of the trained fixture
def test_the_checkpoint_holds_the_trained_members_and_nothing_else(trained):
  ensemble = trained['ensemble']
  saved = ocp.PyTreeCheckpointer().restore(trained['directory'] / '4' / 'model_params')
  saved = {'/'.join(p): v for p, v in tree_lib.flatten_paths(saved).items()}
  expected = {'/'.join(p): v for p, v in tree_lib.flatten_paths(ensemble.trainables()).items()}
  assert {k.removesuffix('/value') for k in saved} == {'members/' + k for k in expected}
  for key, value in saved.items():
    np.testing.assert_array_equal(value, expected[key.removesuffix('/value')[8:]])


@pytest.mark.slow  # restores checkpoints and compiles a forward
def test_a_fresh_ensemble_restores_the_trained_members(trained):
  ensemble, inputs, m = trained['ensemble'], trained['inputs'], trained['members']
  trained_members = _leaves(ensemble.trainables())
  # For inference: tunix's checkpoint manager fills a fresh ensemble of the same model.
  fresh = tunix_sve.SVEEnsemble(trained['model'], m, key=jax.random.key(1))
  assert not np.array_equal(*(list(_leaves(t.trainables()).values())[0]
                              for t in (fresh, ensemble)))  # the restore must change it
  manager = checkpoint_manager.CheckpointManager(str(trained['directory']))
  step, _ = manager.maybe_restore(fresh, restore_only_lora_params=True)
  manager.close()
  assert step == 4
  restored = _leaves(fresh.trainables())
  assert restored.keys() == trained_members.keys()
  assert all(np.array_equal(restored[k], v) for k, v in trained_members.items())
  np.testing.assert_allclose(model_logits(fresh, inputs), model_logits(ensemble, inputs),
                             rtol=1e-6, atol=1e-6)
  # To resume training: a PeftTrainer on a fresh ensemble starts from the saved step.
  resumed = tunix_sve.SVEEnsemble(trained['model'], m, key=jax.random.key(2))
  trainer = peft_trainer.PeftTrainer(resumed, optax.adam(1e-2), _config(trained['directory']))
  trainer.close()
  assert trainer.train_steps == 4
  assert all(np.array_equal(v, trained_members[k])
             for k, v in _leaves(resumed.trainables()).items())
