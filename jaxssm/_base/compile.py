r"""``jit`` for the library's own entry points, with per-program XLA options for CPU.

jaxssm's top-level programs (the EM loop, the filter/smoother dispatch, ...) are compiled with
one per-program option, :data:`CPU_OPTIONS`: XLA's CPU compiler emits fused element-wise
kernels through its older LLVM emitters instead of the MLIR fusion emitters, which compiles
them faster and with less compile-time memory, with the same run time and the same results to
round-off (the measurements are in the documentation's benchmark pages).

What this is and is not:

* A per-program compiler option (``jax.jit(..., compiler_options=...)``), never global JAX or
  XLA configuration: user code is not affected. JAX takes such options on top-level programs
  only, so a call made inside any transformation (the user's ``jit``, ``vmap``, ``grad``, ...)
  gets the plain ``jax.jit``: its program is compiled with the options of the user's.
* CPU only: when JAX's default backend is not the CPU (a GPU machine), every program is the
  plain ``jax.jit`` one, so the GPU path carries no CPU setting.
* It is used only where this jaxlib accepts it: the first call compiles a one-operation
  probe with it, and a jax without ``compiler_options`` or an XLA that no longer knows the
  option gets the plain ``jax.jit``.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

try:  # no public equivalent: whether any transformation is tracing right now
    from jax._src.core import trace_state_clean as _top_level
except ImportError:  # pragma: no cover - a jax without it: never pass options

    def _top_level() -> bool:
        return False


__all__ = ["CPU_OPTIONS", "jit", "options"]

CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def options() -> dict:
    """:data:`CPU_OPTIONS` on a CPU default backend whose XLA accepts them, else ``{}``.

    Decided once per process, on first use.
    """
    if jax.default_backend() != "cpu":
        return {}
    try:
        probe = jax.jit(lambda x: x + 1, compiler_options=dict(CPU_OPTIONS))
        probe.lower(np.float32(0)).compile()
    except (TypeError, ValueError, RuntimeError):
        # TypeError: a jax whose jit has no compiler_options; the others: "No such compile
        # option" from an XLA without the switch.
        return {}
    return dict(CPU_OPTIONS)


class _Program:
    """``jax.jit(fun)``, and one with :func:`options` (built on first top-level use).

    Attribute access (``lower``, ``trace``, ``eval_shape``, ...) goes to the one a call made
    now would use.
    """

    def __init__(self, fun, kwargs):
        self._plain = jax.jit(fun, **kwargs)
        self._fun = fun
        self._kwargs = kwargs
        self._tuned = None
        functools.update_wrapper(self, fun)

    def _get(self):
        """Return the ``jax.jit`` for a call made now: with the options at top level, else plain."""
        if not _top_level():
            return self._plain
        if self._tuned is None:
            opts = options()
            tuned = jax.jit(self._fun, **self._kwargs, compiler_options=opts) if opts else None
            self._tuned = tuned or self._plain
        return self._tuned

    def __call__(self, *args, **kwargs):
        return self._get()(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fun=None, **kwargs):
    """``jax.jit(fun, **kwargs)`` with :func:`options`; usable as ``@partial(jit, ...)``."""
    if fun is None:
        return functools.partial(jit, **kwargs)
    return _Program(fun, kwargs)
