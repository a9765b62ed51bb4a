"""Saving figures: the one place drtk writes a figure to disk.

Plot functions elsewhere in :mod:`drtk.viz` return ``plotly.graph_objects.Figure`` and never show,
save or compute metrics. :func:`save_figure` writes HTML always (plotly.js saved once per folder, so it
opens offline), and PNG/SVG when a Chromium browser is
available to kaleido (otherwise it logs why the static copies were skipped). Inside
:func:`html_only`, only the HTML is written. Static export keeps one kaleido browser for the whole
process (started on the first export, closed at exit): about 0.3 s per figure instead of 4 s when every
export starts its own browser.
"""

import atexit
import contextvars
import functools
import logging
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import plotly.graph_objects as go

logger = logging.getLogger(__name__)

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
_STATIC = contextvars.ContextVar("drtk_static_figures", default=True)


@functools.cache
def _export_server() -> None:
    """Start one kaleido browser for this process (plotly's ``write_image`` uses it when it runs)."""
    import kaleido

    try:
        kaleido.start_sync_server(silence_warnings=True)
    except Exception as err:  # an older kaleido, or no event loop to spare: each export starts its own browser
        logger.debug("no shared kaleido browser (%s)", err)
        return
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)


@contextmanager
def html_only() -> Iterator[None]:
    """Within the block, :func:`save_figure` writes HTML only (e.g. for intermediate figures of a pipeline)."""
    token = _STATIC.set(False)
    try:
        yield
    finally:
        _STATIC.reset(token)


def static_export_available() -> bool:
    """True when kaleido is installed and a Chromium-family browser is on PATH."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return any(shutil.which(b) for b in _BROWSERS)


def save_figure(
    fig: go.Figure, out_dir: "str | Path", name: str, *, formats: Sequence[str] = ("html", "png", "svg")
) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.{html,png,svg}``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "html" in formats:
        path = out / f"{name}.html"
        fig.write_html(str(path), include_plotlyjs="directory")
        written.append(path)
    static = [f for f in formats if f in ("png", "svg")] if _STATIC.get() else []
    if static and static_export_available():
        _export_server()
        for fmt in static:
            path = out / f"{name}.{fmt}"
            try:
                with warnings.catch_warnings():  # "kopts is ignored if using a server": drtk passes none
                    warnings.simplefilter("ignore", UserWarning)
                    fig.write_image(str(path), format=fmt, scale=2 if fmt == "png" else 1)
                written.append(path)
            except Exception as err:  # kaleido/browser failures must not lose the HTML
                logger.warning("could not export %s (%s); the HTML copy was written", path.name, err)
                break
    elif static:
        logger.info("static export skipped for %s: kaleido with a Chromium browser is needed", name)
    return written
