"""What the benchmark scripts share: where the repository and the binary are."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ainode_bin() -> Path:
    p = Path(os.environ.get("AINODE_BIN", REPO / "target" / "release" / "ainode"))
    if not p.is_file():
        sys.exit(f"{p} missing: cargo build --release (or set AINODE_BIN)")
    return p
