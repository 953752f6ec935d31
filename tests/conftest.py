import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The licensed real SCRFD-500M lives beside the checkout, never in it.
FIXTURES = Path(os.environ.get("FACEBENCH_FIXTURES", REPO.parent / "shared" / "fixtures"))
REAL_SCRFD_500M = FIXTURES / "scrfd_500m_bnkps.onnx"


@pytest.fixture
def real_scrfd_path() -> Path:
    if not REAL_SCRFD_500M.is_file():
        pytest.skip(f"real SCRFD-500M fixture absent at {REAL_SCRFD_500M} (set FACEBENCH_FIXTURES)")
    return REAL_SCRFD_500M


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # One model cache per test session, never the user's ~/.cache; session-scoped so that
    # module fixtures (which run first) and their subprocesses see it too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "facebench-cache"))
        yield


def tiny_suite(name: str, batches: list[int], model: str = "arcface_mbf", checks: str = "parity = false",
               extra: str = "") -> str:
    """A suite TOML that measures in a blink: one model on ort-cpu, short windows, no peak probes.
    `checks`: the [checks] lines; `extra`: more TOML after them."""
    return (f'name = "{name}"\nruntimes = ["ort-cpu"]\nbatches = {batches}\n[[models]]\nname = "{model}"\n'
            "[measure]\nwarmup_s = 0.05\nwindow_s = 0.1\nmax_windows = 4\n"
            f"[checks]\n{checks}\npeak_probes = false\n{extra}")
