"""Independent reference for `tramy eval`'s statistics (tests/eval_compare.rs).

Reads JSON {"y": [0/1...], "a": [probabilities], "b": [probabilities]} on stdin and prints JSON:
DeLong's test of the two correlated AUCs (the fast midrank algorithm of Sun & Xu 2014 as in
yandexdataschool/roc_comparison, with numpy and scipy.stats.norm), the AUCs from
sklearn.metrics.roc_auc_score, and for model a sklearn's brier_score_loss and
calibration_curve(n_bins=10, strategy="uniform").
"""
import json
import sys

import numpy as np
import scipy.stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score


def midrank(x):
    order = np.argsort(x, kind="mergesort")
    z = x[order]
    n = len(x)
    t = np.zeros(n)
    i = 0
    while i < n:
        j = i
        while j < n and z[j] == z[i]:
            j += 1
        t[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n)
    out[order] = t
    return out


def fast_delong(predictions, m):
    n = predictions.shape[1] - m
    pos, neg = predictions[:, :m], predictions[:, m:]
    k = predictions.shape[0]
    tx = np.array([midrank(pos[r]) for r in range(k)])
    ty = np.array([midrank(neg[r]) for r in range(k)])
    tz = np.array([midrank(predictions[r]) for r in range(k)])
    aucs = tz[:, :m].sum(axis=1) / m / n - (m + 1.0) / 2.0 / n
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.cov(v01) / m + np.cov(v10) / n
    return aucs, cov


def main():
    data = json.load(sys.stdin)
    y = np.array(data["y"], dtype=int)
    a = np.array(data["a"], dtype=float)
    b = np.array(data["b"], dtype=float)
    order = np.argsort(-y, kind="mergesort")  # positives first
    m = int(y.sum())
    aucs, cov = fast_delong(np.vstack([a, b])[:, order], m)
    diff = aucs[0] - aucs[1]
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    p = float(2 * scipy.stats.norm.sf(abs(diff) / np.sqrt(var))) if var > 0 else None
    prob_true, prob_pred = calibration_curve(y, a, n_bins=10, strategy="uniform")
    print(json.dumps({
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "sklearn_auc_a": float(roc_auc_score(y, a)),
        "sklearn_auc_b": float(roc_auc_score(y, b)),
        "difference": float(diff),
        "se": float(np.sqrt(max(var, 0.0))),
        "p_value": p,
        "brier_a": float(brier_score_loss(y, a)),
        "calibration_observed_a": prob_true.tolist(),
        "calibration_predicted_a": prob_pred.tolist(),
    }))


if __name__ == "__main__":
    main()
