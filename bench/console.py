"""The consoles every command prints through (stdout tables and progress; stderr for warnings)."""
from __future__ import annotations

import sys

from rich.console import Console

# Wide enough for the sweep tables when piped to a file or CI log.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
