"""The whole `torchcontentarea` 0.4.0 `estimate_area_learned` algorithm in numpy, float32 where
the package computes in float32 (README.md "Algorithm" is the same as a spec).

Written from the package's C++ sources (`csrc/source/make_strips_cpu.cpp`,
`find_points_from_scores_cpu.cpp`, `fit_circle_cpu.cpp`, `implementation.cpp` of
charliebudd/torch-content-area, the version the 0.4.0 wheel's CPU code was built from). The
network is a parameter (`score`: strips [S,5,7,W] -> sigmoid scores [S,1,1,W-6]) so the same code
runs with the TorchScript original (record_reference.py) and the ONNX conversion (convert.py
--check). Set-up does not need this file.
"""

from dataclasses import dataclass

import numpy as np

F = np.float32
STRIP_COUNT = 16
PATCH = 7
EDGE_THRESHOLD = F(0.03)  # confidence_thresholds[0]: a point must score above this
CIRCLE_THRESHOLD = 0.06  # confidence_thresholds[1]: below this the frame has no circle (tramy)
MAX_CENTER_DIST = 0.2  # * image width
MIN_RADIUS = 0.2  # * image width
MAX_RADIUS = 0.8  # * image width
RANSAC_ATTEMPTS = 32
RANSAC_ITERATIONS = 3
RANSAC_INLIER_THRESHOLD = F(3)
MEAN = (F(0.3441), F(0.2251), F(0.2203))
STD = (F(0.2381), F(0.1994), F(0.1939))


@dataclass
class Result:
    scores: np.ndarray  # [S, W-6] edge scores
    points: list  # [(x, y, score)] * 2S: left then right half of each strip
    circle: list  # [x, y, r, confidence] or None when the package returns zeros


def strip_rows(height, strip_count=STRIP_COUNT):
    """Centre row of each strip: a logistic spacing, denser near the top and bottom edges."""
    rows = []
    for i in range(strip_count):
        t = -(F(i) - F(strip_count) / F(2) + F(0.5)) / (F(strip_count) / F(8))
        rows.append(int(F(1) + F(height - 2) / (F(1) + np.exp(t, dtype=F))))
    return rows


def make_strips(image, strip_count=STRIP_COUNT):
    """[S, 5, 7, W] float32 from an [H, W, 3] uint8 RGB frame."""
    height, width, _ = image.shape
    out = np.empty((strip_count, 5, PATCH, width), dtype=F)
    xs = np.arange(width, dtype=F) / F(width) - F(0.5)
    for s, row in enumerate(strip_rows(height, strip_count)):
        for k in range(PATCH):
            y = row + k - (PATCH - 1) // 2
            if not 0 <= y < height:
                raise ValueError(f"strip row {y} outside a {height}-row frame")
            pixels = image[y].astype(F) / F(255)
            for c in range(3):
                out[s, c, k] = (pixels[:, c] - MEAN[c]) / STD[c]
            out[s, 3, k] = xs
            out[s, 4, k] = F(y) / F(height) - F(0.5)
    return out


def find_points(scores, height):
    """Best column in each half of each strip (first maximum, strictly above 0)."""
    half = PATCH // 2
    strip_width = scores.shape[1]
    points = []
    for s, row in enumerate(strip_rows(height, scores.shape[0])):
        for lo, hi in ((0, strip_width // 2), (strip_width // 2, strip_width)):
            best, index = F(0), 0
            for x in range(lo, hi):
                if scores[s, x] > best:
                    best, index = scores[s, x], x + half
            points.append((index, row, float(best)))
    return points


def fast_rand(seed):
    seed = (214013 * seed + 2531011) & 0xFFFFFFFF  # int32 arithmetic, wrapping
    return seed, (seed >> 16) & 0x7FFF


def rand_triplet(seed, count):
    seed, r = fast_rand(seed)
    a = r % count
    while True:
        seed, r = fast_rand(seed)
        if r % count != a:
            b = r % count
            break
    while True:
        seed, r = fast_rand(seed)
        if r % count not in (a, b):
            return [a, b, r % count]


def circle_through(a, b, c):
    (ax, ay), (bx, by), (cx, cy) = [(F(p[0]), F(p[1])) for p in (a, b, c)]
    offset = bx * bx + by * by
    bc = F(0.5) * (ax * ax + ay * ay - offset)
    cd = F(0.5) * (offset - cx * cx - cy * cy)
    det = (ax - bx) * (by - cy) - (bx - cx) * (ay - by)
    if not abs(det) > 1e-8:
        return None
    idet = F(1) / det
    x = (bc * (by - cy) - cd * (ay - by)) * idet
    y = (cd * (ax - bx) - bc * (bx - cx)) * idet
    return x, y, np.sqrt((bx - x) * (bx - x) + (by - y) * (by - y), dtype=F)


def least_squares_circle(points):
    """Kasa fit: solve [sxx sxy sx; sxy syy sy; sx sy n] [A B C] = [sum x(x2+y2); sum y(x2+y2);
    sum x2+y2] by Cholesky; centre (A/2, B/2), r = sqrt(4C + A2 + B2)/2. Like the package, a
    failed factorisation leaves the right-hand side half solved (it never checks)."""
    lhs = np.zeros((3, 3), dtype=F)
    rhs = np.zeros(3, dtype=F)
    for px, py in points:
        x, y = F(px), F(py)
        lhs[0, 0] += x * x
        lhs[0, 1] += x * y
        lhs[1, 1] += y * y
        lhs[0, 2] += x
        lhs[1, 2] += y
        lhs[2, 2] += F(1)
        rhs[0] += x * x * x + x * y * y
        rhs[1] += x * x * y + y * y * y
        rhs[2] += x * x + y * y
    cholesky_solve(lhs, rhs)
    a, b, c = rhs
    return a / F(2), b / F(2), np.sqrt(F(4) * c + a * a + b * b, dtype=F) / F(2)


def cholesky_solve(lhs, rhs):
    """In place, step for step as the package's Cholesky3x3 (its early returns included)."""
    d = np.zeros(3, dtype=F)
    if not lhs[0, 0] > 0:
        return
    d[0] = np.sqrt(lhs[0, 0])
    lhs[1, 0] = lhs[0, 1] / d[0]
    lhs[2, 0] = lhs[0, 2] / d[0]
    s = lhs[1, 1] - lhs[1, 0] * lhs[1, 0]
    if not s > 0:
        return
    d[1] = np.sqrt(s)
    lhs[2, 1] = (lhs[1, 2] - lhs[1, 0] * lhs[2, 0]) / d[1]
    s = lhs[2, 2] - lhs[2, 1] * lhs[2, 1] - lhs[2, 0] * lhs[2, 0]
    if not s > 0:
        return
    d[2] = np.sqrt(s)
    rhs[0] = rhs[0] / d[0]
    rhs[1] = (rhs[1] - lhs[1, 0] * rhs[0]) / d[1]
    rhs[2] = (rhs[2] - lhs[2, 1] * rhs[1] - lhs[2, 0] * rhs[0]) / d[2]
    rhs[2] = rhs[2] / d[2]
    rhs[1] = (rhs[1] - lhs[2, 1] * rhs[2]) / d[1]
    rhs[0] = (rhs[0] - lhs[1, 0] * rhs[1] - lhs[2, 0] * rhs[2]) / d[0]


def plausible(x, y, r, width, height):
    dx, dy = F(x - 0.5 * width), F(y - 0.5 * height)
    diff = np.sqrt(dx * dx + dy * dy, dtype=F)
    return diff < MAX_CENTER_DIST * width and MIN_RADIUS * width < r < MAX_RADIUS * width


def fit_circle(points, height, width):
    """RANSAC: 32 deterministic attempts, each a 3-point circle refined twice by least squares
    over its inliers; the plausible circle with the highest mean inlier score wins."""
    kept = [p for p in points if F(p[2]) > EDGE_THRESHOLD]
    if len(kept) < 3:
        return None
    best = [F(0)] * 4
    for attempt in range(RANSAC_ATTEMPTS):
        inliers = rand_triplet(attempt * 42342, len(kept))
        circle, score = None, F(0)
        for _ in range(RANSAC_ITERATIONS):
            xy = [kept[i][:2] for i in inliers]
            if len(inliers) == 3:
                found = circle_through(*xy)
                # Collinear: the package keeps the previous circle (or, on the first pass,
                # uninitialised memory); we keep the previous one and drop the attempt if none.
                circle = found if found is not None else circle
            else:
                circle = least_squares_circle(xy)
            if circle is None:
                break
            cx, cy, r = circle
            inliers, score = [], F(0)
            for i, (px, py, s) in enumerate(kept):
                dx, dy = cx - F(px), cy - F(py)
                if abs(r - np.sqrt(dx * dx + dy * dy, dtype=F)) < RANSAC_INLIER_THRESHOLD:
                    score += F(s)
                    inliers.append(i)
            score = score / F(len(points))
        if circle is None:
            continue
        if plausible(*circle, width, height) and score > best[3]:
            best = [*circle, score]
    return None if best[3] == 0 else [float(v) for v in best]


def estimate(image, score):
    """image: [H, W, 3] uint8 RGB. Returns the scores, points and circle."""
    height, width, _ = image.shape
    scores = np.asarray(score(make_strips(image)), dtype=F)[:, 0, 0, :]
    points = find_points(scores, height)
    return Result(scores, points, fit_circle(points, height, width))


def mask(circle, height, width):
    """Pixels whose centre (integer x, y: the coordinates the points are in) lies within r."""
    if circle is None:
        return np.ones((height, width), dtype=bool)
    y, x = np.mgrid[0:height, 0:width]
    return (x - circle[0]) ** 2 + (y - circle[1]) ** 2 <= circle[2] ** 2


def circle_iou(a, b, height, width):
    ma, mb = mask(a, height, width), mask(b, height, width)
    return float((ma & mb).sum() / max((ma | mb).sum(), 1))
