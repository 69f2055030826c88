"""``ramp eval compare RUN_OR_NAME…``: evaluation runs side by side (runs as rows, datasets as columns,
macro average last), printed and saved as Markdown and PNG.

A run is named by its MLflow run id or its run name (the latest run of that name, in any experiment).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ramp.errors import UserError
from ramp.qa.scoring import comparison_table, markdown_table
from ramp.tracking import tracking_uri


class CompareError(UserError, LookupError):
    """A run that cannot be found; the message names it."""


@dataclass(frozen=True)
class Comparison:
    header: list[str]
    rows: list[list[str]]
    markdown: Path
    png: Path

    def text(self) -> str:
        """The table as aligned plain text (the run column left-aligned, numbers right-aligned)."""
        table = [self.header, *self.rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(self.header))]
        return "\n".join(
            "  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))])
            for r in table
        )


def find_run(client: Any, run_or_name: str) -> Any:
    """The run with this id, else the latest finished run with this name."""
    try:
        return client.get_run(run_or_name)
    except MlflowException:
        pass
    experiments = [e.experiment_id for e in client.search_experiments()]
    escaped = run_or_name.replace("'", "\\'")
    runs = client.search_runs(
        experiments,
        f"tags.mlflow.runName = '{escaped}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise CompareError(
            f"no MLflow run with id {run_or_name!r} nor a finished run of that name in {client.tracking_uri}"
        )
    return runs[0]


def compare_runs(
    runs: Sequence[str],
    metric: str = "token_recall",
    output: str | Path = "runs/eval/compare",
    uri: str | None = None,
) -> Comparison:
    """Build the table of ``metric`` for ``runs`` and write ``compare.md`` and ``compare.png``."""
    client = MlflowClient(tracking_uri(uri))
    entries: list[tuple[str, dict[str, float], list[str]]] = []
    for name in runs:
        run = find_run(client, name)
        label = run.data.tags.get("mlflow.runName") or run.info.run_id
        if any(label == e[0] for e in entries):
            label = f"{label} ({run.info.run_id[:8]})"
        datasets = [d for d in run.data.params.get("datasets", "").split(",") if d]
        entries.append((label, run.data.metrics, datasets))
    header, rows = comparison_table(entries, metric)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / "compare.md"
    markdown.write_text(f"{metric} (%)\n\n{markdown_table(header, rows)}", encoding="utf-8")
    png = out / "compare.png"
    _table_png(header, rows, f"{metric} (%)", png)
    return Comparison(header, rows, markdown, png)


def _table_png(header: list[str], rows: list[list[str]], title: str, path: Path) -> None:
    figure = Figure(figsize=(max(4.0, 1.3 * len(header) + 1.5), 0.45 * len(rows) + 1.2))
    ax = figure.subplots()
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1.0, 1.3)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_text_props(weight="bold")
    ax.set_title(title)
    figure.savefig(path, dpi=130, bbox_inches="tight")
