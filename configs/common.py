"""Fields every config shares; each config file overrides what its setting needs."""
import ml_collections

from sve_jax.data import builders
from sve_jax.data import datasets
from sve_jax.methods.base import MethodOptions

#: The methods' own defaults (noise_std, execution, ...): defined once, in MethodOptions.
_METHOD_DEFAULTS = MethodOptions.defaults()


class BuilderOptions(ml_collections.ConfigDict):
  """A data section's builder options: one typed, unset (None) field per option.

  Every option any local builder declares (`datasets.all_option_types`) has a field, so
  `--config.data.options.<key>=...` works on the locked config; an unset option keeps the
  builder's default. A key no builder accepts fails at flag parsing, with the accepted
  options of every builder listed; one the chosen builder does not accept fails in
  `sve_jax.train.checks.validate_config`, before any data is read.
  """

  def __init__(self):
    super().__init__({option: ml_collections.FieldReference(None, field_type=kind)
                      for option, kind in datasets.all_option_types().items()})

  def __getitem__(self, key):
    try:
      return super().__getitem__(key)
    except KeyError:
      accepted = '; '.join(f'{name}: {sorted(datasets.option_types(name)) or "none"}'
                           for name in builders.LOCAL_BUILDERS)
      raise KeyError(f'{key!r} is not an option of any data builder. Options by builder: '
                     f'{accepted}; tfds catalog data sets take none.') from None


def _model_section() -> ml_collections.ConfigDict:
  """The backbone: which one, where its weights are, and how it is run."""
  model = ml_collections.ConfigDict()
  model.name = 'bert'       # bert | vit | efficientnet_lite0 | llama
  model.path = ''           # local folder/file or HF repo id; '' = the offline default
  model.preset = ''         # ViT: dino_vits16 | dinov2_vits14 | augreg_vitb16; '' = repo's
  model.pooling = ''        # BERT: cls | mean; '' = as the checkpoint folder says
  model.max_length = 64     # BERT, llama: tokens per example
  model.image_size = 224    # vision input size
  model.dropout_rate = -1.  # every dropout rate of the backbone; -1 = its own (mc_dropout)
  model.dtype = 'float32'
  # llama (a decoder classifying by prompt with its LM's own head): the prompt template, in
  # which {text} stands for the example, and one label word per class, in class order; a
  # class's logit is the LM's logit of its word's first token after the prompt.
  model.prompt = '{text}'
  model.verbalizer = ()
  model.remat = False       # llama: rematerialise each layer in the backward pass
  # Methods adapt only the top K blocks (-1 = all, the paper's SVE); the rest run once per
  # batch, shared by the members (README, "Adapting only the top blocks").
  model.adapted_blocks = -1
  return model


def _data_section() -> ml_collections.ConfigDict:
  """The training and evaluation data: a builder, its splits and options, and their caps."""
  data = ml_collections.ConfigDict()
  data.name = 'tweet_sentiment'   # a local builder, a tfds catalog name, csv_text, image_folder
  data.data_dir = ''              # '' = <workdir>/../tfds_data, shared by runs
  data.splits = ml_collections.ConfigDict(  # role -> tfds split spec
      {'train': 'train', 'validation': 'validation', 'test': 'test'})
  # Builder options, unset (None) until given, e.g. csv_text: file, text_column,
  # label_column, split_fractions, split_seed; image_folder: folder, image_size.
  # Catalog data sets take none.
  data.options = BuilderOptions()
  data.max_train_examples = -1    # -1: all; else a seeded random subset
  data.max_eval_examples = -1     # cap on validation/test/OOD examples; -1: all
  data.augment = False            # vision: random resized crop + flip
  data.download = False           # catalog data sets: let tfds download (needs internet)
  data.mock_examples = 0          # catalog data sets: random stand-ins (tests only)
  data.num_workers = 0            # grain processes preparing train batches; 0: in this one
  return data


def _ood_section() -> ml_collections.ConfigDict:
  """Out-of-distribution evaluation: the OOD set(s) and the scores computed on them."""
  ood = ml_collections.ConfigDict()
  ood.name = ''                   # '' = no OOD evaluation
  ood.split = 'test'
  ood.options = BuilderOptions()
  ood.mock_examples = 0
  # More OOD sets scored beside it (local builders, each with its default options and
  # config.ood.split), e.g. ('fortunes_text',): results.json's ood_sets compares them.
  ood.extra_names = ()
  # Also score the OOD set at every validation (validation split as in-distribution):
  # metrics.jsonl/TensorBoard get ood_auroc_{msp,entropy,mi}. Costs a pass over the subset.
  ood.every_validation = False
  ood.max_examples_per_validation = 500  # that fixed, seeded OOD subset; -1: all
  # Final evaluation: feature-space OOD scores (Mahalanobis distance per member, the
  # members' feature disagreement) beside the logit scores; fitted on training examples.
  ood.feature_scores = False
  ood.max_feature_train_examples = 2000  # training examples the class Gaussians see; -1: all
  return ood


def _shift_section() -> ml_collections.ConfigDict:
  """Robustness under corruption: the final evaluation also scores the best checkpoint on
  corrupted copies of a seeded test subset (results.json's shift section, shift.png)."""
  shift = ml_collections.ConfigDict()
  shift.enabled = False
  # Names (sve_jax/data/corruptions.py); () = the data's modality's defaults: ImageNet-C's
  # 15 for images, char_typo, char_drop, char_swap and char_insert for text.
  shift.corruptions = ()
  shift.severities = (1, 2, 3, 4, 5)
  shift.max_examples = 500        # the test subset each corruption copies; -1: all
  return shift


def _optim_section() -> ml_collections.ConfigDict:
  """The optimiser: AdamW with a warm-up schedule, rates per method family, clipping."""
  optim = ml_collections.ConfigDict()
  optim.learning_rate = 1e-3
  # single_ft, deep_ensemble, mc_dropout update every pretrained weight: 1e-3 destroys them.
  # -1 = learning_rate.
  optim.full_finetune_learning_rate = 5e-5
  optim.lora_learning_rate = -1.  # lora_ensemble's; -1 = learning_rate
  optim.weight_decay = 0.05
  optim.warmup_fraction = 0.1
  # warmup_cosine: warm-up from 0 over warmup_fraction, cosine to 0 (the paper's text);
  # official: the authors' code, warm-up from lr/5 over half the steps, cosine to 0.1·lr.
  optim.schedule = 'warmup_cosine'
  optim.clip_norm = 1.0
  return optim


def _mesh_section() -> ml_collections.ConfigDict:
  """The device mesh: its data and member axes, and how the frozen weights are placed."""
  mesh = ml_collections.ConfigDict()
  mesh.data = -1                  # -1 = all devices not used by the member axis
  mesh.member = 1
  # Frozen weights (SVE's U and Vᵀ, embeddings, the LM head; the zero-shot model): replicated
  # on every device, or fsdp: each split over `data` (models that do not fit one device).
  mesh.frozen = 'replicated'
  return mesh


def _distributed_section() -> ml_collections.ConfigDict:
  """Multi-process runs: ``jax.distributed.initialize``'s arguments (1 process = off)."""
  distributed = ml_collections.ConfigDict()
  distributed.coordinator_address = ''   # 'auto' on TPU/SLURM, host:port otherwise
  distributed.num_processes = 1
  distributed.process_id = 0
  return distributed


def _checkpoint_section() -> ml_collections.ConfigDict:
  """Orbax checkpoints: how many are kept, and when they are written."""
  checkpoint = ml_collections.ConfigDict()
  checkpoint.keep = 2             # latest N kept for resuming (plus the best)
  checkpoint.every_steps = 0      # also every N steps; 0 = at the end of each epoch only
  checkpoint.every_minutes = 10.  # also once this much wall time passed since the last save
  checkpoint.asynchronous = True  # write in a background thread; the step does not wait
  return checkpoint


def base_config() -> ml_collections.ConfigDict:
  """The reference protocol of the paper (docs/method.md), on no particular data."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # sve | single_svf | single_ft | deep_ensemble | mc_dropout | lora_ensemble | batch_ensemble
  # | laplace_lora
  c.method = 'sve'
  c.num_members = 4           # M (mc_dropout: test-time dropout samples of its one model)
  c.noise_std = _METHOD_DEFAULTS['noise_std']  # σ_init of the singular values (and copies)
  # SVE family: >= 0 draws each member's head N(0, head_init_std²), bias 0, apart from
  # noise_std (the authors' code keeps a separate head init); -1 = tied to noise_std.
  c.head_init_std = _METHOD_DEFAULTS['head_init_std']
  # SVE: each member trains on its own data order (seed + m), as the deep ensemble always
  # does; False = all members see the same batches (the paper).
  c.member_data_order = _METHOD_DEFAULTS['member_data_order']
  # SVE: the backbone's dropout in training, each member its own masks; False = none, as the
  # authors' code (evaluation is deterministic either way).
  c.sve_dropout = _METHOD_DEFAULTS['sve_dropout']
  # SVE family: 'all' decomposes every attention and MLP projection; 'attention' only q, k, v
  # and the attention output (the paper's attention-only ablation).
  c.sve_targets = _METHOD_DEFAULTS['sve_targets']
  c.execution = _METHOD_DEFAULTS['execution']  # compose | factored | auto (per-layer cost)
  c.ensemble_mode = 'probs'   # average probabilities (default) or 'logits'
  # lora_ensemble, laplace_lora: rank r of every adapter (alpha = r).
  c.lora_rank = _METHOD_DEFAULTS['lora_rank']
  # laplace_lora: the prior precisions its Laplace posterior chooses from by validation NLL.
  # Up to 1e6: on the text default the best of 1e-4 … 1e4 was the edge, 1e4 (BENCHMARKS.md,
  # "Laplace-LoRA on the text task").
  c.laplace_prior_precisions = _METHOD_DEFAULTS['laplace_prior_precisions']
  # Methods that fit a posterior after training (laplace_lora): the training examples its
  # curvature is summed over (a seeded subset, scaled to the split's size); -1: all.
  c.posterior_fit_examples = 1000
  c.model = _model_section()
  c.data = _data_section()
  c.ood = _ood_section()
  c.shift = _shift_section()
  c.optim = _optim_section()
  c.batch_size = 16
  c.eval_batch_size = 64
  c.num_epochs = 10

  c.mesh = _mesh_section()
  c.distributed = _distributed_section()
  c.checkpoint = _checkpoint_section()

  # Steps per call of the jitted step (one lax.scan over that many batches). >1 saves the
  # per-call cost (on CPU, XLA's fresh temporaries; BENCHMARKS.md); the chunks end early at
  # every validation or counted checkpoint.
  c.steps_per_execution = 1
  # With model.adapted_blocks < L: run the pretrained trunk once over the training split and
  # train on its cached outputs (README, "Adapting only the top blocks"); refused where the
  # trunk is not deterministic (dropout, augmentation) or the cache would exceed the bound.
  c.trunk_cache = False
  c.trunk_cache_max_gb = 4.
  c.log_every_steps = 10
  c.eval_every_steps = 0            # also validate every N steps (learning curves); 0 = epochs
  c.max_steps = -1                  # stop after this many steps in total (tests, smoke runs)
  return c


def fashion_mnist_config(max_train_examples: int) -> ml_collections.ConfigDict:
  """:func:`base_config` on the offline image task: Fashion-MNIST (Debian's package; 90% of
  its train split for training, 10% for validation) with scikit-learn's digits as OOD, sized
  for 2 CPU cores (2 epochs of 32, 1,000 evaluation images), SVE M = 4 at the offline
  default's recipe (lr 1e-2, a data order per member). The backbone is the caller's."""
  c = base_config()
  c.data.name = 'fashion_mnist_local'
  c.data.splits = {'train': 'train[:90%]', 'validation': 'train[90%:]', 'test': 'test'}
  c.data.augment = False        # 28-pixel greyscale: crops would cut the garment
  c.data.max_train_examples = max_train_examples
  c.data.max_eval_examples = 1000
  c.ood.name = 'digits_ood'
  c.num_members = 4
  c.optim.learning_rate = 1e-2
  c.member_data_order = True
  c.num_epochs = 2
  c.batch_size = 32
  c.eval_batch_size = 100
  return c
