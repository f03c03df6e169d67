"""The reference frames, made deterministically from their names (numpy only).

No endoscopy frames with a licence that allows shipping them are on PyPI (the package's wheel has
none; its repository's test frames come from the ECA data set, not redistributable here), so
these are synthetic: the endoscopy demo's tissue generator (`models/endoscopy-synthetic-demo/
build.py` `frame()`, 64x64) scaled up bilinearly to the frame, darkened towards the rim as
endoscope optics are (vignetting), with sensor noise, inside a circle of known centre and radius
on black; plus frames with no circle (tissue to every edge) and dark frames.
"""

import importlib.util
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# name: (width, height, circle (cx, cy, r) or None, kind, seed)
FRAMES = {
    "circle-854x480-centred": (854, 480, (427.0, 240.0, 225.0), "tissue", 1),
    "circle-854x480-offset": (854, 480, (440.0, 236.0, 210.0), "tissue", 2),
    "circle-854x480-small": (854, 480, (420.0, 245.0, 190.0), "tissue", 3),
    "circle-1280x720-centred": (1280, 720, (640.0, 360.0, 340.0), "tissue", 4),
    "circle-1280x720-clipped": (1280, 720, (640.0, 360.0, 420.0), "tissue", 5),
    "circle-1280x720-polyp": (1280, 720, (655.0, 350.0, 330.0), "polyp", 6),
    "circle-1920x1080-centred": (1920, 1080, (960.0, 540.0, 500.0), "tissue", 7),
    "circle-720x576-sd": (720, 576, (360.0, 288.0, 270.0), "tissue", 8),
    "full-854x480": (854, 480, None, "tissue", 9),
    "full-1280x720": (1280, 720, None, "polyp", 10),
    "dark-854x480": (854, 480, None, "dark", 11),
    "dark-circle-1280x720": (1280, 720, (640.0, 360.0, 340.0), "dark", 12),
}


def demo_frame():
    path = os.path.join(HERE, "..", "endoscopy-synthetic-demo", "build.py")
    spec = importlib.util.spec_from_file_location("endoscopy_synthetic_demo_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.frame


def upscale(image, height, width):
    """Bilinear, pixel centres aligned (half-pixel), edges clamped."""
    src_h, src_w, _ = image.shape
    fy = np.clip((np.arange(height) + 0.5) * src_h / height - 0.5, 0, src_h - 1)
    fx = np.clip((np.arange(width) + 0.5) * src_w / width - 0.5, 0, src_w - 1)
    y0, x0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
    y1, x1 = np.minimum(y0 + 1, src_h - 1), np.minimum(x0 + 1, src_w - 1)
    wy, wx = (fy - y0)[:, None, None], (fx - x0)[None, :, None]
    im = image.astype(np.float64)
    top = im[y0][:, x0] * (1 - wx) + im[y0][:, x1] * wx
    bottom = im[y1][:, x0] * (1 - wx) + im[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def make(name):
    """[H, W, 3] uint8 RGB."""
    width, height, circle, kind, seed = FRAMES[name]
    rng = np.random.default_rng(seed)
    tissue = upscale(demo_frame()(rng, kind == "polyp"), height, width)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    if circle is None:
        cx, cy, r = width / 2, height / 2, np.hypot(width, height) / 2
    else:
        cx, cy, r = circle
    d = np.hypot(x - cx, y - cy) / r
    image = tissue * np.clip(1.0 - 0.45 * d ** 2, 0.2, 1.0)[:, :, None]
    if kind == "dark":
        image *= 0.06
    image += rng.normal(0, 3.0, image.shape)
    if circle is not None:
        # Black outside, a one-pixel soft rim as optics give.
        image *= np.clip(r + 0.5 - d * r, 0.0, 1.0)[:, :, None]
        image += np.abs(rng.normal(0, 1.5, image.shape)) * (d > 1)[:, :, None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
