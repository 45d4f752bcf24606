r"""Which platform a choice follows: the one rule for forms that differ between platforms.

A few operations have one form for CPU and another for every other platform: the linear
algebra of the associative-scan elements (:data:`jaxssm._base.linalg.BATCHED`), the map over
time (:func:`jaxssm._base.batching.batched`) and the linear recursion of the steady-state
schedule. Inside a program every such choice is made by :func:`cpu_or_default`, that is by
:func:`jax.lax.platform_dependent`: both forms are traced, and when the program is lowered
for its platform the other form is dropped, so the compiled program holds one form and no
conditional. The choice follows the platform the program is compiled for, not the process's
default backend: a program placed on the CPU of a GPU host, or lowered ahead of time for
another platform, gets that platform's form.

A choice made on the host, outside any program (the per-program compiler options of
:mod:`jaxssm._base.compile`), cannot see the program's platform and follows
:func:`jax.default_backend` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from jax import lax

__all__ = ["cpu_or_default"]

_T = TypeVar("_T")


def cpu_or_default(cpu: Callable[..., _T], default: Callable[..., _T]) -> Callable[..., _T]:
    """Return a function that runs ``cpu`` in programs compiled for CPU, ``default`` elsewhere.

    Args:
        cpu: the form for CPU.
        default: the form for every other platform; it takes the same arguments as ``cpu``
            and returns arrays of the same shapes and dtypes.

    Returns:
        ``f(*args)``, equal to ``cpu(*args)`` or ``default(*args)`` by the platform the
        enclosing program is lowered for (eagerly: the platform of the default device).
        The arguments are pytrees of arrays (``None`` leaves allowed); Python values the
        forms need are bound beforehand (:func:`functools.partial`).
    """

    def choose(*args):
        return lax.platform_dependent(*args, cpu=cpu, default=default)

    return choose
