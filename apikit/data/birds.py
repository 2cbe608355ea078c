"""The birds of apikit's generated data set: confusable species in groups (each differs from its group's base
form in one small trait) and how one bird is drawn, with CUB's 15 part locations. `apikit.data.synthetic`
writes them to disk in CUB-200-2011's layout."""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["VERSION", "PART_NAMES", "PART_IDS", "TRAITS", "Species", "species", "group_sizes", "draw"]

VERSION = 1  # bump whenever the drawing changes, so that cached sets are redrawn
SUPERSAMPLE = 2  # draw at 2x, then box-downscale: antialiased edges for little time

# CUB-200-2011's 15 parts (parts/parts.txt); a part's id is its 1-based position here.
PART_NAMES = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg",
              "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat")
PART_IDS = {name: i + 1 for i, name in enumerate(PART_NAMES)}

# The small attributes that set a species apart within its group, and the CUB parts that show them.
TRAITS = {
    "bill_length": ("beak",),
    "bill_curve": ("beak",),
    "crown_patch": ("crown", "forehead"),
    "eye_ring": ("left eye", "right eye"),
    "wing_bar": ("left wing", "right wing"),
    "tail_shape": ("tail",),
    "girth": ("belly", "breast"),
}
TAIL_VARIANT = {"square": "forked", "rounded": "pointed"}  # base form -> its variant

FAMILIES = ("Tern", "Sparrow", "Warbler", "Gull", "Wren", "Vireo", "Finch", "Flycatcher",
            "Thrasher", "Grebe", "Oriole", "Swallow")
BILL_COLORS = ((40, 38, 36), (226, 132, 34), (222, 196, 62), (146, 118, 92))
LEG_COLORS = ((45, 40, 38), (214, 120, 48), (150, 128, 104))
CROWN_COLORS = ((24, 22, 22), (196, 40, 30), (238, 206, 48), (244, 242, 236))
PALE = (238, 236, 222)  # eye ring and wing bar
EYE = (14, 14, 14)
BRANCH = (92, 66, 44)


@dataclass(frozen=True)
class Species:
    """One synthetic class: its CUB folder name, its group, and the plumage and shape it is drawn with."""
    name: str
    group: int
    trait: str | None      # what sets it apart from its group's base form; None for the base form
    hue: float             # upperparts hue in [0, 1)
    saturation: float
    value: float
    under_value: float     # lightness of throat, breast and belly
    size: float            # body length relative to the mean bird
    bill_length: float     # in body lengths
    bill_curve: float      # droop of the bill tip, in bill lengths
    bill_color: tuple
    leg_color: tuple
    crown_patch: bool
    crown_color: tuple
    eye_ring: bool
    wing_bar: bool
    tail_shape: str        # "square" | "rounded" (base forms), "forked" | "pointed" (variants)
    girth: float           # body height over body length


def _letters(g: int) -> str:
    """Spreadsheet-style group letters: A..Z, AA, AB, ..."""
    s = ""
    g += 1
    while g:
        g, r = divmod(g - 1, 26)
        s = chr(65 + r) + s
    return s


def group_sizes(n_classes: int) -> list[int]:
    """Split n_classes into groups of at most 4, as even as possible (24 -> 6 x 4, 6 -> 2 x 3)."""
    n_groups = -(-n_classes // 4)
    base, extra = divmod(n_classes, n_groups)
    return [base + (g < extra) for g in range(n_groups)]


def _base_form(group: int, rng: np.random.Generator) -> Species:
    """A group's base form: what all its species share."""
    pick = lambda options: tuple(options[rng.integers(len(options))])  # noqa: E731
    return Species(
        name="", group=group, trait=None,
        hue=(0.07 + group * 0.381966) % 1.0,  # golden-ratio steps keep any number of group hues apart
        saturation=float(rng.uniform(0.35, 0.6)), value=float(rng.uniform(0.45, 0.75)),
        under_value=float(rng.uniform(0.6, 0.95)), size=float(rng.uniform(0.88, 1.12)),
        bill_length=float(rng.uniform(0.16, 0.22)), bill_curve=0.0,
        bill_color=pick(BILL_COLORS), leg_color=pick(LEG_COLORS),
        crown_patch=bool(rng.random() < 0.3), crown_color=pick(CROWN_COLORS),
        eye_ring=bool(rng.random() < 0.3), wing_bar=bool(rng.random() < 0.3),
        tail_shape=str(rng.choice(sorted(TAIL_VARIANT))), girth=float(rng.uniform(0.46, 0.52)))


def _vary(base: Species, trait: str) -> Species:
    """The base form with one small part changed."""
    if trait == "bill_length":
        return replace(base, bill_length=base.bill_length * 1.6)
    if trait == "bill_curve":
        return replace(base, bill_curve=0.5)
    if trait == "crown_patch":
        return replace(base, crown_patch=not base.crown_patch)
    if trait == "eye_ring":
        return replace(base, eye_ring=not base.eye_ring)
    if trait == "wing_bar":
        return replace(base, wing_bar=not base.wing_bar)
    if trait == "tail_shape":
        return replace(base, tail_shape=TAIL_VARIANT[base.tail_shape])
    if trait == "girth":
        return replace(base, girth=base.girth * 1.3)
    raise ValueError(f"trait must be one of {sorted(TRAITS)}, got {trait!r}")


def species(n_classes: int = 24, seed: int = 0) -> list[Species]:
    """The classes, group by group: each group's first species is its base form, each other one varies one trait."""
    rng, out = np.random.default_rng([seed]), []
    for g, n in enumerate(group_sizes(n_classes)):
        base = _base_form(g, rng)
        traits = [str(t) for t in rng.choice(sorted(TRAITS), size=n - 1, replace=False)]
        for k, trait in enumerate([None] + traits):
            spec = base if trait is None else _vary(base, trait)
            name = f"{len(out) + 1:03d}.Group_{_letters(g)}_{FAMILIES[g % len(FAMILIES)]}_{k + 1}"
            out.append(replace(spec, name=name, trait=trait))
    return out


# ---------------------------------------------------------------- drawing
# A bird is drawn in a canonical frame: facing right (so its right side faces us), body length 1,
# y pointing down, the top of the back at y = -0.25. A Pose maps that frame into the image.

HEAD = np.array([0.42, -0.30])
HEAD_R = 0.16
EYE_AT = HEAD + [0.07, -0.03]
TAIL_LEN = 0.42


def _hsv(h: float, s: float, v: float) -> tuple:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


@lru_cache(maxsize=None)
def _circle(n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _ellipse(centre, rx: float, ry: float, angle: float = 0.0, n: int = 28) -> np.ndarray:
    """Polygon points of an ellipse (so that it rotates and flips with the pose)."""
    c, s = np.cos(angle), np.sin(angle)
    return _circle(n) @ np.array([[rx * c, rx * s], [-ry * s, ry * c]]) + centre


def _arc(centre, r: float, a0: float, a1: float, n: int = 10) -> np.ndarray:
    t = np.deg2rad(np.linspace(a0, a1, n))
    return np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], 1)


@dataclass
class Pose:
    """Canonical bird frame -> hi-res pixel coordinates: flip, tilt, rotation, scale and position."""
    matrix: np.ndarray
    offset: np.ndarray
    flip: bool
    length: float  # body length in pixels

    def __call__(self, pts) -> np.ndarray:
        return np.asarray(pts, dtype=float) @ self.matrix.T + self.offset


def _pose(size: float, canvas: int, rng: np.random.Generator) -> Pose:
    """A random pose; its body length also carries the species' size."""
    length = canvas * rng.uniform(0.34, 0.46) * size
    angle = np.deg2rad(rng.uniform(-25, 25))
    aspect = rng.uniform(0.85, 1.1)  # slight tilt towards or away from the camera
    flip = bool(rng.random() < 0.5)
    c, s = np.cos(angle), np.sin(angle)
    matrix = length * np.array([[c, -s], [s, c]]) @ np.diag([-1.0 if flip else 1.0, aspect])
    offset = canvas * (0.5 + rng.uniform(-0.12, 0.12, 2))
    return Pose(matrix, offset, flip, length)


def _individual(spec: Species, rng: np.random.Generator) -> Species:
    """One bird of a species: plumage and shape jittered within the species' range."""
    return replace(
        spec,
        hue=(spec.hue + rng.normal(0, 0.02)) % 1.0,
        saturation=spec.saturation + rng.normal(0, 0.05),
        value=spec.value + rng.normal(0, 0.05),
        under_value=spec.under_value + rng.normal(0, 0.04),
        size=spec.size * rng.uniform(0.95, 1.05),
        bill_length=spec.bill_length * rng.uniform(0.9, 1.1),
        bill_curve=spec.bill_curve + rng.uniform(-0.05, 0.05),
        girth=spec.girth * rng.uniform(0.96, 1.04))


def _body(bird: Species) -> tuple[np.ndarray, float]:
    """Body centre and half-height; a fatter bird hangs lower, its back stays put."""
    ry = bird.girth / 2
    return np.array([0.0, ry - 0.25]), ry


def _bill_centreline(bird: Species, t) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    x = HEAD[0] + HEAD_R * 0.9 + t * bird.bill_length
    y = HEAD[1] + 0.01 + bird.bill_curve * bird.bill_length * t ** 2
    return np.stack([x, y], -1)


def _wing(bird: Species) -> tuple[np.ndarray, float, float, float]:
    """The folded wing: centre, half-length, half-width and angle."""
    centre, ry = _body(bird)
    shoulder, tip = centre + [0.22, -0.35 * ry], centre + [-0.6, -0.05 * ry]
    d = shoulder - tip
    return (shoulder + tip) / 2, float(np.hypot(*d)) / 2, 0.13, float(np.arctan2(d[1], d[0]))


def _tail_root(bird: Species) -> np.ndarray:
    centre, ry = _body(bird)
    return centre + [-0.40, -0.25 * ry]


def _legs(bird: Species) -> tuple[np.ndarray, np.ndarray]:
    """Hip and foot of the near leg; the far leg is the same shifted back."""
    centre, ry = _body(bird)
    hip = centre + [0.06, 0.85 * ry]
    return hip, hip + [0.02, 0.15 + 0.15 * ry]


def part_points(bird: Species, tail_angle: float = 0.0, flip: bool = False) -> np.ndarray:
    """Canonical (x, y) of CUB's 15 parts, in PART_NAMES order; the near side is the right one unless flipped."""
    centre, ry = _body(bird)
    wing_centre = _wing(bird)[0]
    hip, foot = _legs(bird)
    near_leg = hip + 0.7 * (foot - hip)
    far_leg = near_leg - [0.12, 0.0]
    direction = np.array([-np.cos(tail_angle), np.sin(tail_angle)])
    at = {
        "back": centre + [-0.08, -0.8 * ry],
        "beak": _bill_centreline(bird, 0.6),
        "belly": centre + [0.02, 0.7 * ry],
        "breast": centre + [0.32, 0.25 * ry],
        "crown": HEAD + 0.8 * HEAD_R * np.array([np.cos(np.deg2rad(-95)), np.sin(np.deg2rad(-95))]),
        "forehead": HEAD + 0.85 * HEAD_R * np.array([0.707, -0.707]),
        "left eye": EYE_AT, "right eye": EYE_AT,
        "left leg": near_leg if flip else far_leg, "right leg": far_leg if flip else near_leg,
        "left wing": wing_centre, "right wing": wing_centre,
        "nape": HEAD + 0.9 * HEAD_R * np.array([-0.866, -0.5]),
        "tail": _tail_root(bird) + 0.65 * TAIL_LEN * direction,
        "throat": HEAD + [0.06, 0.12],
    }
    return np.array([at[name] for name in PART_NAMES])


# Parts on the far side of a side-on bird: hidden, as CUB marks them.
FAR_PARTS = {False: ("left eye", "left wing"), True: ("right eye", "right wing")}  # keyed by flip


def _poly(d: ImageDraw.ImageDraw, pose: Pose, pts, fill) -> np.ndarray:
    xy = pose(pts)
    d.polygon(xy.ravel().tolist(), fill=fill)
    return xy


def _line(d: ImageDraw.ImageDraw, pose: Pose, pts, fill, width: float) -> np.ndarray:
    xy = pose(pts)
    d.line(xy.ravel().tolist(), fill=fill, width=max(1, int(round(width * pose.length))), joint="curve")
    return xy


def draw_perch(d, pose, bird):
    """A branch under the feet, in the bird's frame."""
    y = _legs(bird)[1][1] + 0.03
    _line(d, pose, [[-3.0, y], [3.0, y]], BRANCH, 0.07)


def draw_legs(d, pose, bird, near: bool) -> np.ndarray:
    """One leg with two toes; the far one sits further back and in shade."""
    hip, foot = _legs(bird)
    shift = np.array([0.0 if near else -0.12, 0.0])
    color = bird.leg_color if near else tuple(int(c * 0.7) for c in bird.leg_color)
    hip, foot = hip + shift, foot + shift
    a = _line(d, pose, [hip, foot], color, 0.025)
    b = _line(d, pose, [foot + [-0.05, 0.0], foot, foot + [0.07, 0.01]], color, 0.02)
    return np.concatenate([a, b])


def draw_tail(d, pose, bird, tail_angle: float) -> np.ndarray:
    """Tail fanned behind the body; its outline is the tail_shape trait."""
    n = TAIL_LEN
    outline = {
        "square": [(0, -0.06), (n, -0.11), (n, 0.11), (0, 0.06)],
        "rounded": [(0, -0.06), (n - 0.05, -0.11)] + [tuple(p) for p in _arc((n - 0.05, 0), 0.11, -90, 90, 9)]
                   + [(n - 0.05, 0.11), (0, 0.06)],
        "forked": [(0, -0.06), (n + 0.06, -0.14), (n - 0.15, 0.0), (n + 0.06, 0.14), (0, 0.06)],
        "pointed": [(0, -0.06), (n - 0.10, -0.09), (n + 0.08, 0.0), (n - 0.10, 0.09), (0, 0.06)],
    }[bird.tail_shape]
    u, v = np.array(outline, dtype=float).T
    direction = np.array([-np.cos(tail_angle), np.sin(tail_angle)])
    normal = np.array([direction[1], -direction[0]])
    pts = _tail_root(bird) + u[:, None] * direction + v[:, None] * normal
    return _poly(d, pose, pts, _hsv(bird.hue, bird.saturation, bird.value * 0.65))


def draw_body(d, pose, bird) -> np.ndarray:
    """Pale underparts with the mantle over the top half; its depth is the girth trait."""
    centre, ry = _body(bird)
    body = _ellipse(centre, 0.5, ry, n=36)
    xy = _poly(d, pose, body, _hsv(bird.hue, bird.saturation * 0.35, bird.under_value))
    top = body[body[:, 1] <= centre[1] + 1e-9]
    _poly(d, pose, top[np.argsort(np.arctan2(top[:, 1] - centre[1], top[:, 0] - centre[0]))],
          _hsv(bird.hue, bird.saturation, bird.value))
    return xy


def draw_wing(d, pose, bird) -> np.ndarray:
    """The near folded wing, with a pale bar across it if the species has one."""
    centre, half_len, half_wid, angle = _wing(bird)
    xy = _poly(d, pose, _ellipse(centre, half_len, half_wid, angle), _hsv(bird.hue, bird.saturation, bird.value * 0.75))
    if bird.wing_bar:
        axis = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([axis[1], -axis[0]])
        corners = []
        for u, side in ((0.02, 1), (0.3, 1), (0.3, -1), (0.02, -1)):  # towards the shoulder, edge to edge
            w = 0.85 * half_wid * np.sqrt(1 - u * u)
            corners.append(centre + u * half_len * axis + side * w * normal)
        _poly(d, pose, corners, PALE)
    return xy


def draw_head(d, pose, bird) -> np.ndarray:
    """Head and neck in the mantle colour, with a pale throat."""
    upper = _hsv(bird.hue, bird.saturation, bird.value)
    a = _poly(d, pose, _ellipse(HEAD + [-0.1, 0.12], 0.14, 0.13), upper)
    _poly(d, pose, _ellipse(HEAD + [0.05, 0.12], 0.08, 0.06, 0.3), _hsv(bird.hue, bird.saturation * 0.35, bird.under_value))
    b = _poly(d, pose, _ellipse(HEAD, HEAD_R, HEAD_R), upper)
    return np.concatenate([a, b])


def draw_crown(d, pose, bird):
    """A coloured cap over crown and forehead (the crown_patch trait)."""
    if bird.crown_patch:
        outer = _arc(HEAD, HEAD_R * 1.01, -160, -35, 12)
        inner = _arc(HEAD, HEAD_R * 0.55, -35, -160, 12)
        _poly(d, pose, np.concatenate([outer, inner]), bird.crown_color)


def draw_eye(d, pose, bird):
    """The near eye, with a pale ring round it if the species has one (the eye_ring trait)."""
    if bird.eye_ring:
        _poly(d, pose, _ellipse(EYE_AT, 0.07, 0.07, n=16), PALE)
    _poly(d, pose, _ellipse(EYE_AT, 0.035, 0.035, n=12), EYE)


def draw_beak(d, pose, bird) -> np.ndarray:
    """The bill: tapering along a centreline that droops with bill_curve."""
    t = np.linspace(0, 1, 7)
    mid = _bill_centreline(bird, t)
    half = (0.042 * (1 - t))[:, None] * np.array([0.0, 1.0])
    return _poly(d, pose, np.concatenate([mid - half, (mid + half)[::-1]]), bird.bill_color)


def _background(canvas: int, rng: np.random.Generator) -> Image.Image:
    """Gradient sky or foliage, blotchy texture and clutter: everything that is not the bird."""
    c0 = np.array(_hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.35, 0.95)), np.float32)
    c1 = np.array(_hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.35, 0.95)), np.float32)
    a = rng.uniform(0, 2 * np.pi)
    low = 32  # both layers are smooth: build them small and let the resize interpolate
    ramp = np.arange(low, dtype=np.float32) / low - 0.5
    t = np.clip(0.5 + ramp[None, :] * np.cos(a) + ramp[:, None] * np.sin(a), 0, 1)[..., None]
    blotch = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((low, low), Image.BICUBIC))
    img = c0 * (1 - t) + c1 * t + (blotch.astype(np.float32) - 128) * rng.uniform(0.05, 0.2)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((canvas, canvas), Image.BICUBIC)
    d = ImageDraw.Draw(out)
    for _ in range(rng.integers(2, 9)):
        color = _hsv(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.9))
        if rng.random() < 0.5:  # a twig or grass stroke
            pts = canvas * rng.uniform(-0.1, 1.1, (3, 2))
            d.line(pts.ravel().tolist(), fill=color, width=int(canvas * rng.uniform(0.006, 0.03)), joint="curve")
        else:  # a blob: a leaf, a stone, another bird far away
            e = _ellipse(canvas * rng.uniform(0, 1, 2), *(canvas * rng.uniform(0.02, 0.1, 2)), rng.uniform(0, np.pi), n=16)
            d.polygon(e.ravel().tolist(), fill=color)
    return out


def _occlude(d: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, pose: Pose, canvas: int, rng: np.random.Generator):
    """A leafy twig in front of the bird, drawn into the image and into the occlusion mask."""
    anchor = pose([[0.0, -0.1]])[0] + pose.length * rng.normal(0, 0.6, 2)
    start = canvas * np.array([rng.choice([-0.05, 1.05]), rng.uniform(0, 1)])
    if rng.random() < 0.5:
        start = start[::-1]
    width = max(1, int(pose.length * rng.uniform(0.03, 0.07)))
    for dd, fill in ((d, BRANCH), (mask, 255)):
        dd.line([*start, *anchor], fill=fill, width=width)
    for _ in range(rng.integers(1, 5)):
        centre = anchor + pose.length * rng.normal(0, 0.2, 2)
        leaf = _ellipse(centre, pose.length * rng.uniform(0.1, 0.25), pose.length * rng.uniform(0.05, 0.1),
                        rng.uniform(0, np.pi), n=16).ravel().tolist()
        d.polygon(leaf, fill=_hsv(rng.uniform(0.2, 0.4), rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.7)))
        mask.polygon(leaf, fill=255)


def _light(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast, colour cast and sensor noise."""
    a = np.asarray(img, np.float32)
    mean = a.mean()
    a = (a - mean) * np.float32(rng.uniform(0.7, 1.2)) + mean * np.float32(rng.uniform(0.75, 1.2))
    a = a * rng.uniform(0.88, 1.12, 3).astype(np.float32) + rng.uniform(0, 5) * rng.standard_normal(a.shape, np.float32)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))


def draw(spec: Species, size: int, rng: np.random.Generator) -> tuple[Image.Image, tuple, np.ndarray]:
    """One image of the species: (image, bird bbox (x, y, w, h), parts as (x, y, visible) rows in PART_NAMES order)."""
    canvas = size * SUPERSAMPLE
    bird = _individual(spec, rng)
    pose = _pose(bird.size, canvas, rng)
    tail_angle = np.deg2rad(rng.uniform(-15, 10))
    img = _background(canvas, rng)
    d = ImageDraw.Draw(img)
    if rng.random() < 0.75:
        draw_perch(d, pose, bird)
    outline = [draw_legs(d, pose, bird, near=False), draw_tail(d, pose, bird, tail_angle), draw_body(d, pose, bird),
               draw_wing(d, pose, bird), draw_head(d, pose, bird)]
    draw_crown(d, pose, bird)
    draw_eye(d, pose, bird)
    outline += [draw_beak(d, pose, bird), draw_legs(d, pose, bird, near=True)]
    mask = Image.new("L", (canvas, canvas), 0)
    if rng.random() < 0.5:
        _occlude(d, ImageDraw.Draw(mask), pose, canvas, rng)
    img = _light(img.reduce(SUPERSAMPLE), rng)

    lo = np.clip(np.concatenate(outline).min(0) / SUPERSAMPLE, 0, size)
    hi = np.clip(np.concatenate(outline).max(0) / SUPERSAMPLE, 0, size)
    x0, y0, x1, y1 = (round(float(v), 1) for v in (*lo, *hi))
    bbox = (x0, y0, round(x1 - x0, 1), round(y1 - y0, 1))

    xy = np.round(pose(part_points(bird, tail_angle, pose.flip)) / SUPERSAMPLE, 1)
    inside = (xy >= 0).all(1) & (xy < size).all(1)
    hidden = np.zeros(len(PART_NAMES), bool)
    hidden[[PART_IDS[n] - 1 for n in FAR_PARTS[pose.flip]]] = True
    m = np.asarray(mask)
    px = np.clip((xy * SUPERSAMPLE).astype(int), 0, canvas - 1)
    occluded = m[px[:, 1], px[:, 0]] > 0
    visible = inside & ~hidden & ~occluded
    parts = np.column_stack([np.where(visible[:, None], xy, 0.0), visible])  # CUB writes 0 0 0 for unseen parts
    return img, bbox, parts
