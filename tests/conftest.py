"""Shared fixtures: a small real run on the bundled digits set, trained once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A finished unprotected MLP run on digits (no post-training evaluations)."""
    from pipeline.config import TrainConfig
    from pipeline.train import train

    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(dataset="digits", prot="none", epochs=15, out=str(out), evaluations=("none",))
    metrics = train(cfg)
    return cfg.run_dir, metrics
