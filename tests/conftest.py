"""Shared test fixtures: the compatibility fixtures in ../shared/compat (tests skip cleanly without them)."""
from pathlib import Path

import pytest
import torch

COMPAT = Path(__file__).resolve().parents[1].parent / "shared" / "compat"


def pytest_configure(config):
    for name, doc in [
        ("slow", "takes more than a few seconds; still runs in CI"),
        ("gpu", "needs a CUDA device; skipped without one"),
        ("cuda_build", "compiles the CUDA extensions (needs nvcc); build only"),
    ]:
        config.addinivalue_line("markers", f"{name}: {doc}")


@pytest.fixture(scope="session")
def compat_dir() -> Path:
    if not COMPAT.is_dir():
        pytest.skip(f"compatibility fixtures not found at {COMPAT}")
    return COMPAT


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Run the test with one torch CPU thread (small tensors: no thread overhead, and the machine stays free for
    other work); the previous thread count is restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
