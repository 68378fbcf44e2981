"""One PNG grid from the images an ``eval.py --save-images K`` run wrote, for docs/RESULTS.md.

    python benchmarks/results_grid.py runs/table-64 --columns input,clcae_w,clcae_wplus,clcae_wplus_f,psp_wplus,e4e_wplus \
        --rows 16 --scale 2 --out docs/results_grid.png

Rows are the first ``--rows`` images; columns are the file suffixes of ``images/NNNN_<column>.png`` (``input`` is
the ground truth at the metric size). A header strip names the columns. Nothing is resampled except the nearest-
neighbour enlargement by ``--scale``, so what is shown is what was measured (8-bit, clamped).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw


def build_grid(image_dir: Path, columns: list[str], rows: int, scale: int = 2, labels: list[str] | None = None
               ) -> Image.Image:
    """The grid image; raises ``FileNotFoundError`` naming the first missing file."""
    cells = []
    for i in range(rows):
        row = []
        for c in columns:
            p = image_dir / f"{i:04d}_{c}.png"
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such image (did eval.py run with --save-images >= {rows}?)")
            row.append(Image.open(p).convert("RGB"))
        cells.append(row)
    w, h = cells[0][0].size
    w, h = w * scale, h * scale
    header = 14
    grid = Image.new("RGB", (len(columns) * w, header + rows * h), "white")
    draw = ImageDraw.Draw(grid)
    for j, name in enumerate(labels or columns):
        draw.text((j * w + 3, 1), name, fill="black")
    for i, row in enumerate(cells):
        for j, im in enumerate(row):
            grid.paste(im.resize((w, h), Image.NEAREST), (j * w, header + i * h))
    return grid


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="an eval.py --out folder (with images/)")
    p.add_argument("--columns", required=True, help="comma-separated file suffixes, e.g. input,clcae_wplus_f")
    p.add_argument("--labels", default="", help="comma-separated header labels (default: the suffixes)")
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    columns = args.columns.split(",")
    labels = args.labels.split(",") if args.labels else None
    if labels and len(labels) != len(columns):
        p.error("--labels needs one label per column")
    try:
        grid = build_grid(Path(args.run) / "images", columns, args.rows, args.scale, labels)
    except FileNotFoundError as e:
        p.error(str(e))
    grid.save(args.out)
    print(f"wrote {args.out} ({grid.width}x{grid.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
