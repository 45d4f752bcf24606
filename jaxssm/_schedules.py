"""Which recursion runs: the sequential scan, its steady-state fast path, or the parallel scan.

Public functions take ``method="sequential" | "parallel"`` and ``steady_state=True | False``;
:func:`resolve` turns the pair into one internal schedule name, and the ``*_fn`` helpers
return the unchecked, jittable function for it. The steady-state fast path
(:mod:`jaxssm._steady`) refines the sequential schedule only: with ``method="parallel"``
the associative scan runs whatever ``steady_state`` says (the results agree to round-off).
"""

from __future__ import annotations

import jax.numpy as jnp

SEQUENTIAL, STEADY, PARALLEL = "sequential", "steady", "parallel"

#: Series shorter than this run the full recursion even with ``steady_state=True``: there the
#: fast path saves little (the full sequential smoother takes milliseconds) and compiling
#: both of its branches costs seconds. The choice is static (it depends on the shape only).
MIN_STEADY_STEPS = 2048


def _short_series_fallback(fast, full):
    def fn(params, ys):
        return full(params, ys) if ys.shape[0] < MIN_STEADY_STEPS else fast(params, ys)

    return fn


def resolve(method: str, steady_state: bool) -> str:
    """Check ``method`` and ``steady_state`` and return the internal schedule name."""
    if method not in (SEQUENTIAL, PARALLEL):
        raise ValueError(f"method must be 'sequential' or 'parallel', got {method!r}")
    if not isinstance(steady_state, (bool, jnp.bool_)):
        raise TypeError(f"steady_state must be True or False, got {steady_state!r}")
    return STEADY if (method == SEQUENTIAL and bool(steady_state)) else method


def filter_fn(schedule: str):
    """``(params, ys [N, Dy]) -> FilterResult`` for ``schedule``."""
    if schedule == PARALLEL:
        from jaxssm._parallel import _parallel_filter

        return _parallel_filter
    from jaxssm._filtering import _filter

    if schedule == STEADY:
        from jaxssm._steady import _steady_filter

        return _short_series_fallback(_steady_filter, _filter)
    return _filter


def smoother_fn(schedule: str):
    """``(params, ys [N, Dy]) -> SmootherResult`` for ``schedule``."""
    if schedule == PARALLEL:
        from jaxssm._parallel import _parallel_smooth

        return _parallel_smooth
    from jaxssm._filtering import _filter
    from jaxssm._smoothing import _smooth

    def full(params, ys):
        return _smooth(params, _filter(params, ys))

    if schedule == STEADY:
        from jaxssm._steady import _steady_smooth

        return _short_series_fallback(_steady_smooth, full)
    return full


def log_likelihood_fn(schedule: str):
    """``(params, ys [N, Dy]) -> log p(y_1:N)`` for ``schedule`` (no stored moments)."""
    if schedule == STEADY:
        from jaxssm._steady import _steady_log_likelihood

        return _short_series_fallback(_steady_log_likelihood, log_likelihood_fn(SEQUENTIAL))
    filt = filter_fn(schedule)

    # Under jit only the scalar leaves, so XLA drops the stored moments.
    def log_likelihood(params, ys):
        return filt(params, ys).log_likelihood

    return log_likelihood


def stats_fn(schedule: str):
    """``(params, ys [N, Dy]) -> (SufficientStats, log_likelihood)`` for one sequence."""
    if schedule == STEADY:
        from jaxssm._steady import _steady_stats

        return _short_series_fallback(_steady_stats, stats_fn(SEQUENTIAL))
    from jaxssm._estep import _sequence_stats

    smoother = smoother_fn(schedule)

    def stats(params, ys):
        smoothed = smoother(params, ys)
        return _sequence_stats(smoothed, ys), smoothed.log_likelihood

    return stats
