"""Sharded batches and the chunked (time-sharded) schedule (jaxssm.sharding, _schedules.chunked).

References: the dense joint Gaussian of a short series (tests/reference.py; plain numpy,
gaps included) and the sequential schedule. Tolerances: rtol 1e-10 in float64 (with
helpers.assert_close's absolute floor), as for the other schedules: every combine is the
exact associative operator, so chunking changes only the order of round-off.

Several devices: a test runs tests/sharding_devices.py in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag must be set before jax
starts, so it cannot run in this process) and checks what it reports.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, to_params
from jax.sharding import NamedSharding, PartitionSpec
from reference import dense_posterior, dense_posterior_missing, random_model, simulate

import jaxssm as ssm

RTOL = 1e-10
N = 23  # not a multiple of any chunk count below but 1 and 23


def _series(seed, D=3, Dy=2, n=N, gaps=False):
    rng = np.random.default_rng(seed)
    model = random_model(rng, D, Dy, mean_scale=3.0)
    _, ys = simulate(rng, model, n)
    if gaps:
        ys = np.array(ys)
        ys[rng.uniform(size=ys.shape) < 0.3] = np.nan
        ys[0] = ys[n // 2] = ys[-1] = np.nan
    return model, ys


def _check(filt, smooth, post):
    assert filt.means.shape == post.filter_means.shape
    assert filt.pred_covs.shape == post.pred_covs.shape
    assert smooth.gains.shape == (post.smooth_cross.shape[0],) + post.smooth_cross.shape[1:]
    assert_close(filt.means, post.filter_means, RTOL, err_msg="filter means")
    assert_close(filt.covs, post.filter_covs, RTOL, err_msg="filter covs")
    assert_close(filt.pred_means, post.pred_means, RTOL, err_msg="predicted means")
    assert_close(filt.pred_covs, post.pred_covs, RTOL, err_msg="predicted covs")
    assert_close(smooth.means, post.smooth_means, RTOL, err_msg="smoothed means")
    assert_close(smooth.covs, post.smooth_covs, RTOL, err_msg="smoothed covs")
    cross = jnp.einsum("kij,klj->kil", smooth.covs[1:], smooth.gains)
    assert_close(cross, post.smooth_cross, RTOL, err_msg="lag-one cross-covariances")
    np.testing.assert_allclose(float(filt.log_likelihood), post.log_likelihood, rtol=RTOL)
    np.testing.assert_allclose(float(smooth.log_likelihood), post.log_likelihood, rtol=RTOL)


# 7 chunks of 4 steps: the last chunk holds 3 steps and one padded row; 12 chunks of 2: the
# last is all padding (N = 23 ends in chunk 11 at its first row).
@pytest.mark.slow
@pytest.mark.parametrize("num_chunks", [1, 4, 7, 12])
@pytest.mark.parametrize("within", ["sequential", "associative"])
def test_one_device_chunks_match_dense_oracle(num_chunks, within):
    model, ys = _series(0)
    post = dense_posterior(model, ys)
    params = to_params(model)
    opts = dict(num_chunks=num_chunks, within=within)
    filt = ssm.sharding.chunked_filter(params, ys, **opts)
    smooth = ssm.sharding.chunked_smoother(params, ys, **opts)
    _check(filt, smooth, post)


@pytest.mark.parametrize(
    "within", ["sequential", pytest.param("associative", marks=pytest.mark.slow)]
)
def test_one_device_chunks_with_missing_entries(within):
    model, ys = _series(1, D=2, Dy=3, gaps=True)
    ref = dense_posterior_missing(model, ys)
    params = to_params(model)
    opts = dict(num_chunks=5, within=within)
    filt = ssm.sharding.chunked_filter(params, ys, **opts)
    smooth = ssm.sharding.chunked_smoother(params, ys, **opts)
    _check(filt, smooth, ref.post)


@pytest.mark.slow
def test_chunks_equal_sequential_on_a_longer_series():
    # N = 301 over 8 chunks of 38 (3 padded rows), a large initial mean: the prior term and the
    # combine across chunks are really exercised.
    rng = np.random.default_rng(5)
    model = random_model(rng, 4, 3, mean_scale=100.0)
    _, ys = simulate(rng, model, 301)
    params = to_params(model)
    seq_f = ssm.kalman_filter(params, ys, steady_state=False)
    seq_s = ssm.rts_smoother(params, ys, steady_state=False)
    filt = ssm.sharding.chunked_filter(params, ys, num_chunks=8)
    smooth = ssm.sharding.chunked_smoother(params, ys, num_chunks=8)
    assert np.abs(seq_f.means[0]).max() > 50
    for name in ("means", "covs", "pred_means", "pred_covs", "log_likelihood"):
        assert_close(getattr(filt, name), getattr(seq_f, name), RTOL, err_msg=name)
    for name in ("means", "covs", "gains", "log_likelihood"):
        assert_close(getattr(smooth, name), getattr(seq_s, name), RTOL, err_msg=name)


def test_arguments_are_checked():
    model, ys = _series(2)
    params = to_params(model)
    with pytest.raises(ValueError, match="num_chunks"):
        ssm.sharding.chunked_filter(params, ys)
    with pytest.raises(ValueError, match="num_chunks"):
        ssm.sharding.chunked_filter(params, ys, num_chunks=0)
    with pytest.raises(ValueError, match="within"):
        ssm.sharding.chunked_smoother(params, ys, num_chunks=2, within="parallel")
    with pytest.raises(ValueError, match="ys must have shape"):
        ssm.sharding.chunked_filter(params, ys[:, :1], num_chunks=2)
    mesh = ssm.sharding.device_mesh("batch")
    with pytest.raises(ValueError, match="axis_name"):
        ssm.sharding.chunked_filter(params, ys, mesh=mesh, axis_name="time")
    with pytest.raises(ValueError, match=r"\[B, N, Dy\]"):
        ssm.sharding.shard_batch(ys, mesh)


def test_time_sharding_needs_a_concrete_array_split_over_time():
    # On one device (this process) no array is time-sharded: plain and numpy arrays, a
    # one-device mesh, a tracer under jit. The routed case runs in tests/sharding_devices.py.
    model, ys = _series(3)
    y = jnp.asarray(ys)
    assert ssm.sharding.time_sharding(ys) is None
    assert ssm.sharding.time_sharding(y) is None
    mesh = ssm.sharding.device_mesh("time")
    placed = jax.device_put(y, NamedSharding(mesh, PartitionSpec("time")))
    assert ssm.sharding.time_sharding(placed) is None  # one device on the axis
    seen = []
    jax.jit(lambda x: seen.append(ssm.sharding.time_sharding(x)) or x)(placed)
    assert seen == [None]


def _run_on_four_devices(*args):
    script = Path(__file__).with_name("sharding_devices.py")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=280
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    return report


ROUTED = ["chunked_filter", "chunked_smoother", "chunked_filter"]


@pytest.mark.timeout(300)
def test_on_four_host_devices():
    report = _run_on_four_devices()
    # method="parallel" on a time-sharded ys (N = 24, gaps, an automatic mesh axis) ran the
    # chunked schedule (kalman_filter, rts_smoother, log_likelihood) and equals the sequential
    # filter and smoother; chunked_smoother with the mesh on N = 23 (a padded last chunk) too.
    assert report["routed_calls"] == ROUTED
    assert len(report["time_sharded"]) == 4
    for name, err in report["time_sharded"].items():
        assert err < RTOL, (name, err)
    # Sharded batch: placed 2 sequences per device, a batch of 6 rejected, the E-step equal to
    # the one-device one to round-off.
    assert set(report["batch"]) == {"rejects_6_of_4", "placed", "e_step"}
    for name, err in report["batch"].items():
        assert err < RTOL, (name, err)
    # The compiled E-step is partitioned: each device holds [B / 4, N, Dy] of the batch, the
    # pooled statistics are all-reduced, and no [B, N, Dy] array (a gathered batch) appears.
    hlo = report["e_step_hlo"]
    assert hlo["all_reduce"] > 0 and hlo["all_gather"] == 0
    assert hlo["local_batch_shape"] and not hlo["global_batch_shape"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_em_and_mle_on_a_sharded_batch_and_more_time_sharding():
    report = _run_on_four_devices("full")
    assert report["routed_calls"] == ROUTED
    # Also the chunked filter on N = 23, and observed data on an explicit mesh axis with local
    # associative scans.
    assert len(report["time_sharded"]) == 7
    for name, err in report["time_sharded"].items():
        assert err < RTOL, (name, err)
    for name in ("log_likelihood", "fit_em_params", "fit_em_lls", "fit_mle_params", "fit_mle_lls"):
        assert report["batch"][name] < RTOL, (name, report["batch"][name])
