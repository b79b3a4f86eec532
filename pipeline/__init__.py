"""themeshift: offline theme detection and cognitive-shift scoring for interview transcripts."""

import os

# Models come from installed packages or local folders only; never from a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# UMAP compiles numba code on first use; a persistent cache saves about a minute per process.
os.environ.setdefault(
    "NUMBA_CACHE_DIR",
    os.path.join(os.environ.get("THEMESHIFT_CACHE") or os.path.expanduser("~/.cache/themeshift"), "numba"),
)

__version__ = "0.1.0"
