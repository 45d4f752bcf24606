"""jaxssm: exact inference and parameter learning in linear-Gaussian state-space models.

Model (time convention fixed throughout)::

    x_0 ~ N(m0, P0);  x_k = A x_{k-1} + q_k, q_k ~ N(0, Q);  y_k = H x_k + r_k, r_k ~ N(0, R)

for k = 1..N. ``ys`` holds ``y_1..y_N`` (shape ``[N, Dy]``); filter and smoother outputs
cover k = 0..N (``N + 1`` rows).
"""

from jaxssm import datasets, priors, steps
from jaxssm._em import EMInfo, fit_em, fit_em_with_info
from jaxssm._estep import e_step
from jaxssm._exercise import ExerciseSetup, exercise_setup
from jaxssm._filtering import FilterResult, kalman_filter, log_likelihood
from jaxssm._mle import UnconstrainedParams, fit_mle, from_unconstrained, to_unconstrained
from jaxssm._model import LGSSM, validate_params
from jaxssm._mstep import expected_log_joint, m_step
from jaxssm._parallel import parallel_kalman_filter, parallel_rts_smoother
from jaxssm._sampling import sample
from jaxssm._smoothing import SmootherResult, rts_smoother, rts_smoother_from_filter
from jaxssm._stats import SufficientStats
from jaxssm._version import __version__

__all__ = [
    "__version__",
    "LGSSM",
    "validate_params",
    "FilterResult",
    "SmootherResult",
    "kalman_filter",
    "rts_smoother",
    "rts_smoother_from_filter",
    "log_likelihood",
    "parallel_kalman_filter",
    "parallel_rts_smoother",
    "sample",
    "UnconstrainedParams",
    "to_unconstrained",
    "from_unconstrained",
    "fit_mle",
    "SufficientStats",
    "e_step",
    "m_step",
    "expected_log_joint",
    "fit_em",
    "fit_em_with_info",
    "EMInfo",
    "steps",
    "priors",
    "datasets",
    "exercise_setup",
    "ExerciseSetup",
]
