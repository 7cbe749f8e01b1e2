"""Environment settings of eximtrack/config.py that are pure parsing."""

from __future__ import annotations

import pytest

from eximtrack.config import CACHE_ENV, DEFAULT_CACHE_MB, ConfigError, resolve_cache_mb


def test_the_engine_cache_size_comes_from_the_environment():
    assert resolve_cache_mb({}) == DEFAULT_CACHE_MB == 1024
    assert resolve_cache_mb({CACHE_ENV: " 256 "}) == 256
    assert resolve_cache_mb({CACHE_ENV: "0"}) == 0  # no cache
    assert resolve_cache_mb({CACHE_ENV: ""}) == DEFAULT_CACHE_MB
    for bad in ("-1", "1.5", "lots"):
        with pytest.raises(ConfigError, match=CACHE_ENV):
            resolve_cache_mb({CACHE_ENV: bad})
