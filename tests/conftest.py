"""Session-wide fixtures: one real Kubernetes control plane, started the first time a test asks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.helpers.control_plane import ControlPlane, start_control_plane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start_control_plane(tmp_path_factory.mktemp("control-plane"))
    try:
        yield plane
    finally:
        plane.stop()
