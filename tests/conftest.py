"""Every test runs offline: no model hub is ever contacted. Shared fixtures live here."""

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on the shared 2-core machines: one torch thread avoids OpenMP
    oversubscription (measured 10-100x faster). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- hypothesis profiles (the fuzz suite: tests/test_fuzz_*.py) ------------------------------
# "ci" (the default) keeps each fuzz target to a few hundred examples, derandomized so a run
# is reproducible; a long local hunt: pytest tests/test_fuzz_media.py --hypothesis-profile=long
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the test extra installs it; without it only the fuzz modules skip
    pass
else:
    _quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
    settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                              suppress_health_check=_quiet, print_blob=True)
    settings.register_profile("long", max_examples=20_000, deadline=None,
                              suppress_health_check=_quiet, print_blob=True)
    settings.load_profile(os.environ.get("CODI2_HYPOTHESIS_PROFILE", "ci"))
