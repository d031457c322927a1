"""Shared test setup: a persistent numba cache, uvloop for async tests, service requirements."""

from __future__ import annotations

import os
from pathlib import Path

# Before numba is imported anywhere: compiled kernels survive between test processes and runs.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import uvloop


def pytest_asyncio_loop_factories(config, item):  # type: ignore[no-untyped-def]
    return {"uvloop": uvloop.new_event_loop}
