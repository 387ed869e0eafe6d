"""Evaluation passes: member logits, labels and agreement over a split."""
import jax.numpy as jnp
import numpy as np

from sve_jax.train import evaluate as train_evaluate


def test_split_predictions_keep_each_examples_agreement_beside_its_logits_and_label():
  from sve_jax.train import sharding
  agreement = [np.nan if i % 4 == 0 else i / 10 for i in range(10)]
  source = [{'x': np.float32(i), 'label': i % 3, 'agreement': np.float32(a)}
            for i, a in enumerate(agreement)]
  transform = lambda raw: {'inputs': raw['x'][:, None], 'label': raw['label']}
  eval_fn = lambda trainables, frozen, inputs, rng: jnp.stack([inputs, -inputs])
  # Batches of 4: the last one is padded with copies of example 0, which must not leak.
  mesh = sharding.make_mesh(-1, 1)
  got = train_evaluate.split_predictions(
      eval_fn, None, None, train_evaluate.Split(source, transform), mesh, 4)
  np.testing.assert_array_equal(got.logits[0, :, 0], np.arange(10))
  np.testing.assert_array_equal(got.labels, np.arange(10) % 3)
  np.testing.assert_array_equal(got.agreement, np.asarray(agreement, np.float32))
  without = [{k: v for k, v in example.items() if k != 'agreement'} for example in source]
  assert train_evaluate.split_predictions(
      eval_fn, None, None, train_evaluate.Split(without, transform), mesh, 4).agreement is None


def test_split_predictions_gather_a_features_forwards_features_beside_its_logits():
  from sve_jax.train import sharding
  source = [{'x': np.float32(i), 'label': i % 3} for i in range(6)]
  transform = lambda raw: {'inputs': raw['x'][:, None], 'label': raw['label']}
  eval_fn = lambda trainables, frozen, inputs, rng: (jnp.stack([inputs, -inputs]),
                                                     jnp.stack([2 * inputs, 3 * inputs]))
  got = train_evaluate.split_predictions(eval_fn, None, None,
                                         train_evaluate.Split(source, transform),
                                         sharding.make_mesh(-1, 1), 4)
  assert got.logits.shape == got.features.shape == (2, 6, 1)
  np.testing.assert_array_equal(got.features[:, :, 0], [2 * np.arange(6), 3 * np.arange(6)])
  np.testing.assert_array_equal(got.logits[1, :, 0], -np.arange(6))
