"""Fields every config shares; each config file overrides what its setting needs."""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """The reference protocol of the paper (DESIGN.md §1), on no particular data."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # sve | single_svf | single_ft | deep_ensemble | mc_dropout | lora_ensemble | batch_ensemble
  c.method = 'sve'
  c.num_members = 4           # M (mc_dropout: test-time dropout samples of its one model)
  c.noise_std = 0.01          # σ_init of the singular values (and per-member copies)
  c.execution = 'auto'        # compose | factored | auto (per-layer cost model)
  c.ensemble_mode = 'probs'   # average probabilities (default) or 'logits'
  c.lora_rank = 8             # lora_ensemble: rank r of every adapter (alpha = r, scale 1)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'bert'       # bert | vit | efficientnet_lite0
  c.model.path = ''           # local checkpoint folder/file; '' = the offline default
  c.model.preset = ''         # ViT: dino_vits16 | dinov2_vits14 | augreg_vitb16
  c.model.pooling = ''        # BERT: cls | mean; '' = as the checkpoint folder says
  c.model.max_length = 64     # BERT: tokens per example
  c.model.image_size = 224    # vision input size
  c.model.dropout_rate = -1.  # every dropout rate of the backbone; -1 = its own (mc_dropout)
  c.model.dtype = 'float32'

  c.data = ml_collections.ConfigDict()
  c.data.name = 'tweet_sentiment'   # a local builder, a tfds catalog name, csv_text, image_folder
  c.data.data_dir = ''              # '' = <workdir>/../tfds_data, shared by runs
  c.data.splits = ml_collections.ConfigDict(  # role -> tfds split spec
      {'train': 'train', 'validation': 'validation', 'test': 'test'})
  # Builder options, e.g. csv_text: file, text_column, label_column, split_fractions,
  # split_seed; image_folder: folder, image_size. Empty for catalog data sets.
  c.data.options = ml_collections.ConfigDict()
  c.data.max_train_examples = -1    # -1: all; else a seeded random subset
  c.data.max_eval_examples = -1     # cap on validation/test/OOD examples; -1: all
  c.data.augment = False            # vision: random resized crop + flip
  c.data.download = False           # catalog data sets: let tfds download (needs internet)
  c.data.mock_examples = 0          # catalog data sets: random stand-ins (tests only)

  c.ood = ml_collections.ConfigDict()
  c.ood.name = ''                   # '' = no OOD evaluation
  c.ood.split = 'test'
  c.ood.options = ml_collections.ConfigDict()
  c.ood.mock_examples = 0

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-3
  # single_ft, deep_ensemble, mc_dropout update every pretrained weight: 1e-3 destroys them.
  # -1 = learning_rate.
  c.optim.full_finetune_learning_rate = 5e-5
  c.optim.weight_decay = 0.05
  c.optim.warmup_fraction = 0.1
  c.optim.clip_norm = 1.0

  c.batch_size = 16
  c.eval_batch_size = 64
  c.num_epochs = 10

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                  # -1 = all devices not used by the member axis
  c.mesh.member = 1

  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ''   # 'auto' on TPU/SLURM, host:port otherwise
  c.distributed.num_processes = 1
  c.distributed.process_id = 0

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep = 2             # latest N kept for resuming (plus the best)
  c.checkpoint.every_steps = 0      # 0 = at the end of each epoch only

  c.log_every_steps = 10
  c.max_steps = -1                  # stop after this many steps in total (tests, smoke runs)
  return c
