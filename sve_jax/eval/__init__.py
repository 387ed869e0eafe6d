"""Evaluation: what member logits say, and the run's report.

Public modules (import them by name; this package imports none of them, so that reading one
costs only its own imports):

* :mod:`~sve_jax.eval.metrics`: pure functions of member logits (accuracy, NLL, Brier, ECE,
  temperature scaling, uncertainty, OOD scores, how far the members moved).
* :mod:`~sve_jax.eval.selective`: risk–coverage, AURC and thresholds of selective prediction.
* :mod:`~sve_jax.eval.shift`: scores under corruption (results.json's ``shift``), their plot.
* :mod:`~sve_jax.eval.feature_ood`: feature-space OOD scores (Mahalanobis distance, the
  members' feature disagreement) and their AUROCs.
* :mod:`~sve_jax.eval.report`: results.json (its records :class:`~sve_jax.eval.report.Predictions`,
  ``ParamCounts``, ``OodLogits``, ``RunSections``, ``BestCheckpoint``), the summary table,
  the reliability diagram.
* :mod:`~sve_jax.eval.html_report`: the self-contained report.html.
"""

__all__ = [
    # Numbers from member logits.
    'metrics', 'selective', 'feature_ood', 'shift',
    # What a run writes.
    'report', 'html_report',
]
