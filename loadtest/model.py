"""The sizing model lives in the pool package (``fcgipool.sizing.model``) so that ``fcgipool advise`` can use it
where loadtest/ is not installed; this module keeps ``from loadtest import model`` working for the load tests."""

from fcgipool.sizing.model import (
    QueueEstimate,
    allen_cunneen_factor,
    budget_for_loss,
    cv2,
    erlang_b,
    erlang_c,
    lost_share,
    memory_cap,
    predict,
    quantile,
    quantile_ci,
    relative_error,
    relaxation_time,
    smallest_workers,
)

__all__ = [
    "QueueEstimate",
    "allen_cunneen_factor",
    "budget_for_loss",
    "cv2",
    "erlang_b",
    "erlang_c",
    "lost_share",
    "memory_cap",
    "predict",
    "quantile",
    "quantile_ci",
    "relative_error",
    "relaxation_time",
    "smallest_workers",
]
