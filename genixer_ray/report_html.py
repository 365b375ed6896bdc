"""The pieces the run report's HTML is made of: escaped text, image thumbnails as data URIs, SVG
histograms and the page's style. Generated text is untrusted: :func:`text` escapes it."""

from __future__ import annotations

import base64
import html
import io

THUMB = 256  # the longest side of a thumbnail


def thumbnail(data: bytes, row: dict) -> str:
    """A JPEG data URI of the image, boxes drawn (question boxes orange, answer boxes green)."""
    from PIL import Image, ImageDraw

    from genixer_ray.images import decode_image

    img = Image.fromarray(decode_image(data, max_side=THUMB))
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for col, color in (("question_boxes", (255, 140, 0)), ("answer_boxes", (40, 200, 90))):
        for b in row.get(col) or []:
            draw.rectangle([b[0] * w, b[1] * h, b[2] * w, b[3] * h], outline=color, width=3)
    for x, y in row.get("points") or []:
        draw.ellipse([x * w - 5, y * h - 5, x * w + 5, y * h + 5], outline=(0, 160, 255), width=3)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def histogram_svg(values: list[float], marks: list[float], *, bins: int = 30) -> str:
    """An SVG bar chart of ``values`` with dashed red lines at ``marks``."""
    if not values:
        return "<p class='muted'>no scores</p>"
    lo, hi = min(values + marks), max(values + marks)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    width, height, pad = 480, 160, 24
    bw = (width - 2 * pad) / bins
    top = max(counts)
    parts = [f"<svg viewBox='0 0 {width} {height + 20}' width='{width}' height='{height + 20}' role='img'>"]
    for i, n in enumerate(counts):
        bh = (height - pad) * n / top
        parts.append(f"<rect x='{pad + i * bw:.1f}' y='{height - bh:.1f}' width='{bw - 1:.1f}' height='{bh:.1f}' fill='#4a7bd0'/>")
    for m in marks:
        x = pad + (m - lo) / (hi - lo) * (width - 2 * pad)
        parts.append(f"<line x1='{x:.1f}' y1='4' x2='{x:.1f}' y2='{height}' stroke='#d33' stroke-width='2' stroke-dasharray='5,3'/>")
        parts.append(f"<text x='{x + 3:.1f}' y='14' fill='#d33' font-size='11'>{m:g}</text>")
    parts.append(f"<text x='{pad}' y='{height + 16}' font-size='11'>{lo:.2f}</text>")
    parts.append(f"<text x='{width - pad}' y='{height + 16}' font-size='11' text-anchor='end'>{hi:.2f}</text>")
    parts.append("</svg>")
    return "".join(parts)


_CONTROL = {c: "\ufffd" for c in range(32) if c not in (9, 10)} | {127: "\ufffd"}


def text(v) -> str:
    """Untrusted text as HTML text: escaped, control characters shown as U+FFFD."""
    return html.escape("" if v is None else str(v).translate(_CONTROL), quote=True)


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px} h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}
.cols{display:flex;gap:24px;align-items:flex-start} .col{flex:1}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;font-size:13px;overflow-wrap:anywhere}
.card img{width:100%;border-radius:4px} .noimg{padding:20px;background:#eee}
.task{background:#eef;border-radius:3px;padding:1px 5px} .reasons{color:#b00} .scores,.muted{color:#666}
.hists{display:flex;flex-wrap:wrap;gap:24px}
.pair{display:flex;gap:6px} .pair figure{flex:1;margin:0} figcaption{font-size:12px;color:#444}
"""


