"""The procedural image generators behind `trainers.builtin`: one function per generated kind.

Each generator is ``(rng, height, width, variant) -> HxWx3 uint8`` and draws only from the ``rng`` it
is given, in a fixed order, so an image depends on its seed alone. `trainers.builtin` owns the seeds,
the splits and the cache; the kinds are described there. Any change to the pixels made here must bump
`trainers.builtin.GENERATOR_VERSION`, which names the cache folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

__all__ = ["GENERATORS", "font_name"]

# ----------------------------------------------------------------------------------------------------
# small drawing helpers


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def _contrasting(rng: np.random.Generator, other: tuple[int, int, int], min_dist: float = 160.0) -> tuple[int, int, int]:
    """A random colour at least ``min_dist`` (RGB distance) from ``other``, so gradients are visible."""
    while True:
        c = _colour(rng)
        if math.dist(c, other) >= min_dist:
            return c


def _mix(a, b, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of colours a -> b with weights t (HxW), returning HxWx3 float."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return a + (b - a) * t[..., None]


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates normalised to [0, 1): (y, x), each HxW."""
    y = (np.arange(h, dtype=np.float64) + 0.5) / h
    x = (np.arange(w, dtype=np.float64) + 0.5) / w
    return np.meshgrid(y, x, indexing="ij")


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random (cells x cells) grid bicubically enlarged to h x w."""
    small = rng.random((cells + 1, cells + 1)).astype(np.float32)
    im = Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(im, dtype=np.float64), 0.0, 1.0)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    if features.check("freetype2"):
        return ImageFont.load_default(size=size)
    return ImageFont.load_default()


def font_name() -> str:
    """The font the text images are drawn with, as recorded in the manifest."""
    return "Pillow default (FreeType Aileron)" if features.check("freetype2") else "Pillow default (bitmap)"


_WORDS = (
    "render frame shader texture pixel vertex buffer queue latency stream codec decode encode upscale "
    "model layer kernel block fusion search trial budget score delta device memory cache export import "
    "settings options profile account display audio video network quality preset custom advanced apply "
    "cancel save load open close help about window view edit file tools level health ammo quest map "
    "inventory player score timer round match lobby ready start pause resume quit the of and to in for "
    "with on at by from is are was were be can will a an 4K 1080p 60 FPS 16:9 HDR v2.4 #21 100% ms"
).split()


def _sentence(rng: np.random.Generator, n: int) -> str:
    words = [_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), size=n)]
    words[0] = words[0].capitalize()
    return " ".join(words)


# ----------------------------------------------------------------------------------------------------
# generators, one per kind: (rng, height, width, variant) -> uint8 HxWx3


def _gen_render(rng: np.random.Generator, h: int, w: int, variant: int) -> np.ndarray:
    ss = 2  # supersampling factor: draw at 2x, box-reduce for anti-aliased edges like a game frame
    H, W = h * ss, w * ss
    horizon = int(H * rng.uniform(0.35, 0.55))
    sky_top, sky_low = _colour(rng, 20, 140), _colour(rng, 150, 256)
    ground_far, ground_near = _colour(rng, 60, 200), _colour(rng, 10, 110)
    img = _sky_and_ground(H, W, horizon, sky_top, sky_low, ground_far, ground_near)
    _add_sun_glow(rng, img, horizon)
    img = _draw_mountains_and_grid(rng, img, horizon, sky_low, ground_far, variant, ss)
    _add_fog(img, horizon, sky_low)
    light, half = _light_and_half_vector(rng)
    _draw_objects(rng, img, horizon, light, half)
    return np.asarray(Image.fromarray(_to_u8(img)).reduce(ss))


def _sky_and_ground(H: int, W: int, horizon: int, sky_top, sky_low, ground_far, ground_near) -> np.ndarray:
    """HxWx3 float32: sky and ground as vertical gradients (one colour per row, broadcast over the width)."""
    rows = np.arange(H, dtype=np.float64)
    sky = _mix(sky_top, sky_low, np.clip(rows / max(horizon, 1), 0, 1))
    ground = _mix(ground_far, ground_near, np.clip((rows - horizon) / max(H - horizon, 1), 0, 1) ** 0.6)
    return np.repeat(np.where((rows < horizon)[:, None], sky, ground)[:, None, :], W, axis=1).astype(np.float32)


def _add_sun_glow(rng: np.random.Generator, img: np.ndarray, horizon: int) -> None:
    """Brighten ``img`` in place around a sun in the sky (only near it: beyond 3 sigma it is invisible)."""
    W = img.shape[1]
    sx, sy, sigma = rng.uniform(0.1, 0.9) * W, rng.uniform(0.1, 0.8) * horizon, 0.08 * W
    y0, y1 = max(int(sy - 3 * sigma), 0), min(int(sy + 3 * sigma), horizon)
    x0, x1 = max(int(sx - 3 * sigma), 0), min(int(sx + 3 * sigma), W)
    gy, gx = np.ogrid[y0:y1, x0:x1]
    glow = np.exp(-((gx - sx) ** 2 + (gy - sy) ** 2) / (2 * sigma**2))
    img[y0:y1, x0:x1] += (glow[..., None] * np.array([90.0, 80.0, 40.0])).astype(np.float32)


def _draw_mountains_and_grid(
    rng: np.random.Generator, img: np.ndarray, horizon: int, sky_low, ground_far, variant: int, ss: int
) -> np.ndarray:
    """``img`` quantised to 8 bits with a mountain silhouette and a perspective ground grid drawn on it
    (as a new float32 array)."""
    H, W = img.shape[:2]
    canvas = Image.fromarray(_to_u8(img))
    draw = ImageDraw.Draw(canvas)
    # Mountain silhouette on the horizon (a random walk).
    n = 24
    xs = np.linspace(0, W, n)
    heights = np.cumsum(rng.normal(0, 0.03 * H, n))
    heights = horizon - np.abs(heights - heights.min()) - 0.02 * H
    mountain_colour = tuple(int(c * 0.6 + d * 0.4) for c, d in zip(sky_low, ground_far))
    draw.polygon([(0, horizon)] + [(float(x), float(y)) for x, y in zip(xs, heights)] + [(W, horizon)], fill=mountain_colour)
    # Perspective grid converging on a vanishing point on the horizon.
    vx = rng.uniform(0.3, 0.7) * W
    line_colour = _colour(rng, 150, 256) if variant % 2 else _colour(rng, 0, 80)
    for k in range(-12, 13):
        draw.line([(vx, horizon), (vx + k * W / 6, H)], fill=line_colour, width=2 * ss)
    for depth in range(1, 14):
        y = horizon + (H - horizon) * (1.0 / (1 + 0.35 * (14 - depth))) ** 0.8
        draw.line([(0, y), (W, y)], fill=line_colour, width=max(1, int(depth / 4)) * ss)
    return np.asarray(canvas, dtype=np.float32).copy()


def _add_fog(img: np.ndarray, horizon: int, sky_low) -> None:
    """Fade the ground of ``img`` in place to the horizon colour (a per-row factor)."""
    H = img.shape[0]
    rows = np.arange(H, dtype=np.float64)
    fog = (np.exp(-np.clip(rows - horizon, 0, None) / (0.12 * H)) * (rows >= horizon)).astype(np.float32)[:, None, None]
    img[horizon:] = img[horizon:] * (1 - fog[horizon:]) + np.asarray(sky_low, dtype=np.float32) * fog[horizon:]


def _light_and_half_vector(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random unit light direction and the Blinn half vector between it and the viewer (+z)."""
    light = np.array([rng.uniform(-0.6, 0.6), -rng.uniform(0.3, 0.8), 0.7])
    light /= np.linalg.norm(light)
    half = light + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    return light, half


def _draw_objects(rng: np.random.Generator, img: np.ndarray, horizon: int, light: np.ndarray, half: np.ndarray) -> None:
    """Spheres and boxes on the ground, drawn in place from far to near so near ones cover far ones."""
    H, W = img.shape[:2]
    objects = []
    for _ in range(int(rng.integers(3, 7))):
        cy = rng.uniform(horizon + 0.08 * (H - horizon), H * 0.98)
        depth = (cy - horizon) / (H - horizon)  # 0 at the horizon, 1 at the bottom edge
        objects.append((cy, depth, rng.uniform(0.03, 0.1) * W * (0.3 + depth)))
    for cy, _depth, r in sorted(objects):
        cx = rng.uniform(0.05, 0.95) * W
        base = np.asarray(_colour(rng, 40, 256), dtype=np.float64)
        if rng.random() < 0.65:
            _draw_sphere(rng, img, cx, cy, r, base, light, half)
        else:
            _draw_box(img, cx, cy, r, base)


def _draw_sphere(
    rng: np.random.Generator, img: np.ndarray, cx: float, cy: float, r: float, base: np.ndarray, light: np.ndarray, half: np.ndarray
) -> None:
    """A Phong-shaded sphere resting on the ground at (cx, cy), with a soft shadow; each touches only its
    bounding box of ``img``."""
    H, W = img.shape[:2]
    y0, y1 = max(int(cy - 0.8 * r), 0), min(int(cy + 0.8 * r) + 1, H)
    x0, x1 = max(int(cx - 3.3 * r), 0), min(int(cx + 3.9 * r) + 1, W)
    gy, gx = np.ogrid[y0:y1, x0:x1]
    shadow = np.exp(-(((gx - cx - 0.3 * r) / (1.2 * r)) ** 2 + ((gy - cy) / (0.25 * r)) ** 2))
    img[y0:y1, x0:x1] *= (1 - 0.55 * shadow)[..., None].astype(np.float32)
    scy = cy - r
    y0, y1 = max(int(scy - r) - 1, 0), min(int(scy + r) + 2, H)
    x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, W)
    gy, gx = np.ogrid[y0:y1, x0:x1]
    dx, dy = np.broadcast_arrays((gx - cx) / r, (gy - scy) / r)
    inside = dx**2 + dy**2 < 1
    nz = np.sqrt(np.clip(1 - dx**2 - dy**2, 0, 1))
    normal = np.stack([dx, dy, nz], axis=-1)
    diffuse = np.clip(normal @ light, 0, 1)
    spec = np.clip(normal @ half, 0, 1) ** rng.uniform(20, 80)
    shade = base * (0.18 + 0.82 * diffuse)[..., None] + 255 * 0.7 * spec[..., None]
    img[y0:y1, x0:x1][inside] = shade[inside]


def _draw_box(img: np.ndarray, cx: float, cy: float, r: float, base: np.ndarray) -> None:
    """A flat-shaded box standing on the ground at (cx, cy): front, top and side faces with different
    brightness, drawn in place within its bounding box."""
    H, W = img.shape[:2]
    s = 1.6 * r
    d = 0.45 * s
    front = [(cx - s / 2, cy - s), (cx + s / 2, cy - s), (cx + s / 2, cy), (cx - s / 2, cy)]
    top = [(cx - s / 2, cy - s), (cx - s / 2 + d, cy - s - d), (cx + s / 2 + d, cy - s - d), (cx + s / 2, cy - s)]
    side = [(cx + s / 2, cy - s), (cx + s / 2 + d, cy - s - d), (cx + s / 2 + d, cy - d), (cx + s / 2, cy)]
    y0, y1 = max(int(cy - s - d) - 1, 0), min(int(cy) + 2, H)
    x0, x1 = max(int(cx - s / 2) - 1, 0), min(int(cx + s / 2 + d) + 2, W)
    if y1 <= y0 or x1 <= x0:
        return
    for poly, k in ((front, 0.75), (top, 1.0), (side, 0.45)):
        mask = Image.new("1", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(mask).polygon([(px - x0, py - y0) for px, py in poly], fill=1)
        img[y0:y1, x0:x1][np.asarray(mask)] = np.minimum(255, base * k).astype(np.float32)


def _random_polygon(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    n = int(rng.integers(3, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.5, 1.0, n)
    return [(float(cx + rr * np.cos(a)), float(cy + rr * np.sin(a))) for a, rr in zip(angles, radii)]


def _gen_art(rng: np.random.Generator, h: int, w: int, variant: int) -> np.ndarray:
    ss = 1 if variant % 2 == 0 else 3  # even variants: hard aliased edges (pixel-art-like); odd: anti-aliased
    H, W = h * ss, w * ss
    palette = [_colour(rng) for _ in range(int(rng.integers(4, 8)))]
    outline = _colour(rng, 0, 60)
    canvas = Image.new("RGB", (W, H), palette[0])
    draw = ImageDraw.Draw(canvas)
    # A two-tone background split.
    draw.polygon([(0, H * rng.uniform(0.3, 0.7)), (W, H * rng.uniform(0.3, 0.7)), (W, H), (0, H)], fill=palette[1])
    for _ in range(int(rng.integers(10, 18))):
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        r = rng.uniform(0.04, 0.2) * min(W, H)
        fill = palette[int(rng.integers(0, len(palette)))]
        width = int(rng.integers(1, 5)) * ss
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.polygon(_random_polygon(rng, cx, cy, r), fill=fill, outline=outline, width=width)
        elif shape == 1:
            box = [cx - r, cy - r * rng.uniform(0.5, 1.0), cx + r, cy + r * rng.uniform(0.5, 1.0)]
            draw.ellipse(box, fill=fill, outline=outline, width=width)
            # Cel-shading: a darker crescent inside the ellipse.
            dark = tuple(int(c * 0.65) for c in fill)
            inner = [box[0] + 0.35 * r, box[1] + 0.35 * r, box[2] - 0.05 * r, box[3] - 0.05 * r]
            draw.chord(inner, start=20, end=160, fill=dark)
        else:
            box = [cx - r, cy - 0.6 * r, cx + r, cy + 0.6 * r]
            draw.rounded_rectangle(box, radius=r * 0.25, fill=fill, outline=outline, width=width)
    # Brush strokes: smooth random curves with a round joint.
    for _ in range(int(rng.integers(3, 7))):
        t = np.linspace(0, 1, 40)
        x0, y0 = rng.uniform(0, W), rng.uniform(0, H)
        ax, ay = rng.uniform(0.1, 0.4) * W, rng.uniform(0.1, 0.4) * H
        fx, fy, ph = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
        pts = [(float(x0 + ax * np.sin(2 * np.pi * fx * s + ph)), float(y0 + ay * np.sin(2 * np.pi * fy * s))) for s in t]
        draw.line(pts, fill=palette[int(rng.integers(0, len(palette)))], width=int(rng.integers(2, 12)) * ss, joint="curve")
    # A few thin hatching lines (hard, high-frequency edges).
    hx, hy = rng.uniform(0, W * 0.7), rng.uniform(0, H * 0.7)
    for k in range(12):
        off = k * 5 * ss
        draw.line([(hx + off, hy), (hx + off + 0.2 * W, hy + 0.2 * H)], fill=outline, width=ss)
    if ss > 1:
        canvas = canvas.reduce(ss)
    return np.asarray(canvas)


def _gen_text(rng: np.random.Generator, h: int, w: int, variant: int) -> np.ndarray:
    dark = variant % 2 == 1
    bg = _colour(rng, 15, 50) if dark else _colour(rng, 225, 256)
    fg = _colour(rng, 210, 256) if dark else _colour(rng, 0, 45)
    accent = _colour(rng, 40, 230)
    canvas = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(canvas)
    bar = max(18, h // 14)
    draw.rectangle([0, 0, w, bar], fill=accent)
    draw.text((8, bar // 2), _sentence(rng, 3), font=_font(max(10, bar * 2 // 3)), fill=(255, 255, 255), anchor="lm")
    for i, sym in enumerate(("x", "[]", "_")):
        draw.text((w - 16 - 22 * i, bar // 2), sym, font=_font(12), fill=(255, 255, 255), anchor="mm")
    side = w // 5
    draw.rectangle([0, bar, side, h], fill=tuple(int(c * 0.92) for c in bg))
    draw.line([(side, bar), (side, h)], fill=tuple(int(c * 0.7) for c in bg), width=1)
    y = bar + 8
    for _ in range(max(3, (h - bar) // 28)):  # sidebar menu with icons
        if y > h - 16:
            break
        draw.ellipse([6, y, 16, y + 10], fill=accent)
        draw.text((22, y + 5), _sentence(rng, 1), font=_font(11), fill=fg, anchor="lm")
        y += 24
    x0 = side + 12
    y = bar + 8
    for size in (44, 34, 26, 20, 16, 13, 11, 9):  # text at several sizes, largest first
        font = _font(size)
        if y + size > h - 64:  # leave room for the buttons and check boxes below
            break
        draw.text((x0, y), _sentence(rng, int(rng.integers(3, 8))), font=font, fill=fg)
        y += int(size * 1.35)
    # Buttons with labels, a row of check boxes, and a table with thin rules.
    by = min(y + 6, h - 40)
    bx = x0
    for _ in range(3):
        label = _sentence(rng, 1).upper()
        bw = 14 + 9 * len(label)
        if bx + bw > w - 8:
            break
        draw.rounded_rectangle([bx, by, bx + bw, by + 26], radius=6, fill=accent, outline=fg, width=1)
        draw.text((bx + bw / 2, by + 13), label, font=_font(13), fill=(255, 255, 255), anchor="mm")
        bx += bw + 10
    cy = by + 34
    if cy + 14 < h:
        for i in range(4):
            cx = x0 + i * 90
            if cx + 80 > w:
                break
            draw.rectangle([cx, cy, cx + 12, cy + 12], outline=fg, width=1)
            if rng.random() < 0.5:
                draw.line([(cx + 2, cy + 6), (cx + 5, cy + 10), (cx + 11, cy + 2)], fill=accent, width=2)
            draw.text((cx + 18, cy + 6), _sentence(rng, 1), font=_font(11), fill=fg, anchor="lm")
    ty = cy + 24
    rows, cols = 6, 4
    cw = (w - x0 - 12) // cols
    for r in range(rows):
        yy = ty + r * 18
        if yy + 18 > h - 2:
            break
        draw.line([(x0, yy), (x0 + cols * cw, yy)], fill=tuple(int(c * 0.6 + a * 0.4) for c, a in zip(bg, fg)), width=1)
        for c in range(cols):
            text = f"{rng.uniform(0, 1000):.2f}" if r and c else _sentence(rng, 1)
            draw.text((x0 + c * cw + 4, yy + 9), text, font=_font(10), fill=fg, anchor="lm")
    return np.asarray(canvas)


def _gen_gradient(rng: np.random.Generator, h: int, w: int, variant: int) -> np.ndarray:
    y, x = _grid(h, w)
    img = np.zeros((h, w, 3), dtype=np.float64)
    regions = [(0, h, 0, w)] if variant % 2 else [(0, h // 2, 0, w // 2), (0, h // 2, w // 2, w), (h // 2, h, 0, w // 2), (h // 2, h, w // 2, w)]
    for i, (y0, y1, x0, x1) in enumerate(regions):
        ry, rx = y[y0:y1, x0:x1], x[y0:y1, x0:x1]
        kind = (i + variant) % 5
        c0 = _colour(rng)
        c1 = _contrasting(rng, c0)
        c2 = _contrasting(rng, c1)
        if kind == 0:  # linear, three stops, random angle
            a = rng.uniform(0, np.pi)
            t = rx * np.cos(a) + ry * np.sin(a)
            t = (t - t.min()) / max(np.ptp(t), 1e-9)
            out = np.where((t < 0.5)[..., None], _mix(c0, c1, 2 * t), _mix(c1, c2, 2 * t - 1))
        elif kind == 1:  # radial
            cy, cx = rng.uniform(ry.min(), ry.max()), rng.uniform(rx.min(), rx.max())
            dist = np.hypot(ry - cy, rx - cx)
            t = np.clip(dist / (dist.max() * rng.uniform(0.6, 1.0)), 0, 1)
            out = _mix(c0, c1, t)
        elif kind == 2:  # conic: a hue-like sweep around a centre
            ang = np.arctan2(ry - ry.mean(), rx - rx.mean())
            out = np.stack([127.5 + 127.5 * np.cos(ang + k * 2 * np.pi / 3) for k in range(3)], axis=-1)
        elif kind == 3:  # bilinear blend of four corner colours
            ty = (ry - ry.min()) / max(np.ptp(ry), 1e-9)
            tx = (rx - rx.min()) / max(np.ptp(rx), 1e-9)
            c3 = _contrasting(rng, c2)
            out = _mix(c0, c1, tx) * (1 - ty[..., None]) + _mix(c2, c3, tx) * ty[..., None]
        else:  # smooth colour field (low-frequency sinusoids)
            out = np.zeros(ry.shape + (3,))
            for ch in range(3):
                f = rng.uniform(1, 4, 2)
                p = rng.uniform(0, 2 * np.pi, 2)
                out[..., ch] = 127.5 + 60 * np.sin(2 * np.pi * f[0] * ry + p[0]) + 60 * np.sin(2 * np.pi * f[1] * rx + p[1])
        img[y0:y1, x0:x1] = out
    return _to_u8(img)


def _texture_tile(rng: np.random.Generator, th: int, tw: int, kind: int) -> np.ndarray:
    yy, xx = np.mgrid[0:th, 0:tw].astype(np.float64)
    first = _colour(rng)
    c0 = np.asarray(first, dtype=np.float64)
    c1 = np.asarray(_contrasting(rng, first, 100.0), dtype=np.float64)
    if kind == 0:  # white noise around a colour, colour or mono
        mono = rng.random() < 0.5
        noise = rng.normal(0, rng.uniform(10, 60), (th, tw, 1 if mono else 3))
        return c0 + noise
    if kind == 1:  # fBm: octaves of smooth noise
        t = sum(_smooth_noise(rng, th, tw, 2**o) / 2 ** (o * 0.8) for o in range(1, 7))
        t = (t - t.min()) / max(np.ptp(t), 1e-9)
        return _mix(c0, c1, t)
    if kind == 2:  # stripes at a period of 2-16 px and a random angle, square or sine profile
        period = float(rng.choice([2, 3, 4, 6, 8, 12, 16]))
        a = float(rng.choice([0, np.pi / 4, np.pi / 2, rng.uniform(0, np.pi)]))
        phase = 2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period
        t = 0.5 + 0.5 * np.sin(phase)
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float64)
        return _mix(c0, c1, t)
    if kind == 3:  # checkerboard with 1-16 px cells
        cell = int(rng.choice([1, 2, 3, 4, 8, 16]))
        t = ((yy // cell + xx // cell) % 2).astype(np.float64)
        return _mix(c0, c1, t)
    if kind == 4:  # woven fabric: warp/weft threads alternating over-under, with fibre noise
        p = int(rng.integers(4, 9))
        iy, ix = yy // p, xx // p
        over = (iy + ix) % 2 == 0
        warp = 0.55 + 0.45 * np.cos(np.pi * ((xx % p) / p - 0.5))
        weft = 0.55 + 0.45 * np.cos(np.pi * ((yy % p) / p - 0.5))
        shade = np.where(over, warp, weft) + rng.normal(0, 0.05, (th, tw))
        base = np.where(over[..., None], c0, c1)
        return base * shade[..., None]
    if kind == 5:  # zone plate: a chirp from low to near-Nyquist frequency
        r2 = (yy - th / 2) ** 2 + (xx - tw / 2) ** 2
        k = np.pi / max(th, tw) * rng.uniform(0.8, 1.0)
        return _mix(c0, c1, 0.5 + 0.5 * np.cos(k * r2))
    # kind 6: halftone dots on a grid
    p = int(rng.integers(3, 10))
    r = rng.uniform(0.25, 0.5) * p
    d = np.hypot(yy % p - p / 2, xx % p - p / 2)
    return _mix(c0, c1, (d < r).astype(np.float64))


def _gen_texture(rng: np.random.Generator, h: int, w: int, variant: int) -> np.ndarray:
    nx, ny = 4, max(2, h // 128)
    th, tw = h // ny, w // nx
    img = np.zeros((h, w, 3), dtype=np.float64)
    kinds = rng.permutation(np.resize(np.arange(7), nx * ny))
    for j in range(ny):
        for i in range(nx):
            y1 = h if j == ny - 1 else (j + 1) * th
            x1 = w if i == nx - 1 else (i + 1) * tw
            img[j * th : y1, i * tw : x1] = _texture_tile(rng, y1 - j * th, x1 - i * tw, int(kinds[j * nx + i]))
    return _to_u8(img)


GENERATORS: dict[str, Callable[[np.random.Generator, int, int, int], np.ndarray]] = {
    "render": _gen_render,
    "art": _gen_art,
    "text": _gen_text,
    "gradient": _gen_gradient,
    "texture": _gen_texture,
}
"""The generator of each generated kind (all of `trainers.builtin.KINDS` but ``photo``)."""
