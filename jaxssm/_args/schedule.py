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

A :class:`Schedule` is hashable, so it is a static argument of the jitted programs.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["METHODS", "Schedule", "resolve", "is_parallel", "schedule_name"]

METHODS = ("sequential", "parallel")


class Schedule(NamedTuple):
    """A checked ``(method, steady_state)`` pair (from :func:`resolve`).

    Attributes:
        method: ``"sequential"`` or ``"parallel"``.
        steady_state: ``None`` (the length rule: sequential only), ``True`` or ``False``.
    """

    method: str
    steady_state: bool | None

    @property
    def parallel(self) -> bool:
        """Whether the schedule runs associative scans (``method="parallel"``)."""
        return self.method == "parallel"

    @property
    def name(self) -> str:
        """``"auto"``, ``"steady"``, ``"sequential"``, ``"parallel"`` or ``"parallel_steady"``."""
        if self.parallel:
            return "parallel_steady" if self.steady_state else "parallel"
        return {None: "auto", True: "steady", False: "sequential"}[self.steady_state]


def resolve(method: str, steady_state: bool | None) -> Schedule:
    """Check ``method`` and ``steady_state`` (in that order) and return their :class:`Schedule`.

    ``method="parallel"`` with ``steady_state=None`` is ``Schedule("parallel", False)``: the
    length rule applies to the sequential schedule only, so the two spellings are one value
    (one compiled program).

    Raises:
        ValueError: ``method`` is not ``"sequential"`` or ``"parallel"``.
        TypeError: ``steady_state`` is not ``None``, ``True`` or ``False``.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be 'sequential' or 'parallel', got {method!r}")
    if steady_state is not None and not isinstance(steady_state, bool):
        raise TypeError(f"steady_state must be None, True or False, got {steady_state!r}")
    if method == "parallel" and steady_state is None:
        steady_state = False
    return Schedule(method, steady_state)


def schedule_name(schedule: Schedule | str) -> str:
    """Return the name of ``schedule``: :attr:`Schedule.name`, or ``schedule`` if a name."""
    return schedule.name if isinstance(schedule, Schedule) else schedule


def is_parallel(schedule: Schedule | str) -> bool:
    """Whether ``schedule`` (a :class:`Schedule` or its name) runs associative scans."""
    return schedule_name(schedule).startswith("parallel")
