# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # EM for a linear-Gaussian state-space model on the SARCOS robot arm, with jaxssm
#
# The exercise this library grew from, end to end: the SARCOS series (7 joints x position,
# velocity, acceleration = 21 dimensions), a Gauss-Markov prior, Kalman filtering and RTS
# smoothing with the sequential and the time-parallel schedule, the white-noise start, EM for
# the transition model `(A, Q)`, and EM against gradient-based maximum likelihood.
#
# The bundled data is the SARCOS **test split** (4,449 steps); the exercise used the 44,484-step
# train split, which is not redistributed (see `jaxssm.datasets.load_sarcos("train")`).
#
# Set `QUICK=1` in the environment to shorten the fits (CI runs the notebook that way).

# %%
import functools
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxssm as ssm
from jaxssm import plotting

jax.config.update("jax_enable_x64", True)  # a notebook may; the library never does
QUICK = os.environ.get("QUICK", "0") == "1"
EM_ITERS = 20 if QUICK else 100
print("jax", jax.__version__, "| jaxssm", ssm.__version__, "| device", jax.devices()[0])

# %% [markdown]
# ## 1. The data
#
# Columns 0-6 are joint positions, 7-13 velocities, 14-20 accelerations. We follow the
# exercise: the first row is the initial mean `m0`, the remaining rows are `y_1..y_N`, so
# smoother row `k` lines up with data row `k`.

# %%
data = ssm.datasets.load_sarcos("test")
Y = data.inputs
print(data.name, Y.shape)
window = slice(1000, 1050)

fig, axs = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
plotting.plot_data(axs, Y[window], t=np.arange(window.start, window.stop))
for ax, label in zip(axs, ["position", "velocity", "acceleration"], strict=True):
    ax.set_ylabel(label)
axs[-1].set_xlabel("step")
plt.show()

# %% [markdown]
# ## 2. A Gauss-Markov prior
#
# The exercise's "mysterious" transition model is a Gauss-Markov prior with two derivatives
# per joint. `jaxssm.priors.matern(2, dt, ...)` builds a Matern-5/2 process in state-space form
# and discretises it exactly; with `dim=7` the state is ordered like the data (all positions,
# then all velocities, then all accelerations): `A = kron(A_1, I_7)`.

# %%
setup = ssm.datasets.exercise_setup(Y, jax.random.PRNGKey(0), dtype=jnp.float64)
ys = setup.ys
A_prior, Q_prior = ssm.priors.matern(2, 1.0, lengthscale=10.0, variance=1.0, dim=7)
prior_model = setup.params._replace(A=A_prior, Q=Q_prior)
print("A:", A_prior.shape, "log p(y) under the Matern prior:", ssm.log_likelihood(prior_model, ys))

fig, axs = plt.subplots(1, 2, figsize=(8, 4))
axs[0].imshow(A_prior)
axs[0].set_title("A (Matern-5/2, blocked order)")
axs[1].imshow(Q_prior)
axs[1].set_title("Q")
plt.show()

# %% [markdown]
# ## 3. Filtering and smoothing, sequential and parallel
#
# `rts_smoother` is a `lax.scan` forwards and backwards; `rts_smoother(..., method="parallel")`
# computes the same posterior with `lax.associative_scan` (Sarkka and Garcia-Fernandez, 2021),
# which has logarithmic span on a GPU. On a 2-core CPU the parallel schedule is slower and takes
# longer to compile, so here it runs on the first 500 steps; both agree to round-off. (On series
# of 2,048 steps or more the sequential functions take a steady-state fast path once the
# covariances have converged; `steady_state=False` asks for the full recursion.)

# %%
n_cmp = 500
seq = ssm.rts_smoother(prior_model, ys[:n_cmp])
par = ssm.rts_smoother(prior_model, ys[:n_cmp], method="parallel")
rel = lambda a, b: float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))  # noqa: E731
print("max relative difference, smoothed means:", rel(par.means, seq.means))
print("max relative difference, smoothed covs: ", rel(par.covs, seq.covs))
print("log-likelihoods:", float(seq.log_likelihood), float(par.log_likelihood))

# %% [markdown]
# ## 4. The white-noise start
#
# Now pretend we have no model: `A = 0` and `Q = 0.01 diag(u)` with `u` uniform. Every step is
# independent noise around zero, and the smoothed estimate is poor.

# %%
start = setup.params
smoothed_start = ssm.rts_smoother(start, ys)
print("log p(y) at the white-noise start:", float(smoothed_start.log_likelihood))
fig = plotting.plot_fit(Y, smoothed_start, window, title="white-noise start")
plt.show()

# %% [markdown]
# ## 5. EM for (A, Q)
#
# Each iteration runs the RTS smoother (E-step: the expected sufficient statistics `Sigma`,
# `Phi`, `B`, `C`, `D` of the exercise) and the closed-form M-step `A = C Phi^-1`,
# `Q = Sigma - C A^T - A C^T + A Phi A^T`. The whole loop is one compiled `lax.scan`.
# `fit_em` returns the fitted parameters and an `EMInfo`: `log_likelihoods[i]` is
# `log p(y | theta_i)`, `log_likelihood` that of the returned parameters, and `status` says why
# the loop stopped (`EMStatus.MAX_ITERS`: it ran all iterations). The trace never decreases.

# %%
t0 = time.perf_counter()
fitted, info = ssm.fit_em(start, ys, num_iters=EM_ITERS, update=("A", "Q"))
lls = np.append(info.log_likelihoods, info.log_likelihood)  # theta_0 .. theta_EM_ITERS
print(f"{EM_ITERS} EM iterations in {time.perf_counter() - t0:.1f} s (including compilation)")
print("log p(y): start", lls[0], "-> fitted", lls[-1])
print("status:", ssm.EMStatus(int(info.status)).name)
print("monotone:", bool(np.all(np.diff(lls) >= -1e-9 * np.abs(lls[:-1]))))

plt.figure(figsize=(6, 3.5))
plt.plot(np.arange(len(lls)), lls)
plt.yscale("symlog")
plt.xlabel("EM iteration")
plt.ylabel("log p(y | theta_i)")
plt.show()

# %% [markdown]
# ## 6. The learned transition model
#
# EM learns dense matrices; the block structure of the prior (positions, velocities,
# accelerations) shows through.

# %%
fig, axs = plt.subplots(1, 2, figsize=(8, 4))
axs[0].imshow(np.asarray(fitted.A))
axs[0].set_title("learned A")
axs[1].imshow(np.asarray(fitted.Q))
axs[1].set_title("learned Q")
plt.show()

# %% [markdown]
# ## 7. The fit after EM
#
# The one-step-ahead prediction of positions (the filter's predicted mean `H m_k^-` against
# `y_k`) improves by orders of magnitude.

# %%
smoothed_fit = ssm.rts_smoother(fitted, ys)
fig = plotting.plot_fit(Y, smoothed_fit, window, title=f"after {EM_ITERS} EM iterations")
plt.show()


def position_rmse(params):
    filt = ssm.kalman_filter(params, ys)
    pred = filt.pred_means @ params.H.T
    return float(jnp.sqrt(jnp.mean((pred[:, :7] - ys[:, :7]) ** 2)))


print(
    "one-step-ahead RMSE of positions: start",
    position_rmse(start),
    "-> fitted",
    position_rmse(fitted),
)

# %% [markdown]
# ## 8. EM against gradient-based maximum likelihood
#
# `fit_mle` maximises the same `log p(y)` with optax, differentiating through the same Kalman
# filter, over an unconstrained parameterisation (Cholesky factors for covariances). From the
# same start, with the same number of iterations; its `MLEInfo` holds the same kind of trace:

# %%
results = {"EM": lls}
for name, opt in [("Adam (lr 3e-2)", optax.adam(3e-2)), ("L-BFGS", optax.lbfgs())]:
    t0 = time.perf_counter()
    _, mle = ssm.fit_mle(start, ys, optimizer=opt, num_iters=EM_ITERS, update=("A", "Q"))
    results[name] = np.append(mle.log_likelihoods, mle.log_likelihood)
    print(
        f"{name}: final log p(y) {float(mle.log_likelihood):.1f} ({time.perf_counter() - t0:.1f} s)"
    )

plt.figure(figsize=(6, 3.5))
for name, trace in results.items():
    plt.plot(np.arange(len(trace)), trace, label=name)
plt.yscale("symlog")
plt.xlabel("iteration")
plt.ylabel("log p(y)")
plt.legend()
plt.show()

# %% [markdown]
# ## 9. Timing
#
# Timings are measured by the scripts in `benchmarks/` (medians after compilation, the device,
# dtype, N and jax version recorded with each number); see `benchmarks/README.md` and the
# tables in `benchmarks/results/`. A quick local measurement of one filter + smoother pass on
# the data above, sequential and parallel:


# %%
def median_time(fn, *args, repeats=3):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


t_seq = median_time(ssm.rts_smoother, fitted, ys[:n_cmp])
t_par = median_time(functools.partial(ssm.rts_smoother, method="parallel"), fitted, ys[:n_cmp])
print(
    f"N = {n_cmp}, D = 21, float64, {jax.devices()[0].platform}: sequential {t_seq * 1e3:.1f} ms,"
    f" parallel {t_par * 1e3:.1f} ms (ratio {t_par / t_seq:.2f})"
)

# %% [markdown]
# ## 10. Posterior draws, forecasts and residuals
#
# `posterior_sample` draws whole state paths from `p(x_0..x_N | y)` (forward filtering, backward
# sampling; `method="parallel"` gives the same draw for a key); their spread matches the
# smoother's bands. `forecast` gives the exact moments beyond the data: here from the first
# 1,000 steps, against the 50 steps that follow, with a fan of `forecast_sample` paths.
# `filter_diagnostics` gives each step's standardized innovation `L_k^{-1} (y_k - H m_k^-)`:
# independent standard normal if the model were right, so their variance, autocorrelation and
# large values show where the fitted model falls short.

# %%
keys = jax.random.split(jax.random.PRNGKey(0), 10)
draws = jax.vmap(ssm.posterior_sample, in_axes=(0, None, None))(keys, fitted, ys)
t = np.arange(window.start, window.stop)
fig, axs = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
axs[0].plot(t, np.asarray(draws[:, window, 7]).T, color="C0", alpha=0.4, linewidth=0.8)
sd = np.sqrt(np.asarray(smoothed_fit.covs[window, 7, 7]))
axs[0].fill_between(
    t,
    smoothed_fit.means[window, 7] - 2 * sd,
    smoothed_fit.means[window, 7] + 2 * sd,
    color="C1",
    alpha=0.3,
)
axs[0].set_title("joint 0 velocity: 10 posterior draws, smoother +/- 2 sd")

n_past, horizon = 1000, 50
fc = ssm.forecast(fitted, ys[:n_past], horizon)
paths = jax.vmap(ssm.forecast_sample, in_axes=(0, None, None, None))(
    jax.random.split(jax.random.PRNGKey(1), 20), fitted, ys[:n_past], horizon
)[1]
tf = np.arange(n_past + 1, n_past + 1 + horizon)
sd = np.sqrt(np.asarray(fc.obs_covs[:, 0, 0]))
axs[1].plot(tf, np.asarray(paths[:, :, 0]).T, color="C0", alpha=0.3, linewidth=0.8)
axs[1].fill_between(
    tf, fc.obs_means[:, 0] - 2 * sd, fc.obs_means[:, 0] + 2 * sd, color="C1", alpha=0.3
)
axs[1].plot(
    np.arange(n_past - 20, n_past + 1 + horizon),
    Y[n_past - 20 : n_past + 1 + horizon, 0],
    "kx",
    markersize=3,
)
axs[1].set_title(f"joint 0 position: {horizon}-step forecast from step {n_past}")

diag = ssm.filter_diagnostics(fitted, ys, ssm.kalman_filter(fitted, ys))
e = np.asarray(diag.standardized_innovations)
print("sum of per-step log-likelihoods", float(diag.log_likelihoods.sum()), "= log p(y)", lls[-1])
print("standardized innovations: variance per dimension", np.round(e.var(0), 2))
print("lag-one autocorrelation per dimension", np.round(np.mean(e[1:] * e[:-1], 0) / e.var(0), 2))
print("steps with some |e| > 5:", int(np.sum(np.any(np.abs(e) > 5, axis=1))), "of", len(e))
grid = np.linspace(-4, 4, 200)
axs[2].hist(e.ravel(), bins=np.linspace(-4, 4, 81), density=True, alpha=0.6)
axs[2].plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), "k")
axs[2].set_title("standardized innovations vs N(0, 1)")
plt.show()
