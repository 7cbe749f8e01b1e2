"""Fixtures that drive a real Exim 4.96 (Debian exim4-daemon-light): see tests/exim/harness.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# `tests` is not an installed package: make `from tests.exim.harness import ...` work under plain `pytest`.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.exim.harness import MODES, EximMissing, HarnessResult, find_exim, run_all_modes  # noqa: E402

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.exim)


@pytest.fixture(scope="session")
def exim_runs(tmp_path_factory) -> dict[str, HarnessResult]:
    """Run every scenario once per log_selector mode ("default", "cpanel", "all"); {mode: HarnessResult}.

    Never skips: a missing Exim is a failure (the test suite must run against a real Exim on CI).
    """
    try:
        find_exim()
    except EximMissing:
        pytest.fail("exim4 not found: install exim4-daemon-light (make deps)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the real-Exim harness must run as root (it runs exim4 -C <own config>)", pytrace=False)
    base = tmp_path_factory.mktemp("exim")
    return run_all_modes(base, MODES)
