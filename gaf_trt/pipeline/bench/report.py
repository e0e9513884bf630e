"""Presenting ``gaf-trt bench`` records: a rich table, JSON and a PNG bar chart (PIL).

The plot has one panel per ``(classes, steps, solver)``: images/s per batch size, one bar per
``backend precision mode`` (the reference loop first), each bar labelled with its speed-up
over the reference row of the same case.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from gaf_trt.io.files import atomic_write, write_json
from gaf_trt.pipeline.bench.grid import BenchRecord

#: bar colours, cycled over row labels (the reference loop is always grey)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207))
REFERENCE_GREY = (127, 127, 127)


def row_label(r: BenchRecord) -> str:
    if r.backend == "reference":
        return "reference"
    name = r.backend if r.resolved_backend == r.backend else f"{r.backend}:{r.resolved_backend}"
    return (f"{name} {r.precision}" + (" graph" if r.mode == "graph" else "")
            + (f" {r.cache}" if r.cache != "off" else ""))


#: columns of the table (the JSON records hold every field: p90s, ms/step, evals/s, ...)
COLUMNS = ("backend", "B", "N", "solver", "ms/img", "img/s", "x ref", "GFLOP/s", "ceil",
           "rel err", "MiB", "setup s")


def rich_table(records: Sequence[BenchRecord]):  # -> rich.table.Table
    """A table of the records, speed-ups against the reference row of the same case. It
    fits a 100-column terminal: no vertical rules, one space between columns, numbers never
    wrapped; the JSON records keep the columns left out here (p90s, ms/step, evals/s)."""
    from rich.table import Table

    first = records[0]
    mfu = any(r.mfu is not None for r in records)
    cached = any(r.cache != "off" for r in records)
    load = f"; {first.load_label}" if first.load_label else ""
    table = Table(title=f"gaf-trt bench on {first.device_name} ({first.device}), torch "
                        f"{first.torch}; median of {first.repeats} timed repeats{load}",
                  box=None, padding=(0, 1, 0, 0), header_style="bold underline",
                  caption="ceil: share of the best GEMM GFLOP/s probed at the model's shapes; "
                          "rel err: final state vs the fp32 reference loop"
                          + ("; MFU: share of the GPU's datasheet peak" if mfu else "")
                          + ("; x off: vs the uncached row of the same backend and "
                             "precision" if cached else ""))
    columns = COLUMNS[:7] + (("x off",) if cached else ()) + COLUMNS[7:9]
    for col in columns + (("MFU",) if mfu else ()) + COLUMNS[9:]:
        left = col in ("backend", "solver")
        table.add_column(col, justify="left" if left else "right", overflow="fold",
                         min_width=10 if col == "backend" else None)
    for r in records:
        if r.skipped:  # a cell that cannot run here, with the reason
            table.add_row(row_label(r), str(r.batch), str(r.classes), f"{r.solver}-{r.steps}",
                          f"skipped: {r.skipped}", *[""] * (len(table.columns) - 5))
            continue
        err = "non-finite" if not r.finite else f"{r.max_rel_err_vs_fp32:.1e}"
        cells = [row_label(r), str(r.batch), str(r.classes), f"{r.solver}-{r.steps}",
                 _num(r.ms_per_image), _num(r.images_per_s), f"{r.speedup_vs_reference:.2f}x"]
        if cached:
            cells.append("-" if r.speedup_vs_uncached is None else
                         f"{r.speedup_vs_uncached:.2f}x")
        cells += [_num(r.gflops), f"{r.ceiling_fraction:.0%} {r.ceiling_source}".strip()]
        if mfu:
            cells.append("-" if r.mfu is None else f"{r.mfu:.0%}")
        cells += [err, f"{r.peak_mem_mb:.0f}", f"{r.setup_s:.1f}"]
        table.add_row(*cells)
    return table


def _num(x: float) -> str:
    """A speed or time in at most ~6 characters: 3 significant digits, no exponent below
    a million."""
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}" if abs(x) < 1e6 else f"{x:.2e}"


def write_records(path: str | os.PathLike[str], records: Sequence[BenchRecord],
                  artifacts: dict[str, Any] | None = None) -> None:
    """The records as a JSON list (atomically); each row with ``artifacts`` when given (the
    path and sha256 of what the grid ran: :func:`grid_artifacts`)."""
    extra = {} if artifacts is None else {"artifacts": artifacts}
    write_json(path, [{**r.to_dict(), **extra} for r in records])


def grid_artifacts(ckpt: str | None, engine: str | None) -> dict[str, Any]:
    """``{"ckpt": {"path", "sha256"}, "engine": {...}}`` of the artifacts a grid names (an
    engine directory's sha256 is its manifest's; a random-weight preset has none)."""
    from gaf_trt.pipeline.source import source_record

    return {k: source_record(v) for k, v in (("ckpt", ckpt), ("engine", engine))
            if v is not None}


def plot_png(path: str | os.PathLike[str], records: Sequence[BenchRecord]) -> None:
    """Images/s by backend and batch as a grouped bar chart, written atomically."""
    from PIL import Image, ImageDraw

    records = [r for r in records if not r.skipped]  # the reference row always ran
    panels: dict[tuple[int, int, str], list[BenchRecord]] = {}
    for r in records:
        panels.setdefault((r.classes, r.steps, r.solver), []).append(r)
    labels = list(dict.fromkeys(row_label(r) for r in records))
    colours = {lab: REFERENCE_GREY if lab == "reference" else PALETTE[i % len(PALETTE)]
               for i, lab in enumerate(labels)}
    panel_h, width = 320, max(640, 120 + 60 * len(labels) * max(
        len({r.batch for r in rs}) for rs in panels.values()))
    legend_h = 20 * len(labels) + 20
    img = Image.new("RGB", (width, panel_h * len(panels) + legend_h + 30), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), f"gaf-trt bench: images/s on {records[0].device_name}", fill="black")
    for i, (key, rs) in enumerate(panels.items()):
        _panel(draw, rs, key, labels, colours, top=30 + i * panel_h, width=width,
               height=panel_h)
    y = 30 + panel_h * len(panels)
    for lab in labels:
        draw.rectangle([20, y + 4, 32, y + 16], fill=colours[lab])
        draw.text((40, y + 4), lab, fill="black")
        y += 20
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def _panel(draw, records: Sequence[BenchRecord], key: tuple[int, int, str], labels: list[str],
           colours: dict, *, top: int, width: int, height: int) -> None:
    """One panel: groups by batch, one bar per row label, speed-up printed above each bar."""
    classes, steps, solver = key
    left, bottom = 70, top + height - 40
    plot_h = height - 80
    draw.text((left, top + 6), f"N={classes} classes, {solver}-{steps}", fill="black")
    peak = max(r.images_per_s for r in records) or 1.0
    draw.line([left, bottom, width - 10, bottom], fill="black")
    draw.line([left, bottom, left, bottom - plot_h], fill="black")
    draw.text((4, bottom - plot_h), f"{peak:.3g}", fill="black")
    draw.text((4, bottom - 10), "0", fill="black")
    batches = sorted({r.batch for r in records})
    group_w = (width - left - 20) / len(batches)
    bar_w = max(6.0, group_w / (len(labels) + 1))
    for gi, b in enumerate(batches):
        x0 = left + 10 + gi * group_w
        draw.text((x0, bottom + 6), f"batch {b}", fill="black")
        for r in (r for r in records if r.batch == b):
            li = labels.index(row_label(r))
            h = plot_h * r.images_per_s / peak
            bx = x0 + li * bar_w
            draw.rectangle([bx, bottom - h, bx + bar_w - 2, bottom], fill=colours[row_label(r)])
            draw.text((bx, bottom - h - 12), f"{r.speedup_vs_reference:.1f}x", fill="black")
