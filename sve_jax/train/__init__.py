"""Training: state and optimiser, pure steps, shardings, checkpoints, the loop, evaluation, runs.

``sve_jax.train.run.run(config, workdir)`` is what ``train.py`` calls. The steps know nothing
of SVE: every method supplies a forward and the rest is shared.

Public modules (import them by name; this package imports none of them, so that a step or a
checkpoint does not pull in the data sets and the report):

* :mod:`~sve_jax.train.run`: one run from a config, in stages (:func:`~sve_jax.train.run.run`).
* :mod:`~sve_jax.train.checks`: the config and workdir checks made before any heavy work.
* :mod:`~sve_jax.train.state`: ``TrainState``, the optimiser and its schedules.
* :mod:`~sve_jax.train.steps`: the pure train, multi-step and eval steps.
* :mod:`~sve_jax.train.sharding`: the mesh and every sharding.
* :mod:`~sve_jax.train.loop`: the training loop and its records (``Training``, ``TrainData``).
* :mod:`~sve_jax.train.checkpoint`: orbax checkpoints (``Checkpointer``, ``Workdir``).
* :mod:`~sve_jax.train.evaluate`: evaluation passes (``make_predictor``, ``Split``).
* :mod:`~sve_jax.train.predict`: ``--mode=predict`` on new data.
* :mod:`~sve_jax.train.scalar_log`: metrics.jsonl and TensorBoard events.
"""

__all__ = [
    # A run and its checks.
    'run', 'checks',
    # State, steps, shardings.
    'state', 'steps', 'sharding',
    # The loop, its checkpoints, evaluation.
    'loop', 'checkpoint', 'evaluate',
    # New data, logs.
    'predict', 'scalar_log',
]
