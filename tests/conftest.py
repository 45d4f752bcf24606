"""Test-wide settings: float64 on (tests may; the library never touches JAX config)."""

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

# Let tests import the numpy references as `reference`.
sys.path.insert(0, str(Path(__file__).parent))
