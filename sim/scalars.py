"""Type aliases for scalars that kernels take and return (Python or numpy scalars)."""

from __future__ import annotations

from typing import Any

import numpy as np

Int = int | np.integer[Any]
Float = float | np.floating[Any]
Num = int | float | np.number[Any]
