"""Without chromium the browser tests FAIL (a skipped browser tier would look green)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_missing_chromium_fails_the_browser_tests(tmp_path):
    env = dict(os.environ, EXIMTRACK_CHROMIUM=str(tmp_path / "no-chromium"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(HERE.parents[1]),
         str(HERE / "test_browser.py") + "::test_wrong_token_is_refused"],
        env=env, capture_output=True, text=True, timeout=300, cwd=HERE.parents[1],
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "chromium not found" in out
    assert "skipped" not in out.lower()
