"""Walk-forward splits with purging and an embargo.

Rows are bars in time order; the label of row i spans bars (i, i + horizon].  Test blocks are
contiguous and follow each other, training always precedes its test block.  A training row whose
label reaches into the test block is purged (``horizon`` rows), and ``embargo`` further rows are
dropped before the test block so that slowly-decaying serial correlation cannot leak either.
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("expanding", "sliding")


def walk_forward_splits(
    n: int,
    n_folds: int,
    horizon: int,
    embargo: int,
    scheme: str = "expanding",
    min_train: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, test_idx) pairs over ``range(n)``; the test blocks tile the rows after ``min_train``.

    ``min_train`` (default ``n // (n_folds + 1)``) is the first training window and, for the sliding
    scheme, the length of every training window.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if horizon < 0 or embargo < 0:
        raise ValueError("horizon and embargo must be >= 0")
    gap = horizon + embargo
    if min_train is None:
        min_train = n // (n_folds + 1)
    if min_train < 1:
        raise ValueError(f"min_train must be >= 1, got {min_train}")
    first_test = min_train + gap
    test_rows = n - first_test
    if test_rows < n_folds:
        raise ValueError(
            f"{n} rows cannot hold {n_folds} test folds after {min_train} training rows and a gap of {gap}"
        )
    bounds = np.linspace(first_test, n, n_folds + 1).round().astype(int)
    splits = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        train_end = a - gap
        train_start = 0 if scheme == "expanding" else max(0, train_end - min_train)
        splits.append((np.arange(train_start, train_end), np.arange(a, b)))
    return splits
