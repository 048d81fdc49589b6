"""tests/integration/ holds every test that loads a real packaged model or starts a real server: each
is marked e2e by this folder (`pytest -m "not e2e"` leaves them out), whatever its own marks say."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)
