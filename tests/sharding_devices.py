"""Run by tests/test_sharding.py in a subprocess on 4 forced host devices; prints one JSON line.

XLA_FLAGS=--xla_force_host_platform_device_count=4 must be set by the caller (before jax
starts). Everything is compared against the same computation on one device. With the
argument ``full`` it also runs a second time-sharded case and fits EM and MLE on the
sharded batch (slower to compile).
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

# --- one long series over a time axis (N = 23 over 4 devices: chunks of 6, one padded row)
model = random_model(rng, 3, 2, mean_scale=3.0)
params = to_params(model)
_, ys = simulate(rng, model, 23)
gappy = np.array(ys)
gappy[rng.uniform(size=gappy.shape) < 0.3] = np.nan
gappy[0] = gappy[11] = gappy[-1] = np.nan
auto = ssm.sharding.device_mesh("time")
explicit = jax.make_mesh((4,), ("time",))  # jax 0.10's default: explicit axes
cases = [("gaps", gappy, "auto", auto, "sequential")]
if "full" in sys.argv[1:]:
    cases.append(("observed", ys, "explicit", explicit, "associative"))
for label, data, mesh_name, mesh, within in cases:
    key = f"{label}/{mesh_name}/{within}"
    seq_f = ssm.kalman_filter(params, data, steady_state=False)
    seq_s = ssm.rts_smoother(params, data, steady_state=False)
    f = ssm.sharding.chunked_filter(params, data, mesh=mesh, within=within)
    s = ssm.sharding.chunked_smoother(params, data, mesh=mesh, within=within)
    report["time_sharded"][key + "/filter"] = tree_rel(f, seq_f)
    report["time_sharded"][key + "/smoother"] = tree_rel(s, seq_s)


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
report["batch"]["e_step"] = tree_rel(ssm.e_step(params, sharded), ssm.e_step(params, one))
report["batch"]["log_likelihood"] = rel(
    ssm.log_likelihood(params, sharded), ssm.log_likelihood(params, one)
)
if "full" in sys.argv[1:]:
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


hlo = jax.jit(ssm.e_step).lower(params, sharded).compile().as_text()
report["e_step_hlo"] = {
    "all_reduce": hlo.count("all-reduce("),
    "all_gather": hlo.count("all-gather("),
    "local_batch_shape": f"f64[2,{n},2]" in hlo,
    "global_batch_shape": f"f64[{B},{n},2]" in hlo,
}
print(json.dumps(report))
