"""jaxssm: exact inference and parameter learning in linear-Gaussian state-space models.

Model (time convention fixed throughout)::

    x_0 ~ N(m0, P0)
    x_k = A x_{k-1} + B u_k + b + q_k,  q_k ~ N(0, Q)
    y_k = H x_k + D u_k + d + r_k,      r_k ~ N(0, R)

for k = 1..N. ``ys`` holds ``y_1..y_N`` (shape ``[N, Dy]``); the optional input gains ``B``,
``D`` and offsets ``b``, ``d`` are ``None`` (absent) by default, and ``inputs`` holds
``u_1..u_N`` (shape ``[N, Du]``) where ``B`` or ``D`` is set. Filter and smoother outputs
cover k = 0..N (``N + 1`` rows). Every inference and learning function takes
``method="sequential" | "parallel"`` and ``steady_state=None | True | False``.
"""

from jaxssm import datasets, priors, sharding, steps
from jaxssm._api.forecast import (
    FilterDiagnostics,
    Forecast,
    filter_diagnostics,
    forecast,
    forecast_sample,
)
from jaxssm._api.inference import (
    kalman_filter,
    log_likelihood,
    rts_smoother,
    rts_smoother_from_filter,
)
from jaxssm._api.posterior import posterior_sample
from jaxssm._api.sampling import sample
from jaxssm._args.callbacks import CallbackError
from jaxssm._args.validation import check_values, validate_params
from jaxssm._base.structure import Linear
from jaxssm._base.types import (
    LGSSM,
    PARAMETER_NAMES,
    CovFactors,
    EMInfo,
    EMStatus,
    FilterResult,
    MLEInfo,
    MLEStatus,
    ScheduleInfo,
    SmootherResult,
    SufficientStats,
    UnconstrainedParams,
)
from jaxssm._learn.em import e_step, fit_em
from jaxssm._learn.fit import FitInfo, FitStatus, fit
from jaxssm._learn.initialize import initialize
from jaxssm._learn.mle import fit_mle, from_unconstrained, to_unconstrained
from jaxssm._learn.mstep import expected_log_joint, m_step
from jaxssm._learn.score import score
from jaxssm._learn.uncertainty import standard_errors
from jaxssm._version import __version__

__all__ = [
    "__version__",
    "LGSSM",
    "PARAMETER_NAMES",
    "validate_params",
    "check_values",
    "CallbackError",
    "FilterResult",
    "SmootherResult",
    "CovFactors",
    "kalman_filter",
    "rts_smoother",
    "rts_smoother_from_filter",
    "log_likelihood",
    "sample",
    "posterior_sample",
    "forecast",
    "forecast_sample",
    "Forecast",
    "filter_diagnostics",
    "FilterDiagnostics",
    "SufficientStats",
    "e_step",
    "m_step",
    "Linear",
    "expected_log_joint",
    "score",
    "standard_errors",
    "initialize",
    "fit_em",
    "fit",
    "FitInfo",
    "FitStatus",
    "EMInfo",
    "EMStatus",
    "ScheduleInfo",
    "fit_mle",
    "MLEInfo",
    "MLEStatus",
    "UnconstrainedParams",
    "to_unconstrained",
    "from_unconstrained",
    "steps",
    "sharding",
    "priors",
    "datasets",
]
