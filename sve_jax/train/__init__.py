"""Training: state and optimiser, pure steps, shardings, checkpoints, the loop, evaluation, runs.

``sve_jax.train.run.run(config, workdir)`` is what ``train.py`` calls. The steps know nothing
of SVE: every method supplies a forward and the rest is shared.
"""
