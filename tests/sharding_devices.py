"""Run by tests/test_sharding.py in a subprocess on 4 forced host devices; prints one JSON line.

XLA_FLAGS=--xla_force_host_platform_device_count=4 must be set by the caller (before jax
starts). Everything is compared against the same computation on one device. By default:
``method="parallel"`` on a time-sharded series (routed to the chunked schedule) and the
partitioned E-step of a sharded batch. With the argument ``full`` (the slow test) also the
chunked functions called directly on an explicit and an automatic mesh axis, the sharded
log-likelihood, and EM and MLE fits on the sharded batch (slower to compile).
"""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).parent))

from helpers import to_params  # noqa: E402
from reference import random_model, simulate  # noqa: E402

import jaxssm as ssm  # noqa: E402
from jaxssm._schedules import chunked as _chunked  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def tree_rel(a, b):
    return max(
        rel(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


report = {"devices": jax.device_count(), "time_sharded": {}, "batch": {}}
rng = np.random.default_rng(0)

# --- one long series over a time axis. N = 23 over 4 devices (chunks of 6, one padded row)
# for the chunked functions; a time-sharded jax.Array needs N divisible by the devices, so the
# routed method="parallel" runs on N = 24 (the same series and one more row).
model = random_model(rng, 3, 2, mean_scale=3.0)
params = to_params(model)
_, ys24 = simulate(rng, model, 24)
gappy24 = np.array(ys24)
gappy24[rng.uniform(size=gappy24.shape) < 0.3] = np.nan
gappy24[0] = gappy24[11] = gappy24[22] = gappy24[23] = np.nan
ys, gappy = ys24[:23], gappy24[:23]
auto = ssm.sharding.device_mesh("time")
explicit = jax.make_mesh((4,), ("time",))  # jax 0.10's default: explicit axes
full = "full" in sys.argv[1:]

# method="parallel" on a time-sharded ys runs the chunked schedule (counted through a
# wrapper of the two chunked functions the dispatcher's programs call when they are traced).
calls = []
for name, public in (("filter", "chunked_filter"), ("smooth", "chunked_smoother")):
    real = getattr(_chunked, name)

    def spy(*args, _real=real, _name=public, **kwargs):
        calls.append(_name)
        return _real(*args, **kwargs)

    setattr(_chunked, name, spy)
time_rows = jax.sharding.NamedSharding(auto, jax.sharding.PartitionSpec("time"))
placed = jax.device_put(gappy24, time_rows)
seq_f = ssm.kalman_filter(params, gappy24, steady_state=False)
seq_s = ssm.rts_smoother(params, gappy24, steady_state=False)
key = "gaps24/auto/routed"
report["time_sharded"][key + "/filter"] = tree_rel(
    ssm.kalman_filter(params, placed, method="parallel"), seq_f
)
report["time_sharded"][key + "/smoother"] = tree_rel(
    ssm.rts_smoother(params, placed, method="parallel"), seq_s
)
report["time_sharded"][key + "/log_likelihood"] = rel(
    ssm.log_likelihood(params, placed, method="parallel"), seq_f.log_likelihood
)
report["routed_calls"] = list(calls)

# The chunked functions called directly at N = 23: by default the smoother on the automatic
# axis with sequential chunks; the slow run adds the filter and an explicit mesh axis with
# local associative scans on the observed series.
cases = [("gaps", gappy, "auto", auto, "sequential")]
cases += [("observed", ys, "explicit", explicit, "associative")] if full else []
for label, data, mesh_name, mesh, within in cases:
    key = f"{label}/{mesh_name}/{within}"
    s = ssm.sharding.chunked_smoother(params, data, mesh=mesh, within=within)
    report["time_sharded"][key + "/smoother"] = tree_rel(
        s, ssm.rts_smoother(params, data, steady_state=False)
    )
    if full:
        f = ssm.sharding.chunked_filter(params, data, mesh=mesh, within=within)
        report["time_sharded"][key + "/filter"] = tree_rel(
            f, ssm.kalman_filter(params, data, steady_state=False)
        )


# --- a batch of B = 8 sequences over a batch axis
B, n = 8, 40
batch = np.stack([simulate(rng, model, n)[1] for _ in range(B)])
mesh = ssm.sharding.device_mesh("batch")
sharded = ssm.sharding.shard_batch(batch, mesh)
try:
    ssm.sharding.shard_batch(batch[:6], mesh)
    report["batch"]["rejects_6_of_4"] = 1.0
except ValueError:
    report["batch"]["rejects_6_of_4"] = 0.0
report["batch"]["placed"] = (
    0.0
    if len(sharded.addressable_shards) == 4
    and all(s.data.shape == (2, n, 2) for s in sharded.addressable_shards)
    else 1.0
)
one = jnp.asarray(batch)
# The partitioned E-step, compiled once: inspected below and run here.
compiled = jax.jit(ssm.e_step).lower(params, sharded).compile()
report["batch"]["e_step"] = tree_rel(compiled(params, sharded), ssm.e_step(params, one))
if full:
    report["batch"]["log_likelihood"] = rel(
        ssm.log_likelihood(params, sharded), ssm.log_likelihood(params, one)
    )
    start = params._replace(A=0.5 * params.A, Q=2.0 * params.Q)
    em_sharded, info_sharded = ssm.fit_em(start, sharded, num_iters=3)
    em_one, info_one = ssm.fit_em(start, one, num_iters=3)
    report["batch"]["fit_em_params"] = tree_rel(em_sharded, em_one)
    report["batch"]["fit_em_lls"] = rel(info_sharded.log_likelihoods, info_one.log_likelihoods)
    opt = optax.adam(1e-2)
    mle_sharded, minfo_sharded = ssm.fit_mle(start, sharded, optimizer=opt, num_iters=3)
    mle_one, minfo_one = ssm.fit_mle(start, one, optimizer=opt, num_iters=3)
    report["batch"]["fit_mle_params"] = tree_rel(mle_sharded, mle_one)
    report["batch"]["fit_mle_lls"] = rel(minfo_sharded.log_likelihoods, minfo_one.log_likelihoods)


hlo = compiled.as_text()
report["e_step_hlo"] = {
    "all_reduce": hlo.count("all-reduce("),
    "all_gather": hlo.count("all-gather("),
    "local_batch_shape": f"f64[2,{n},2]" in hlo,
    "global_batch_shape": f"f64[{B},{n},2]" in hlo,
}
print(json.dumps(report))
