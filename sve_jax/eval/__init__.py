"""Evaluation: metrics (pure functions of member logits) and the run's report (results.json,
the summary table, the reliability diagram)."""
