"""``minicnn gallery``: every technique on one model, as PNG figures and an index.html.

Each subcommand module of :mod:`minicnn.cli` that has figures to show defines
``gallery(context)``, which makes them and hands each to
:meth:`GalleryContext.add`. The gallery runs them in the modules' order with a
progress bar, and writes ``index.html`` linking every figure with its caption.
A section that fails is reported in the page and on stderr, and the run goes on;
the command exits non-zero at the end if any did.
"""
import html
import sys
import time
import traceback
from pathlib import Path

from tqdm.auto import tqdm

from .plots import save


class GalleryContext:
    """What a gallery section gets: the model, its data, a seed, and where to write."""

    def __init__(self, net, data, out, seed=0):
        self.net = net
        self.data = data
        self.out = Path(out)
        self.seed = seed
        self.entries = []  # (section, file name, title, caption)
        self.section = None

    def add(self, fig, name, title, caption=""):
        """Write ``fig`` as ``name`` (a .png file name) and list it in the index."""
        save(fig, self.out / name)
        self.entries.append((self.section, name, title, caption))


def gallery_sections():
    from .cli import command_modules
    return [m for m in command_modules() if hasattr(m, "gallery")]


def section_name(module):
    return module.__name__.rsplit(".", 1)[-1]


def run_gallery(out, weights=None, data=None, seed=0, progress=True, only=None):
    """Make every section's figures in ``out`` (or only the sections named in
    ``only``); returns (index path, failures, {section: seconds})."""
    from .datasets import as_dataset
    from .io.model_file import load
    sections = gallery_sections()
    if only:
        known = [section_name(m) for m in sections]
        unknown = [name for name in only if name not in known]
        if unknown:
            raise ValueError(f"unknown gallery section(s) {', '.join(unknown)}; the sections are "
                             f"{', '.join(known)}")
        sections = [m for m in sections if section_name(m) in only]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    net = load(weights)
    context = GalleryContext(net, as_dataset(data, net), out, seed)
    failures, timings = [], {}
    for module in tqdm(sections, desc="gallery", unit="section", disable=not progress):
        context.section = section_name(module)
        start = time.perf_counter()
        try:
            module.gallery(context)
        except Exception:  # one broken section must not hide the others' figures
            failures.append((context.section, traceback.format_exc()))
            print(f"gallery: section {context.section} failed:\n{failures[-1][1]}", file=sys.stderr)
        timings[context.section] = time.perf_counter() - start
    index = out / "index.html"
    index.write_text(_page(net, context, failures, timings), encoding="utf-8")
    return index, failures, timings


def _page(net, context, failures, timings):
    esc = html.escape
    model = net.metadata.get("path", net.metadata.get("arch", "model"))
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>minicnn gallery</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "figure{margin:1.5em 0}img{max-width:100%;border:1px solid #ccc}"
             "figcaption{color:#333}pre{background:#fee;padding:1em;overflow:auto}</style>",
             "</head><body>", "<h1>minicnn gallery</h1>",
             f"<p>Model: <code>{esc(str(model))}</code> ({esc(str(net.metadata.get('arch')))}); "
             f"data: {esc(context.data.description)} ({len(context.data)} images); "
             f"seed {context.seed}.</p>"]
    current = None
    for section, name, title, caption in context.entries:
        if section != current:
            parts.append(f"<h2>{esc(section)} <small>({timings.get(section, 0):.1f} s)</small></h2>")
            current = section
        parts.append(f"<figure><img src='{esc(name)}' alt='{esc(title)}'>"
                     f"<figcaption><b>{esc(title)}</b>. {esc(caption)}</figcaption></figure>")
    for section, trace in failures:
        parts.append(f"<h2>{esc(section)}: failed</h2><pre>{esc(trace)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
