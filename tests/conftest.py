"""Test-wide settings (tests may change JAX's configuration; the library never does).

- float64 on, so that the references can be held to rtol 1e-10;
- strict dtype promotion and rank promotion "raise" (as equinox's tests run), so that a
  silent float32/float64 mix or an accidental broadcast inside the library fails a test.
"""

import os
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
# The CLI's persistent compilation cache stays off in the tests that run it in-process (it
# would otherwise point every later test of the process at a cache folder on disk).
os.environ.setdefault("JAXSSM_COMPILATION_CACHE", "off")

# Let tests import the numpy references as `reference`.
sys.path.insert(0, str(Path(__file__).parent))
