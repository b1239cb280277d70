"""Test configuration: 8 host devices (set before JAX loads), float64 available, strict rank and dtype promotion."""

import gc
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program after each test module. Each XLA CPU executable maps its own code pages: a
    test worker that kept every module's programs reached Linux's vm.max_map_count (65 530 mappings; 62 660 seen
    in a worker at 90 % of the suite) and then crashed inside XLA's compiler (segfault or abort)."""
    yield
    jax.clear_caches()
    gc.collect()
