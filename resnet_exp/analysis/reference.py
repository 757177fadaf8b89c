"""Published numbers to set beside a study's own, never mixed into them.

He et al. 2016, "Deep Residual Learning for Image Recognition", Table 6: CIFAR-10
test error (%) of the residual nets (ResNet-110: the best of 5 runs; the paper
gives 6.61 ± 0.16 as their mean). The paper's plain nets appear only in its
Fig. 6, without a table, so they have no reference number here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HE2016_STUDY = "he2016_cifar10"
HE2016_TABLE6_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}


def _ours(table: pd.DataFrame, depth: int, arch: str) -> str:
    rows = table[(table["depth"] == depth) & (table["arch"] == arch)]
    if rows["test_error_mean"].isna().all():
        return "not run"
    row = rows.iloc[0]
    spread = f" ± {100 * row['test_error_sd']:.2f}" if np.isfinite(row["test_error_sd"]) else ""
    return f"{100 * row['test_error_mean']:.2f}{spread} ({int(row['seeds'])} seeds)"


def reference_section(experiment: str, table: pd.DataFrame) -> list[str]:
    """Report lines comparing a `he2016_cifar10` study with Table 6; none for other studies."""
    if experiment != HE2016_STUDY:
        return []
    lines = [
        "## Beside He et al. 2016, Table 6 (CIFAR-10 test error, %)",
        "",
        "The paper's column is quoted from the paper; ours is this study's mean ± sd over "
        "seeds. A depth this study has not run says so.",
        "",
        "| depth | He et al. 2016 ResNet | ours, residual | ours, plain |",
        "|---:|---:|---:|---:|",
    ]
    for depth, paper in HE2016_TABLE6_TEST_ERROR.items():
        lines.append(
            f"| {depth} | {paper:.2f} | {_ours(table, depth, 'residual')} | "
            f"{_ours(table, depth, 'plain')} |"
        )
    return [*lines, ""]
