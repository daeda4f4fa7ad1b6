"""memagent.bench: benchmark sweeps, switch-recovery metrics and rliable-style statistics.

- :mod:`memagent.bench.stats`   -- IQM, mean, stratified-bootstrap CIs, probability of improvement.
- :mod:`memagent.bench.metrics` -- switch-aligned curves, recovery time, post-switch regret.
- :mod:`memagent.bench.sweep`   -- suite YAML, one process (or Ray task) per run, atomic results, resume.
- :mod:`memagent.bench.report`  -- Markdown table, CSV and figures.

Run a suite with ``python -m memagent.bench benchmarks/suites/quick.yml`` (or ``train.py bench ...``).
"""

from memagent.bench.metrics import SwitchMetrics, recovery_time, switch_metrics, switch_points
from memagent.bench.stats import (
    IntervalEstimate,
    aggregate_mean,
    interval_estimates,
    iqm,
    probability_of_improvement,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)

__all__ = [
    "IntervalEstimate",
    "SwitchMetrics",
    "aggregate_mean",
    "interval_estimates",
    "iqm",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "recovery_time",
    "stratified_bootstrap_ci",
    "switch_metrics",
    "switch_points",
]
