"""Shared test fixtures: the compatibility fixtures in ../shared/compat (tests skip cleanly without them), tiny
inverters and the benchmark scripts as modules."""
import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
COMPAT = REPO.parent / "shared" / "compat"
#: A 32 px generator and an IR-SE trunk small enough for CPU tests.
TINY_GEN = dict(size=32, style_dim=32, n_mlp=2, channel_base=256, channel_max=16)
TINY_TRUNK = dict(num_layers=18, widths=[8, 8, 16, 16], style_dim=32)


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


@pytest.fixture(scope="session")
def tiny_inverters():
    """``make(directory=None, feature_residual=False) -> {'clcae', 'psp'}``: a tiny CLCAE and a tiny pSp inverter
    (random weights, seed 0) sharing one 32 px generator and its average latent; with ``directory``, written there as
    ``clcae.pt``, ``psp.pt`` and the generator ``G.pt``."""
    from clcae.checkpoints import save_generator, save_inverter
    from clcae.inversion import build_inverter

    def make(directory: Path | None = None, feature_residual: bool = False) -> dict:
        torch.manual_seed(0)
        clcae = build_inverter(dict(arch="clcae", generator=TINY_GEN, input_size=[32, 32], idx_k=3,
                                    encoder=dict(TINY_TRUNK, nhead=2, dim_feedforward=32, feature_channels=16,
                                                 feature_downsample=0,
                                                 **({"feature_residual": True} if feature_residual else {})))).eval()
        la = clcae.decoder.mean_latent(256)
        clcae.latent_avg.copy_(la)
        psp = build_inverter(dict(arch="psp", encoder=TINY_TRUNK, generator=TINY_GEN, input_size=[32, 32])).eval()
        psp.decoder.load_state_dict(clcae.decoder.state_dict())
        psp.latent_avg.copy_(la.expand(psp.n_latent, -1))
        if directory is not None:
            save_inverter(clcae, directory / "clcae.pt")
            save_inverter(psp, directory / "psp.pt")
        clcae.decoder.latent_avg.copy_(la)   # the generator file carries the average latent
        if directory is not None:
            save_generator(clcae.decoder, directory / "G.pt")
        return {"clcae": clcae, "psp": psp}

    return make


@pytest.fixture(scope="session")
def benchmark_module():
    """``load(name)``: ``benchmarks/NAME.py`` imported as a module (for tests of the benchmark scripts)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
