"""The per-iteration host callback of :func:`~jaxssm.fit_em` and :func:`~jaxssm.fit_mle`.

A compiled loop calls ``guard(i, log_likelihood)`` through :func:`jax.debug.callback` at
every iteration: it prints progress and calls the user's ``callback``. An exception there
stops the compiled loop with a runtime error that carries only the exception's text; the
guard keeps the exception object itself, so that :func:`run_with_callback` can raise a
:class:`CallbackError` chained to it. That record belongs to the guard: the module holds no
state.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import jax

from jaxssm._args.checks import check_callback

__all__ = ["CallbackError", "GuardedCallback", "guard_callback", "run_with_callback"]


class CallbackError(RuntimeError):
    """A user ``callback`` of :func:`~jaxssm.fit_em` or :func:`~jaxssm.fit_mle` raised.

    The message names the callback and the iteration; the original exception is chained
    (``__cause__``).
    """


class _Record:
    """The first failure of a guarded callback in the current run: ``(message, exception)``."""

    __slots__ = ("failure",)

    def __init__(self):
        self.failure: tuple[str, BaseException] | None = None


def _callback_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _print_progress(label: str, iteration, log_likelihood, num_iters: int) -> None:
    print(
        f"{label} {int(iteration) + 1}/{num_iters}: log-likelihood {float(log_likelihood):.6f}",
        file=sys.stderr,
        flush=True,
    )


class GuardedCallback:
    """The host callback of a compiled loop: progress printing and the user's callback.

    ``GuardedCallback(label, num_iters, user, progress)(i, ll)`` prints ``label i+1/num_iters:
    log-likelihood ll`` to stderr when ``progress``, then calls ``user(i, ll)`` if given. An
    exception from ``user`` is recorded in the guard and re-raised as a
    :class:`CallbackError` naming the callback and the iteration.

    Guards are equal (and hash equal) when their ``(label, num_iters, user, progress)`` are,
    so the jit cache gives equal guards one compiled loop; that loop calls the guard it was
    traced with. Equal guards therefore share one record: comparing two equal guards (as the
    jit cache compares the guard of a call with the one its loop holds) makes them hold the
    same record, and the caller of either reads the failure of the loop that ran.
    """

    def __init__(self, label: str, num_iters: int, user: Callable | None, progress: bool):
        self.key = (label, num_iters, user, bool(progress))
        self._record = _Record()

    def __call__(self, i, ll) -> None:
        label, num_iters, user, progress = self.key
        if progress:
            _print_progress(label, i, ll, num_iters)
        if user is None:
            return
        try:
            user(i, ll)
        except Exception as error:
            message = (
                f"callback {_callback_name(user)} raised {type(error).__name__} at "
                f"{label} {int(i) + 1}/{num_iters}: {error}"
            )
            self._record.failure = (message, error)
            raise CallbackError(message) from error

    def __eq__(self, other) -> bool:
        if not isinstance(other, GuardedCallback) or self.key != other.key:
            return False
        other._record = self._record
        return True

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def failure(self) -> tuple[str, BaseException] | None:
        """``(message, exception)`` of the callback's failure in this run, or ``None``."""
        return self._record.failure

    def clear(self) -> None:
        """Forget a recorded failure (before and after each run)."""
        self._record.failure = None


def guard_callback(
    label: str, num_iters: int, callback: Callable | None, progress: bool
) -> GuardedCallback | None:
    """Check ``callback`` and wrap it with the progress printer; ``None`` when neither is asked.

    Args:
        label: the name of one iteration in the messages (``"EM iteration"``).
        num_iters: the loop's length, for ``i+1/num_iters``.
        callback: the user's ``callback(i, log_likelihood)``, or ``None``.
        progress: print one line per iteration to stderr.

    Raises:
        TypeError: ``callback`` is neither ``None`` nor callable.
    """
    callback = check_callback(callback)
    if callback is None and not progress:
        return None
    return GuardedCallback(label, num_iters, callback, progress)


def run_with_callback(callback: GuardedCallback | None, run: Callable):
    """Call ``run()`` and wait for its results; a raising user callback becomes a CallbackError.

    The runtime error that stops the compiled loop is replaced by a :class:`CallbackError`
    chained to the user's exception, when the guard recorded one whose message the error
    carries. Under an outer transformation (traced results) nothing is awaited; the compiled
    loop then stops later with a runtime error that holds the :class:`CallbackError`'s text.

    Raises:
        CallbackError: ``callback``'s user function raised during ``run()``.
    """
    if callback is None:
        return run()
    callback.clear()
    try:
        out = run()
        leaves = jax.tree_util.tree_leaves(out)
        if not any(isinstance(x, jax.core.Tracer) for x in leaves):
            jax.block_until_ready(out)
    except Exception as error:
        failure = callback.failure
        if failure is None or failure[0] not in str(error):
            raise
        message, original = failure
        raise CallbackError(message) from original
    finally:
        callback.clear()
    return out
