r"""Checks of the model and the data: parameters, observations and inputs.

Shapes and dtypes are checked at trace time, so errors name the argument and the expected
shape under ``jit`` and ``vmap`` as well. Value checks run on concrete (untraced) values;
under transformations they are opt-in (:func:`check_values`, with ``checkify``):

* every field finite; ``ys`` free of ``inf`` (NaN marks a missing entry);
* ``P0``, ``Q``, ``R`` symmetric, ``max |S - S^T| <= sqrt(eps) max |S|``, and positive
  *semi*-definite, ``lambda_min(S) >= -10 n eps max |lambda(S)|`` (:func:`psd_tolerance`):
  singular covariances are valid;
* with a singular ``R``, the step-1 innovation covariance
  ``S_1 = H (A P0 A^T + Q) H^T + R`` positive definite (else ``y_1`` has no density).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxssm._args.checks import check_finite, check_psd, is_concrete, psd_tolerance
from jaxssm._args.diffuse import check_p0
from jaxssm._base import model as _model
from jaxssm._base.types import BASE_NDIM, LGSSM, OPTIONAL_NAMES, PARAMETER_NAMES, TIME_VARYING_NAMES

__all__ = [
    "validate_params",
    "check_values",
    "check_trainable_covariances",
    "check_positive_definite",
    "check_finite_psd",
    "validate_observations",
    "validate_inputs",
    "check_plain_model",
    "check_time_invariant",
    "check_time_varying_length",
]

_COVARIANCES = ("P0", "Q", "R")


def _as_float_array(name: str, x) -> jax.Array:
    """Convert to a JAX array and insist on a real floating dtype."""
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = jnp.asarray(x)
        dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating) or jnp.finfo(dtype).bits < 32:
        # Half precision is refused here: the factorisations have no float16/bfloat16 kernels.
        raise TypeError(
            f"{name} must have a real floating dtype (float32 or float64), got {np.dtype(dtype)}"
        )
    return jnp.asarray(x)


def _shape_spec(name: str, D: int, Dy: int, Du: int | None) -> tuple[tuple, str]:
    """Return the shape a time-invariant field must have, and its symbolic form."""
    return {
        "m0": ((D,), "[D]"),
        "P0": ((D, D), "[D, D]"),
        "A": ((D, D), "[D, D]"),
        "Q": ((D, D), "[D, D]"),
        "H": ((Dy, D), "[Dy, D]"),
        "R": ((Dy, Dy), "[Dy, Dy]"),
        "B": ((D, Du), "[D, Du]"),
        "b": ((D,), "[D]"),
        "D": ((Dy, Du), "[Dy, Du]"),
        "d": ((Dy,), "[Dy]"),
    }[name]


def validate_params(
    params: LGSSM, *, check_values: bool = True, allow_diffuse: bool = False
) -> LGSSM:
    """Check shapes, dtypes and (for concrete values) covariances of ``params``.

    Shapes and dtypes are checked at trace time. When the values are concrete (not traced),
    every field is checked to be finite and ``P0``, ``Q``, ``R`` to be symmetric (within
    ``sqrt(eps)`` of their largest entry) and positive *semi*-definite (smallest eigenvalue
    at least ``-10 D eps`` times the largest |eigenvalue|): singular covariances are valid
    (a companion-form AR model, a known initial state ``P0 = 0``, a noise-free sensor).
    Under ``jit`` the values are unknown; see :func:`check_values` for checks there.

    The optional fields ``B, b, D, d`` may be ``None``; ``B`` and ``D`` must agree on
    ``Du``. Each of ``A, B, b, Q, H, D, d, R`` may carry a leading time axis; all such axes
    must have the same length (checked against ``ys`` by :func:`validate_observations`).

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        check_values: also check the values of concrete fields (finite, symmetric, PSD).
        allow_diffuse: accept ``+inf`` on the diagonal of a concrete ``P0`` (a diffuse
            component, its row and column otherwise zero; the rest of ``P0`` PSD), for the
            entry points that support it (:data:`jaxssm._args.diffuse.DIFFUSE_SUPPORTED`).
            Otherwise such a ``P0`` is an error that says which entry points do.

    Returns:
        ``params`` with every field converted to a JAX array.

    Raises:
        TypeError: a required field is missing, a field is not floating point, or the
            dtypes differ.
        ValueError: a field has the wrong shape (``D = 0`` or ``Dy = 0`` included) or a
            non-finite entry (the message names the first bad index), or a covariance is
            asymmetric or indefinite.
    """
    if not isinstance(params, LGSSM):
        raise TypeError(f"params must be a jaxssm.LGSSM, got {type(params).__name__}")
    fields = {}
    for name in PARAMETER_NAMES:
        value = getattr(params, name)
        if value is None and name in OPTIONAL_NAMES:
            continue
        fields[name] = _as_float_array(name, value)
    A = fields["A"]
    if A.ndim not in (2, 3) or A.shape[-1] != A.shape[-2]:
        raise ValueError(
            f"A must be a square matrix [D, D], got shape {tuple(A.shape)} (or [N, D, D] when "
            "time-varying)"
        )
    D = A.shape[-1]
    if D < 1:
        raise ValueError(
            f"A must be a square matrix [D, D] with D >= 1 (a model needs a state), got shape "
            f"{tuple(A.shape)}"
        )
    H = fields["H"]
    if H.ndim not in (2, 3) or H.shape[-1] != D:
        raise ValueError(
            f"H must have shape [Dy, D] with D = {D} (from A), got shape {tuple(H.shape)} (or "
            "[N, Dy, D] when time-varying)"
        )
    Dy = H.shape[-2]
    if Dy < 1:
        raise ValueError(
            f"H must have shape [Dy, D] with Dy >= 1 (a model observes something), got shape "
            f"{tuple(H.shape)}"
        )
    Du = None
    for name in ("B", "D"):
        if name in fields:
            x = fields[name]
            if x.ndim not in (2, 3):
                rows = "D" if name == "B" else "Dy"
                raise ValueError(
                    f"{name} must have shape [{rows}, Du] (or [N, {rows}, Du]), got shape "
                    f"{tuple(x.shape)}"
                )
            if Du is None:
                Du = x.shape[-1]
            elif x.shape[-1] != Du:
                raise ValueError(
                    f"B and D must have the same number of input columns Du, got B "
                    f"{tuple(fields['B'].shape)} and D {tuple(x.shape)}"
                )
    num_steps = None
    for name, x in fields.items():
        expected, meaning = _shape_spec(name, D, Dy, Du)
        if name in TIME_VARYING_NAMES and x.ndim == BASE_NDIM[name] + 1:
            if tuple(x.shape[1:]) != expected:
                raise ValueError(
                    f"{name} must have shape {meaning} = {expected} or, time-varying, "
                    f"[N, *{meaning}], got shape {tuple(x.shape)}"
                )
            if num_steps is None:
                num_steps = (name, x.shape[0])
            elif x.shape[0] != num_steps[1]:
                raise ValueError(
                    f"time-varying fields must share one length N, got {num_steps[0]} with "
                    f"N = {num_steps[1]} and {name} with N = {x.shape[0]} (shape "
                    f"{tuple(x.shape)})"
                )
        else:
            tv = f" (or [N, *{meaning}] when time-varying)" if name in TIME_VARYING_NAMES else ""
            if tuple(x.shape) != tuple(expected):
                raise ValueError(
                    f"{name} must have shape {meaning} = {tuple(expected)}, got shape "
                    f"{tuple(x.shape)}{tv}"
                )
    dtypes = {name: np.dtype(x.dtype) for name, x in fields.items()}
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{k}={v}" for k, v in dtypes.items())
        raise TypeError(f"all LGSSM fields must share one floating dtype, got {listing}")
    if check_values:
        for name in ("m0", "A", "H", *OPTIONAL_NAMES):
            if name in fields and is_concrete(fields[name]):
                check_finite(name, np.asarray(fields[name]))
        check_p0(fields["P0"], allow_diffuse)
        for name in ("Q", "R"):
            check_psd(name, fields[name])
        _check_first_innovation(fields)
    return LGSSM(**fields)


def _is_numerically_pd(a: np.ndarray, tol: float) -> tuple[bool, float]:
    """Whether every eigenvalue exceeds ``tol`` times the largest; and the smallest one."""
    eig = np.linalg.eigvalsh(0.5 * (a + a.T))
    return bool(eig[0] > tol * max(float(np.max(np.abs(eig))), np.finfo(np.float64).tiny)), eig[0]


def _check_first_innovation(fields: dict) -> None:
    """Reject a singular ``R`` whose step-1 innovation covariance is singular too (eager only).

    ``S_1 = H (A P0 A^T + Q) H^T + R`` does not depend on the data; if it is singular the
    filter's Cholesky factor is NaN, so say so here. Every ``S_k >= H Q H^T + R``, so all
    steps are fine when that is positive definite; otherwise ``S_k`` for ``k >= 2`` depends
    on the filtered covariances and is not checked.
    """
    if not all(is_concrete(fields[n]) for n in ("P0", "A", "Q", "H", "R")):
        return

    def first(n):  # step 1's matrix of a time-varying field
        x = np.asarray(fields[n], np.float64)
        return x[0] if x.ndim == BASE_NDIM[n] + 1 else x

    R = first("R")
    tol = psd_tolerance(fields["R"].dtype, R.shape[0])
    if _is_numerically_pd(R, tol)[0]:
        return
    P0, A, Q, H = (first(n) for n in ("P0", "A", "Q", "H"))
    P0 = np.where(np.isinf(P0), 0.0, P0)  # the known part of a diffuse P0
    S1 = H @ (A @ P0 @ A.T + Q) @ H.T + R
    ok, smallest = _is_numerically_pd(S1, tol)
    if not ok:
        raise ValueError(
            "R is singular and so is the innovation covariance of step 1, "
            f"H (A P0 A^T + Q) H^T + R (smallest eigenvalue {smallest:.3g}): y_1 would be a "
            "deterministic function of the prior, which has no density; the filter needs "
            "H P^- H^T + R positive definite (give the noise-free components prior or process "
            "variance, or R a positive variance there)"
        )


def check_values(params: LGSSM, ys=None) -> None:
    """Check the *values* of ``params`` (and ``ys``), also under ``jit`` / ``vmap``.

    Every entry point checks shapes and dtypes at trace time, and values when they are
    concrete (eager calls). Under a transformation the values are unknown when the entry
    point runs; call this inside the transformed function and wrap it in
    :func:`jax.experimental.checkify.checkify` to check them on device::

        from jax.experimental import checkify

        def loglik(params, ys):
            ssm.check_values(params, ys)
            return ssm.log_likelihood(params, ys)

        err, ll = checkify.checkify(jax.jit(loglik))(params, ys)
        err.throw()  # ValueError-like JaxRuntimeError naming the argument, if any failed

    The checks are those of the eager path: every field finite; ``P0``, ``Q``, ``R``
    symmetric within ``sqrt(eps)`` of their largest entry and positive semi-definite within
    ``10 D eps`` of their largest |eigenvalue| (an ``eigvalsh`` each); ``ys`` free of
    ``inf`` (NaN marks a missing entry). Without ``checkify`` a traced call fails at trace
    time (JAX refuses an unfunctionalised check), never silently. On concrete values it is
    :func:`validate_params` and :func:`validate_observations`, raising ``ValueError``.

    Args:
        params: an :class:`~jaxssm.LGSSM`.
        ys: optional observations ``[N, Dy]`` or ``[B, N, Dy]``.
    """
    params = validate_params(params, check_values=False)
    leaves = [x for x in params if x is not None] + ([] if ys is None else [ys])
    if all(is_concrete(x) for x in leaves):
        validate_params(params)
        if ys is not None:
            validate_observations(ys, params, allow_batch=True)
        return
    from jax.experimental import checkify

    for name in PARAMETER_NAMES:
        x = getattr(params, name)
        if x is None:
            continue
        checkify.check(jnp.all(jnp.isfinite(x)), f"{name} must be finite, got non-finite entries")
    for name in _COVARIANCES:
        x = getattr(params, name)
        eps = float(jnp.finfo(x.dtype).eps)
        scale = jnp.max(jnp.abs(x))
        asym = jnp.max(jnp.abs(x - jnp.swapaxes(x, -1, -2)))
        checkify.check(
            asym <= math.sqrt(eps) * scale,
            f"{name} must be symmetric positive definite or semi-definite, got max "
            f"|{name} - {name}^T| = {{asym}} (more than sqrt(eps) times max |{name}| = {{scale}})",
            asym=asym,
            scale=scale,
        )
        eig = jnp.linalg.eigvalsh(0.5 * (x + jnp.swapaxes(x, -1, -2)))
        tol = psd_tolerance(x.dtype, x.shape[-1]) * jnp.max(jnp.abs(eig), axis=-1)
        checkify.check(
            jnp.all(eig[..., 0] >= -tol),
            f"{name} must be symmetric positive definite or semi-definite, got smallest "
            f"eigenvalue {{smallest}} (below -{{tol}}, the round-off allowance)",
            smallest=jnp.min(eig[..., 0]),
            tol=jnp.min(tol),
        )
    if ys is not None:
        ys = validate_observations(ys, params, allow_batch=True)
        checkify.check(
            jnp.all(~jnp.isinf(ys)),
            "ys must be finite or NaN (NaN marks a missing entry), got inf",
        )


def check_finite_psd(params: LGSSM) -> None:
    """Check the values of validated ``params``: finite fields, PSD ``P0``, ``Q``, ``R``.

    The checks of :func:`validate_params` but the first-innovation one: for a model an
    algorithm produced (an M-step's result), where a singular ``R`` the data call for is a
    valid answer. Skipped for traced values.

    Raises:
        ValueError: a non-finite entry or an indefinite covariance, naming the field.
    """
    for name in ("m0", "A", "H", *OPTIONAL_NAMES):
        x = getattr(params, name)
        if x is not None and is_concrete(x):
            check_finite(name, np.asarray(x))
    for name in _COVARIANCES:
        check_psd(name, getattr(params, name))


def check_positive_definite(params: LGSSM, names: tuple[str, ...], where: str) -> None:
    """Check that the covariances ``names`` of ``params`` are positive definite (eagerly).

    For entry points that need a density's log-determinant (singular covariances are valid
    elsewhere). Skipped for traced values and time-varying fields.

    Raises:
        ValueError: a covariance is numerically singular, naming it and ``where``.
    """
    for name in names:
        x = getattr(params, name)
        if not is_concrete(x) or x.ndim != 2:
            continue
        a = np.asarray(x, np.float64)
        ok, smallest = _is_numerically_pd(a, psd_tolerance(x.dtype, a.shape[0]))
        if not ok:
            raise ValueError(
                f"{name} must be positive definite for {where} (its log-determinant and "
                f"inverse enter), got a singular {name} (smallest eigenvalue {smallest:.3g})"
            )


def check_trainable_covariances(params: LGSSM, update: tuple[str, ...]) -> None:
    """Covariances that gradient-based MLE trains must be positive definite (eager check).

    :func:`~jaxssm.fit_mle` parametrises a trained covariance by its Cholesky factor
    (softplus diagonal), which a singular matrix does not have: its start would be NaN.
    Singular covariances held fixed are fine. Skipped for traced values.
    """
    for name in _COVARIANCES:
        x = getattr(params, name)
        if name not in update or not is_concrete(x):
            continue
        a = np.asarray(x, np.float64)
        ok, smallest = _is_numerically_pd(a, psd_tolerance(x.dtype, a.shape[0]))
        if not ok:
            raise ValueError(
                f"{name} must be positive definite to be trained by fit_mle (it is "
                f"parametrised by its Cholesky factor), got a singular {name} (smallest "
                f"eigenvalue {smallest:.3g}); leave {name} out of update, or start from "
                f"{name} plus a small multiple of the identity"
            )


def validate_observations(
    ys, params: LGSSM, *, name: str = "ys", allow_batch: bool = False
) -> jax.Array:
    """Check ``ys`` against validated ``params``: shape ``[N, Dy]`` (or ``[B, N, Dy]``), N >= 1.

    NaN entries are allowed: they mark missing observations. ``inf`` is an error that names
    the first bad index (checked when ``ys`` is concrete, i.e. outside ``jit``).

    Args:
        ys: observations.
        params: parameters already passed through :func:`validate_params`.
        name: the argument's name for error messages.
        allow_batch: accept a leading batch axis ``[B, N, Dy]``.

    Returns:
        ``ys`` as a JAX array.

    Raises:
        TypeError: ``ys`` is not floating point, or not in the parameters' dtype.
        ValueError: a wrong shape, ``N = 0``, an empty batch (``B = 0``), a time-varying
            field of another length, or an ``inf`` entry.
    """
    ys = _as_float_array(name, ys)
    Dy = params.H.shape[-2]
    expected = "[N, Dy] or [B, N, Dy]" if allow_batch else "[N, Dy]"
    ok_ndim = (2, 3) if allow_batch else (2,)
    if ys.ndim not in ok_ndim:
        hint = "" if allow_batch or ys.ndim != 3 else " (use jax.vmap for a batch of sequences)"
        raise ValueError(
            f"{name} must have shape {expected} with Dy = {Dy}, "
            f"got shape {tuple(ys.shape)} (ndim {ys.ndim}){hint}"
        )
    if ys.shape[-1] != Dy:
        raise ValueError(
            f"{name} must have shape {expected} with Dy = {Dy} (from H), "
            f"got shape {tuple(ys.shape)}"
        )
    if ys.shape[-2] < 1:
        raise ValueError(
            f"{name} must hold at least one step (N >= 1), got shape {tuple(ys.shape)}"
        )
    if ys.ndim == 3 and ys.shape[0] < 1:
        raise ValueError(
            f"{name} must hold at least one sequence (B >= 1 in [B, N, Dy]), got an empty "
            f"batch of shape {tuple(ys.shape)}"
        )
    check_time_varying_length(params, ys.shape[-2], f"{name}'s shape {tuple(ys.shape)}")
    if ys.dtype != params.A.dtype:
        raise TypeError(
            f"{name} must have the parameters' dtype {np.dtype(params.A.dtype)}, "
            f"got {np.dtype(ys.dtype)}"
        )
    if is_concrete(ys):
        a = np.asarray(ys)
        bad = np.isinf(a)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} must be finite or NaN (NaN marks a missing entry), got "
                f"{a[first]} at index {first}"
            )
    return ys


def check_plain_model(params: LGSSM, where: str) -> None:
    """Refuse inputs, offsets and time-varying fields in an entry point without them."""
    if not _model.is_plain(params):
        extras = list(_model.extra_names(params))
        varying = _model.time_varying_names(params)
        what = ", ".join(extras + [f"time-varying {n}" for n in varying if n not in extras])
        raise ValueError(
            f"{where} supports the model without inputs, offsets or time-varying matrices, "
            f"got {what}; use kalman_filter / rts_smoother (method='parallel' or "
            "'sequential') for this model"
        )


def check_time_invariant(params: LGSSM, where: str) -> None:
    """Refuse time-varying fields where the model is needed beyond the data's ``N`` steps."""
    varying = _model.time_varying_names(params)
    if varying:
        raise ValueError(
            f"{where} needs the model of the steps after N, but {', '.join(varying)} vary "
            "over time (known for steps 1..N only); give time-invariant matrices, with "
            "changing offsets through B, D and future_inputs"
        )


def check_time_varying_length(params: LGSSM, num_steps: int, source: str) -> None:
    """Every time-varying field must have ``num_steps`` entries (``source`` names the N)."""
    for field in _model.time_varying_names(params):
        x = getattr(params, field)
        if x.shape[0] != num_steps:
            raise ValueError(
                f"the time-varying {field} (shape {tuple(x.shape)}) must have one entry per "
                f"step: N = {num_steps} (from {source}), got {x.shape[0]}"
            )


def validate_inputs(inputs, params: LGSSM, ys: jax.Array, *, name: str = "inputs"):
    """Check ``inputs`` against validated ``params`` and ``ys``; return an array or ``None``.

    A model with ``B`` or ``D`` needs ``inputs`` ``[N, Du]`` (``[B, N, Du]`` for a batch
    ``ys [B, N, Dy]``), finite, in the parameters' dtype. ``inputs`` for a model with neither
    is an error (they would be ignored).

    Args:
        inputs: ``u_1..u_N``, or ``None``.
        params: parameters already passed through :func:`validate_params`.
        ys: the checked observations, or any value with their ``shape`` and ``ndim`` (a
            :class:`jax.ShapeDtypeStruct` for a series still to be drawn).
        name: the argument's name for error messages.

    Raises:
        TypeError: ``inputs`` is not floating point, or not in the parameters' dtype.
        ValueError: ``inputs`` missing where needed, given where not, of the wrong shape, or
            with a non-finite entry.
    """
    uses = [n for n in ("B", "D") if getattr(params, n) is not None]
    if inputs is None:
        if uses:
            Du = getattr(params, uses[0]).shape[-1]
            raise ValueError(
                f"params.{uses[0]} is set, so {name} must be given: u_1..u_N with shape "
                f"[N, Du] = {(ys.shape[-2], Du)}"
            )
        return None
    if not uses:
        raise ValueError(
            f"{name} were given but params has neither B nor D, so they would be ignored; "
            "set params.B (state) and/or params.D (observation), e.g. to zeros [D, Du] to "
            "fit them with update=('B', ...)"
        )
    inputs = _as_float_array(name, inputs)
    Du = getattr(params, uses[0]).shape[-1]
    expected = tuple(ys.shape[:-1]) + (Du,)
    meaning = "[B, N, Du]" if ys.ndim == 3 else "[N, Du]"
    if tuple(inputs.shape) != expected:
        raise ValueError(
            f"{name} must have shape {meaning} = {expected} (N from ys {tuple(ys.shape)}, Du "
            f"from params.{uses[0]}), got shape {tuple(inputs.shape)}"
        )
    if inputs.dtype != params.A.dtype:
        raise TypeError(
            f"{name} must have the parameters' dtype {np.dtype(params.A.dtype)}, "
            f"got {np.dtype(inputs.dtype)}"
        )
    if is_concrete(inputs):
        a = np.asarray(inputs)
        if np.isnan(a).any():
            first = tuple(int(i) for i in np.argwhere(np.isnan(a))[0])
            raise ValueError(
                f"{name} must be finite, got nan at index {first}: NaN marks a missing entry "
                f"in ys only; to pad a shorter sequence of a ragged batch, put NaN rows at the "
                f"end of its ys and zeros (any finite value) in its {name}"
            )
        check_finite(name, a)
    return inputs
