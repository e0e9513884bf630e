from __future__ import annotations

import pytest

from tests.export.shared import ref_engine_dir


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory):
    return ref_engine_dir(tmp_path_factory.getbasetemp())
