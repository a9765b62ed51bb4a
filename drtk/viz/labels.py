"""Point labels that do not cover one another: a text position for each labelled point of a scatter panel.

Plotly places a point's text at one of nine fixed spots around it and never moves it out of another label's
way. :func:`label_positions` estimates each label's box in screen pixels from its length and the panel's size,
and gives each label, in order, the first spot whose box stays inside the panel and covers no earlier label, no
other point and no line through the points (the spot covering least, when every one covers something).
"""

from numbers import Real
from typing import Sequence

#: Spots in order of preference: beside the point first, then above and below, then the corners.
SPOTS = ("middle right", "middle left", "top center", "bottom center", "top right", "bottom right", "top left",
         "bottom left")

Box = tuple[float, float, float, float]  # left, bottom, right, top in pixels, y upwards


def _box(spot: str, x: float, y: float, width: float, height: float, gap: float) -> Box:
    vertical, horizontal = spot.split()
    left = {"right": x + gap, "left": x - gap - width, "center": x - width / 2}[horizontal]
    bottom = {"top": y + gap, "bottom": y - gap - height, "middle": y - height / 2}[vertical]
    return left, bottom, left + width, bottom + height


def _overlap(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def label_positions(x: Sequence[Real], y: Sequence[Real], texts: Sequence[str], *, x_range: tuple[Real, Real],
                    y_range: tuple[Real, Real], size_px: tuple[Real, Real], font_px: Real = 10.0,
                    marker_px: Real = 8.0, lines: Sequence[Sequence[int]] = (),
                    segments: Sequence[tuple[tuple[Real, Real], tuple[Real, Real]]] = ()) -> list[str]:
    """A plotly ``textposition`` for each point of one panel, so that labels overlap neither one another nor
    the other points nor the panel's edge; a point whose text is empty gets ``"middle right"`` and blocks only
    with its marker.

    Args:
        x, y: the points in data coordinates.
        texts: each point's label.
        x_range, y_range: the panel's axis ranges.
        size_px: the panel's plotting area in pixels (width, height).
        font_px: the label font size (a character is taken as 0.6 of it wide, a line as 1.2 of it high).
        marker_px: the marker's diameter.
        lines: the indices of the points each drawn line connects, in order (a label covering a line is avoided
            less than one covering a point or a label).
        segments: other strokes to keep labels off, as end points in data coordinates (e.g. error bars).
    """
    if not len(x) == len(y) == len(texts):
        raise ValueError(f"x, y and texts differ in length ({len(x)}, {len(y)}, {len(texts)})")
    sx = size_px[0] / (x_range[1] - x_range[0])
    sy = size_px[1] / (y_range[1] - y_range[0])
    to_px = lambda a, b: ((a - x_range[0]) * sx, (b - y_range[0]) * sy)  # noqa: E731
    pts = [to_px(a, b) for a, b in zip(x, y)]
    r = marker_px / 2
    markers = [(px - r, py - r, px + r, py + r) for px, py in pts]
    panel = (0.0, 0.0, float(size_px[0]), float(size_px[1]))
    # a line is a row of 2-pixel squares, one every 3 pixels along each segment
    strokes_px = [(pts[a], pts[b]) for line in lines for a, b in zip(line, line[1:])]
    strokes_px += [(to_px(*start), to_px(*end)) for start, end in segments]
    strokes = [(x0 + t * (x1 - x0) - 1, y0 + t * (y1 - y0) - 1, x0 + t * (x1 - x0) + 1, y0 + t * (y1 - y0) + 1)
               for (x0, y0), (x1, y1) in strokes_px
               for n in [max(1, int(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 / 3))] for t in (k / n for k in range(n + 1))]
    placed: list[Box] = []
    spots = []
    for i, ((px, py), text) in enumerate(zip(pts, texts)):
        if not text:
            spots.append(SPOTS[0])
            continue
        width, height = 0.6 * font_px * len(text), 1.2 * font_px
        others = [m for j, m in enumerate(markers) if j != i]

        def cost(spot: str) -> float:
            box = _box(spot, px, py, width, height, r + 2)
            outside = width * height - _overlap(box, panel)  # cut off at the panel's edge
            return outside + sum(_overlap(box, b) for b in (*placed, *others)) + 0.5 * sum(_overlap(box, b) for b in strokes)

        best = next((s for s in SPOTS if cost(s) == 0), None) or min(SPOTS, key=cost)
        placed.append(_box(best, px, py, width, height, r + 2))
        spots.append(best)
    return spots
