"""Session-wide settings and fixtures: hypothesis' profile; one real Kubernetes control plane,
started the first time a test asks."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings
from tests.helpers.control_plane import ControlPlane, start_control_plane

# Property tests run 50 examples each by default (CI, and every `scripts/test`); the full run,
# 300 each, with HYPOTHESIS_PROFILE=full (or pytest's --hypothesis-profile=full).
settings.register_profile("ci", max_examples=50)
settings.register_profile("full", max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start_control_plane(tmp_path_factory.mktemp("control-plane"))
    try:
        yield plane
    finally:
        plane.stop()
