"""One Prefect test server for the tests of this folder that run the real flow."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="package")
def prefect_harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield
