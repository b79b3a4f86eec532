"""Persistent numba compilation for UMAP, HDBSCAN and pynndescent.

Most of UMAP's numba functions are not declared cache=True, so every new process
spends about a minute compiling them before any work. Defaulting numba.njit/jit to
cache=True before those libraries are imported stores the compiled code in
NUMBA_CACHE_DIR (set in pipeline/__init__.py), and later processes load it in
seconds. Functions numba cannot cache (closures) silently compile as before.
"""

from __future__ import annotations

import sys
import warnings

_done = False


def enable() -> None:
    global _done
    if _done:
        return
    if any(name in sys.modules for name in ("umap", "pynndescent", "bertopic")):
        _done = True  # too late for this process; nothing breaks, it just compiles
        return
    import numba
    from numba.core.errors import NumbaWarning

    def _cached(decorator):
        def wrapper(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)

        return wrapper

    numba.njit = _cached(numba.njit)
    numba.jit = _cached(numba.jit)
    warnings.filterwarnings("ignore", category=NumbaWarning)  # "cannot cache function ..." for closures
    _done = True
