"""The small argument rules of the entry points: counts, tolerances, ``update=``, keys, callbacks.

Each function checks one argument, returns it in the form the library uses (a Python
``int``, a ``float``, a tuple of names) and raises naming the argument otherwise. They run on
the host, before anything is traced: the values they check fix shapes, loop lengths or
static options, so they must be concrete.

Below them, the value rules the checks of arrays share (:mod:`jaxssm._args.validation`,
:mod:`jaxssm._args.diffuse`, :mod:`jaxssm._args.results`): :func:`is_concrete` (an array
whose values are known on the host), :func:`psd_tolerance`, :func:`check_finite` and
:func:`check_psd`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxssm._base.types import PARAMETER_NAMES

__all__ = [
    "IntTypeError",
    "StructuredUpdateError",
    "check_int",
    "check_tol",
    "check_update",
    "check_key",
    "check_callback",
    "is_concrete",
    "psd_tolerance",
    "check_finite",
    "check_psd",
]


class IntTypeError(TypeError, ValueError):
    """An argument that must be an int is not one (a bool, a float, ``None``, a traced value).

    A :class:`TypeError`, and also a :class:`ValueError`: some public functions
    (:func:`jaxssm.priors.iwp`, :func:`jaxssm.datasets.sarcos_stand_in`,
    :func:`jaxssm.sharding.chunked_filter`, ...) document a ``ValueError`` for any bad count,
    others a ``TypeError`` for a count of the wrong type; one class keeps both contracts
    (as numpy's ``AxisError`` is both a ``ValueError`` and an ``IndexError``).
    """


class StructuredUpdateError(NotImplementedError, TypeError):
    """``update`` is a mapping of structures where an entry point takes names only.

    A :class:`NotImplementedError` (the entry point does not support structures), and a
    :class:`TypeError` (a mapping is the wrong type here), as before structures existed.
    """


def _describe(value) -> str:
    if isinstance(value, jax.core.Tracer):
        return "a traced value (it must be known when the program is built: a Python int)"
    if value is None or isinstance(value, (bool, int, float, complex, str, np.generic)):
        return repr(value)
    shape = getattr(value, "shape", None)
    return type(value).__name__ + ("" if shape is None else f" of shape {tuple(shape)}")


def check_int(value, name: str, *, minimum: int = 1, hint: str = "") -> int:
    """Return ``value`` as a Python ``int`` of at least ``minimum``, or raise naming ``name``.

    The one rule for counts (``num_iters``, ``num_steps``, ``num_chunks``, ``max_transient``,
    ...): a Python or numpy integer, or a concrete integer array of shape ``()``; never a
    bool, a float (even ``2.0``) or a traced value.

    Args:
        value: the argument.
        name: its name, for the message.
        minimum: the smallest value allowed (``1``: a positive int).
        hint: a sentence appended to the message (what the argument does, what to pass).

    Returns:
        ``int(value)``.

    Raises:
        IntTypeError: ``value`` is not an integer (a ``TypeError`` and a ``ValueError``).
        ValueError: ``value < minimum``.
    """
    if minimum == 1:
        kind = "a positive int"
    elif minimum == 0:
        kind = "a non-negative int"
    else:
        kind = f"an int >= {minimum}"
    tail = f"; {hint}" if hint else ""
    number = None
    if not isinstance(value, (bool, np.bool_, jax.core.Tracer)):
        try:
            number = operator.index(value)
        except TypeError:
            pass
    if isinstance(value, jax.core.Tracer):
        raise IntTypeError(
            f"{name} must be {kind} known when the program is traced (a Python int: it fixes "
            f"a loop's length or an array's shape), got a traced value ({type(value).__name__}"
            f"); under jax.jit mark it static, jax.jit(f, static_argnames=('{name}',)), or "
            f"close over it instead of passing it as an argument; under vmap or grad it "
            f"cannot be mapped or differentiated{tail}"
        )
    if number is None:
        raise IntTypeError(
            f"{name} must be {kind} ({name} must be a Python int, got {_describe(value)}){tail}"
        )
    if number < minimum:
        raise ValueError(f"{name} must be {kind} ({name} must be >= {minimum}, got {number}){tail}")
    return int(number)


def check_tol(tol, name: str = "tol") -> float | None:
    """Return ``tol`` as a finite float ``>= 0`` (or ``None``), or raise naming ``name``.

    Raises:
        TypeError: ``tol`` is not a real number (a bool is not one).
        ValueError: ``tol`` is negative, NaN or infinite.
    """
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be None or a finite float >= 0, got {tol!r}")
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"{name} must be None or a finite float >= 0, got {tol!r}")
    return float(tol)


def check_update(update) -> tuple[str, ...]:
    """Check an ``update=`` argument and return its names in :class:`~jaxssm.LGSSM` order.

    The one rule for EM, MLE and the command line: a parameter name or an iterable of
    names from ``("m0", "P0", "A", "Q", "H", "R", "B", "b", "D", "d")``, at least one, none
    repeated.

    Raises:
        TypeError: ``update`` is neither a str nor an iterable of str.
        StructuredUpdateError: ``update`` is a mapping (structures: see
            :func:`jaxssm._args.structures.parse_update`, for the entry points that take them).
        ValueError: it is empty, repeats a name or names an unknown parameter.
    """
    valid = ", ".join(repr(n) for n in PARAMETER_NAMES)
    if isinstance(update, str):
        names: tuple = (update,)
    elif isinstance(update, Mapping):  # {"A": False} would silently mean "A"
        raise StructuredUpdateError(
            f"update must be a parameter name or an iterable of names from ({valid}) here, "
            f"got a {type(update).__name__}: structures ({{field: structure}}) are accepted "
            "by m_step, fit_em, fit, fit_mle and standard_errors"
        )
    else:
        try:
            names = tuple(update)
        except TypeError:
            raise TypeError(
                f"update must be a parameter name or an iterable of names from ({valid}), "
                f"got {type(update).__name__}"
            ) from None
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"update must hold parameter names (str) from ({valid}), got {n!r}")
        if n not in PARAMETER_NAMES:
            raise ValueError(f"update names an unknown parameter {n!r}; valid names: {valid}")
    if not names:
        raise ValueError(f"update must name at least one parameter from ({valid}), got {update!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"update must not repeat names from ({valid}), got {list(names)}")
    return tuple(n for n in PARAMETER_NAMES if n in names)


def check_key(key, name: str = "key"):
    """Check that ``key`` is one JAX PRNG key and return it.

    Accepts a typed key (``jax.random.key(seed)``, dtype ``key<...>``, shape ``()``) or a raw
    one (``jax.random.PRNGKey(seed)``, unsigned 32-bit, shape ``[2]`` for the default
    implementation). There is no default key: sampling is explicit.

    Raises:
        TypeError: ``key`` is ``None`` or not a PRNG key.
        ValueError: ``key`` is a batch of keys (vmap over keys instead).
    """
    hint = "jax.random.key(seed) or jax.random.PRNGKey(seed)"
    if key is None:
        raise TypeError(f"{name} must be a JAX PRNG key ({hint}); there is no default key")
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape:
            raise ValueError(
                f"{name} must be a single PRNG key, got a batch of shape {shape} "
                "(jax.vmap over keys draws many)"
            )
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and len(shape) == 1:
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and len(shape) > 1:
        raise ValueError(
            f"{name} must be a single PRNG key, got a batch of raw keys of shape {shape} "
            "(jax.vmap over keys draws many)"
        )
    got = f"dtype {np.dtype(dtype)} and shape {shape}" if dtype is not None else type(key).__name__
    raise TypeError(f"{name} must be a JAX PRNG key ({hint}), got {got}")


def check_callback(callback) -> Callable | None:
    """Return ``callback`` if it is ``None`` or callable, or raise a ``TypeError`` naming it."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    return callback


def is_concrete(x) -> bool:
    """Whether ``x`` holds concrete values (not a tracer): its values can be checked."""
    return not isinstance(x, jax.core.Tracer)


def psd_tolerance(dtype, dim: int) -> float:
    """Relative tolerance of the PSD check: ``10 * dim * eps`` of ``dtype``.

    An eigenvalue computed from a matrix whose entries carry relative round-off ``eps`` is
    uncertain by about ``dim * eps`` times the matrix's spectral norm; a factor 10 above that
    accepts singular matrices the library itself produces (EM and MLE fits whose smallest
    eigenvalue is at round-off) and still rejects any real indefiniteness.
    """
    return 10.0 * max(int(dim), 1) * float(jnp.finfo(dtype).eps)


def check_finite(name: str, a: np.ndarray) -> None:
    """Raise a ``ValueError`` naming ``name`` and the first non-finite entry of ``a``."""
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must be finite, got {a[first]} at index {first}")


def check_psd(name: str, x) -> None:
    """Finite, symmetric and positive semi-definite, relative to the matrix's scale.

    Skipped under tracing (see :func:`jaxssm._args.validation.validate_params`). ``x`` may
    be singular: the smallest eigenvalue must be at least ``-psd_tolerance * |x|_2``. A
    time-varying ``x`` ``[N, n, n]`` is checked step by step; the message names the first
    bad step.
    """
    if not is_concrete(x):
        return
    if x.ndim == 3:
        a = np.asarray(x, dtype=np.float64)
        check_finite(name, a)
        for k in range(a.shape[0]):
            check_psd(f"{name}[{k}]", x[k])
        return
    a = np.asarray(x, dtype=np.float64)
    check_finite(name, a)
    eps = float(jnp.finfo(x.dtype).eps)
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    asym = float(np.max(np.abs(a - a.T))) if a.size else 0.0
    if asym > np.sqrt(eps) * scale:
        raise ValueError(
            f"{name} must be symmetric positive definite or semi-definite, got a matrix of "
            f"shape {a.shape} with max |{name} - {name}^T| = {asym:.3g} "
            f"(more than sqrt(eps) = {np.sqrt(eps):.2g} times max |{name}| = {scale:.3g})"
        )
    if a.size == 0:
        return
    eig = np.linalg.eigvalsh(0.5 * (a + a.T))
    tol = psd_tolerance(x.dtype, a.shape[0]) * float(np.max(np.abs(eig)))
    if eig[0] < -tol:
        raise ValueError(
            f"{name} must be symmetric positive definite or semi-definite, got shape "
            f"{a.shape} with smallest eigenvalue {eig[0]:.3g} (below -{tol:.2g}, the "
            f"round-off allowance relative to its largest |eigenvalue| {np.max(np.abs(eig)):.3g})"
        )
