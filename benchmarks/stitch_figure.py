"""The README's shift-and-stitch figure: one class's map at stride 32, 16 and 8.

``python -m benchmarks.stitch_figure [--out docs/stitch_heatmaps.png]``
"""

from __future__ import annotations

import argparse

import numpy as np
import skimage.data

from fcnclassify import grid, load_model, predict
from fcnclassify.io.images import write_image
from fcnclassify.outputs.render import colorize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/stitch_heatmaps.png")
    parser.add_argument("--class-name", default="Egyptian cat")
    args = parser.parse_args()
    model = load_model("efficientnet_lite0")
    photo = skimage.data.chelsea()
    cls = model.class_index(args.class_name)
    panels, titles = [photo], [f"chelsea ({photo.shape[1]}x{photo.shape[0]})"]
    for factor in (1, 2, 4):
        # one size (the photo's shorter side at 448), not mirrored: one map per stride
        prediction = predict(model, photo, sizes=(448,), flip=False, stride_factor=factor)
        (m,) = prediction.maps
        cells = m.probabilities()[cls].numpy()
        # each cell as a flat block: shows the grid itself, not an interpolation of it
        h, w = photo.shape[:2]
        ys, xs = m.centers()
        rows = np.clip(np.searchsorted((ys[1:] + ys[:-1]) / 2, np.arange(h) + 0.5), 0, len(ys) - 1)
        cols = np.clip(np.searchsorted((xs[1:] + xs[:-1]) / 2, np.arange(w) + 0.5), 0, len(xs) - 1)
        panels.append(colorize(cells[rows][:, cols], colormap="inferno"))
        titles.append(f"stride {m.geometry.stride}: {m.shape[0]}x{m.shape[1]} cells")
    write_image(args.out, grid(panels, titles, height=220, columns=4), overwrite=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
