"""``method=`` and ``steady_state=``: the one check, and the schedule they name.

Every inference and learning entry point takes ``method="sequential" | "parallel"`` and
``steady_state=None | True | False`` and hands them to :func:`resolve`:

============== ================ ===================== ==========================================
``method``     ``steady_state`` :attr:`Schedule.name` what runs
============== ================ ===================== ==========================================
sequential     ``None``         ``"auto"``            the steady-state fast path on long series
                                                      (the dispatcher's length rule), the full
                                                      ``lax.scan`` recursion on short ones
sequential     ``True``         ``"steady"``          the steady-state fast path wherever the
                                                      series holds its three regions
sequential     ``False``        ``"sequential"``      the full ``lax.scan`` recursion
parallel       ``None, False``  ``"parallel"``        the associative scan over every step
parallel       ``True``         ``"parallel_steady"`` the steady-state schedule with log-depth
                                                      mean recursions, the associative scan as
                                                      its fallback
============== ================ ===================== ==========================================

A fifth schedule is not chosen by these arguments but by the data: with ``method="parallel"``
a concrete ``ys`` split over time on a mesh axis runs the time-sharded (chunked) schedule,
which the dispatcher records in :attr:`Schedule.mesh` and :attr:`Schedule.axis_name` after it
has checked ``ys`` (:func:`jaxssm._schedules.dispatch.place`).

A :class:`Schedule` is hashable, so it is a static argument of the jitted programs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from jax.sharding import Mesh

__all__ = ["METHODS", "FORMS", "Schedule", "resolve", "by_name", "is_parallel", "schedule_name"]

METHODS = ("sequential", "parallel")
FORMS = ("cov", "sqrt")


class Schedule(NamedTuple):
    """A checked ``(method, steady_state)`` pair (from :func:`resolve`).

    Attributes:
        method: ``"sequential"`` or ``"parallel"``.
        steady_state: ``None`` (the length rule: sequential only), ``True`` or ``False``.
        mesh: the :class:`jax.sharding.Mesh` that ``ys`` is split over in time, or ``None``.
            Set by the dispatcher only (``method="parallel"``, ``steady_state=False``).
        axis_name: the axis of ``mesh`` that splits time, or ``None``.
        form: ``"cov"`` (covariances) or ``"sqrt"`` (their Cholesky factors, propagated by
            QR; ``steady_state=None`` runs the full recursion of the method).
    """

    method: str
    steady_state: bool | None
    mesh: Mesh | None = None
    axis_name: str | None = None
    form: str = "cov"

    @property
    def parallel(self) -> bool:
        """Whether the schedule runs associative scans (``method="parallel"``)."""
        return self.method == "parallel"

    @property
    def time_sharded(self) -> bool:
        """Whether the chunked schedule runs over the devices of :attr:`mesh`."""
        return self.mesh is not None

    @property
    def name(self) -> str:
        """The name in the module docstring's table, or ``"time_sharded"``."""
        if self.time_sharded:
            return "time_sharded"
        if self.parallel:
            return "parallel_steady" if self.steady_state else "parallel"
        return {None: "auto", True: "steady", False: "sequential"}[self.steady_state]


def resolve(method: str, steady_state: bool | None, form: str = "cov") -> Schedule:
    """Check ``method``, ``steady_state`` and ``form`` (in that order): their :class:`Schedule`.

    ``form="sqrt"`` with ``steady_state=None`` runs the full square-root recursion of the
    method (sequential or parallel) whatever the length, and its
    :class:`~jaxssm.ScheduleInfo` says so (``num_transient == 0``); with
    ``steady_state=True`` the steady-state schedule with its covariance side on factors
    (:mod:`jaxssm._schedules.sqrt_steady`), the full square-root recursion as its fallback.
    It has no time-sharded schedule (a sharded ``ys`` runs the unsharded parallel
    square-root schedule).

    ``method="parallel"`` with ``steady_state=None`` is ``Schedule("parallel", False)``: the
    length rule applies to the sequential schedule only, so the two spellings are one value
    (one compiled program).

    Raises:
        ValueError: ``method`` is not ``"sequential"`` or ``"parallel"``.
        TypeError: ``steady_state`` is not ``None``, ``True`` or ``False``.
        ValueError: ``form`` is not ``"cov"`` or ``"sqrt"``.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be 'sequential' or 'parallel', got {method!r}")
    if steady_state is not None and not isinstance(steady_state, bool):
        raise TypeError(f"steady_state must be None, True or False, got {steady_state!r}")
    if not isinstance(form, str) or form not in FORMS:
        raise ValueError(f"form must be 'cov' or 'sqrt', got {form!r}")
    if method == "parallel" and steady_state is None:
        steady_state = False
    return Schedule(method, steady_state, form=form)


_BY_NAME = {
    "auto": Schedule("sequential", None),
    "steady": Schedule("sequential", True),
    "sequential": Schedule("sequential", False),
    "parallel": Schedule("parallel", False),
    "parallel_steady": Schedule("parallel", True),
}


def by_name(schedule: Schedule | str) -> Schedule:
    """Return ``schedule`` as a :class:`Schedule`: itself, or the one its name names.

    Raises:
        ValueError: an unknown name (``"time_sharded"`` needs a mesh: it has no name-only
            form).
    """
    if isinstance(schedule, Schedule):
        return schedule
    if schedule not in _BY_NAME:
        raise ValueError(f"schedule must be one of {tuple(_BY_NAME)}, got {schedule!r}")
    return _BY_NAME[schedule]


def schedule_name(schedule: Schedule | str) -> str:
    """Return the name of ``schedule``: :attr:`Schedule.name`, or ``schedule`` if a name."""
    return schedule.name if isinstance(schedule, Schedule) else schedule


def is_parallel(schedule: Schedule | str) -> bool:
    """Whether ``schedule`` (a :class:`Schedule` or its name) runs associative scans."""
    return schedule_name(schedule).startswith("parallel")
