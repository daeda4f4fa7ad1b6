"""memagent.meta: MAML (second and first order) and Reptile with ``torch.func``."""

from memagent.meta.maml import (
    MAML,
    functional_model,
    inner_adapt,
    maml_loss,
    meta_gradient,
    reptile_direction,
    safeguarded_step,
    sgd_adapt,
)

__all__ = [
    "MAML",
    "functional_model",
    "inner_adapt",
    "maml_loss",
    "meta_gradient",
    "reptile_direction",
    "safeguarded_step",
    "sgd_adapt",
]
