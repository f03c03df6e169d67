//! Statistics of `tramy eval`: DeLong's test of two correlated AUCs, Brier score, reliability
//! bins and expected calibration error.

use serde::Serialize;

/// Midranks (1-based; tied values share the mean of their ranks), as Sun & Xu 2014 define them.
fn midranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in &order[i..=j] {
            ranks[*k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// AUC as the Mann-Whitney statistic from midranks, O(n log n): the probability that a positive
/// outranks a negative, ties counting half; `tz` are the midranks of positives then negatives.
fn auc_from_ranks(tz: &[f64], m: usize, n: usize) -> f64 {
    (tz[..m].iter().sum::<f64>() - (m * (m + 1)) as f64 / 2.0) / (m * n) as f64
}

/// AUC of `positives` against `negatives` (both non-empty).
pub fn auc(positives: &[f64], negatives: &[f64]) -> f64 {
    let all: Vec<f64> = positives.iter().chain(negatives).copied().collect();
    auc_from_ranks(&midranks(&all), positives.len(), negatives.len())
}

/// One model's AUC and its DeLong structural components V10 (per positive) and V01 (per
/// negative), by the O(n log n) midrank algorithm of Sun & Xu 2014 (IEEE SPL 21(11)).
fn components(positives: &[f64], negatives: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
    let (m, n) = (positives.len(), negatives.len());
    let all: Vec<f64> = positives.iter().chain(negatives).copied().collect();
    let tz = midranks(&all);
    let tx = midranks(positives);
    let ty = midranks(negatives);
    let auc = auc_from_ranks(&tz, m, n);
    let v10 = (0..m).map(|i| (tz[i] - tx[i]) / n as f64).collect();
    let v01 = (0..n)
        .map(|j| 1.0 - (tz[m + j] - ty[j]) / m as f64)
        .collect();
    (auc, v10, v01)
}

/// Sample covariance (n - 1 denominator).
fn covariance(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (n - 1.0)
}

/// Two-sided p-value of a standard normal statistic.
pub fn two_sided_p(z: f64) -> f64 {
    libm::erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// DeLong's test of two correlated ROC curves on the same cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeLong {
    /// AUC of the first model.
    pub auc_a: f64,
    /// AUC of the second model.
    pub auc_b: f64,
    /// `auc_a - auc_b`.
    pub difference: f64,
    /// 95% confidence interval of the difference (normal approximation, DeLong variance).
    pub difference_ci95: (f64, f64),
    /// Standard error of the difference.
    pub se: f64,
    /// Two-sided p-value of "equal AUCs"; 1 when [`DeLong::identical`].
    pub p_value: f64,
    /// No difference and no variance of it: the models rank the cases alike (the same model
    /// twice), or both separate the classes perfectly. The test has no information then.
    pub identical: bool,
}

/// DeLong, DeLong & Clarke-Pearson 1988 (Biometrics 44:837) on `cases` = (score A, score B,
/// truth); `None` with fewer than two positives or two negatives.
pub fn delong(cases: &[(f64, f64, bool)]) -> Option<DeLong> {
    let pick = |truth: bool, a: bool| -> Vec<f64> {
        cases
            .iter()
            .filter(|c| c.2 == truth)
            .map(|c| if a { c.0 } else { c.1 })
            .collect()
    };
    let (m, n) = (pick(true, true).len(), pick(false, true).len());
    if m < 2 || n < 2 {
        return None;
    }
    let (auc_a, v10a, v01a) = components(&pick(true, true), &pick(false, true));
    let (auc_b, v10b, v01b) = components(&pick(true, false), &pick(false, false));
    // Var(A - B) = S10[a,a]/m + S01[a,a]/n + the same for b - 2 (S10[a,b]/m + S01[a,b]/n).
    let var = |x10: &[f64], y10: &[f64], x01: &[f64], y01: &[f64]| {
        covariance(x10, y10) / m as f64 + covariance(x01, y01) / n as f64
    };
    let variance = var(&v10a, &v10a, &v01a, &v01a) + var(&v10b, &v10b, &v01b, &v01b)
        - 2.0 * var(&v10a, &v10b, &v01a, &v01b);
    let difference = auc_a - auc_b;
    let se = variance.max(0.0).sqrt();
    // Rounding leaves ~1e-17 where the models agree exactly; such a test has no information.
    let identical = se < 1e-12 && difference.abs() < 1e-12;
    let p_value = if identical {
        1.0
    } else if se == 0.0 {
        0.0
    } else {
        two_sided_p(difference / se)
    };
    Some(DeLong {
        auc_a,
        auc_b,
        difference,
        difference_ci95: (difference - 1.96 * se, difference + 1.96 * se),
        se,
        p_value,
        identical,
    })
}

/// Brier score: mean squared difference between probability and outcome (Brier 1950).
pub fn brier(scores: &[(f64, bool)]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let sum: f64 = scores
        .iter()
        .map(|(p, y)| (p - if *y { 1.0 } else { 0.0 }).powi(2))
        .sum();
    Some(sum / scores.len() as f64)
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    /// Lower edge (inclusive except for the first bin's 0, which is too).
    pub lower: f64,
    /// Upper edge (inclusive).
    pub upper: f64,
    /// Cases whose probability falls in the bin.
    pub count: usize,
    /// Mean predicted probability; absent for an empty bin.
    pub mean_predicted: Option<f64>,
    /// Observed fraction of positives; absent for an empty bin.
    pub observed: Option<f64>,
}

/// Reliability diagram with `bins` equal-width bins on [0, 1]; a probability on an inner edge
/// goes to the lower bin, as scikit-learn's `calibration_curve(strategy="uniform")` does.
pub fn reliability(scores: &[(f64, bool)], bins: usize) -> Vec<Bin> {
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins];
    for (p, y) in scores {
        // Number of inner edges strictly below p (numpy.searchsorted, side="left"), the edges
        // computed as numpy.linspace does (k * step: 3 * 0.1 is just above 0.3).
        let step = 1.0 / bins as f64;
        let index = (1..bins).filter(|k| *k as f64 * step < *p).count();
        let slot = &mut sums[index];
        slot.0 += 1;
        slot.1 += p;
        slot.2 += usize::from(*y);
    }
    sums.iter()
        .enumerate()
        .map(|(k, (count, sum, positives))| Bin {
            lower: k as f64 / bins as f64,
            upper: (k + 1) as f64 / bins as f64,
            count: *count,
            mean_predicted: (*count > 0).then(|| sum / *count as f64),
            observed: (*count > 0).then(|| *positives as f64 / *count as f64),
        })
        .collect()
}

/// Expected calibration error: the count-weighted mean |observed - predicted| over the bins
/// (Naeini, Cooper & Hauskrecht 2015).
pub fn expected_calibration_error(bins: &[Bin]) -> Option<f64> {
    let total: usize = bins.iter().map(|b| b.count).sum();
    if total == 0 {
        return None;
    }
    let sum: f64 = bins
        .iter()
        .filter_map(|b| Some(b.count as f64 * (b.observed? - b.mean_predicted?).abs()))
        .sum();
    Some(sum / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores of two tests on 5 positives and 5 negatives; the reference figures are what
    /// `tests/clients/eval_reference.py` (Sun & Xu's fast DeLong as in
    /// yandexdataschool/roc_comparison, numpy + scipy.stats.norm; AUCs also by sklearn's
    /// roc_auc_score) prints for the same numbers.
    #[test]
    fn delong_matches_the_reference_implementation() {
        let a = [0.9, 0.8, 0.7, 0.6, 0.3, 0.5, 0.4, 0.2, 0.35, 0.1];
        let b = [0.6, 0.9, 0.4, 0.5, 0.2, 0.3, 0.7, 0.1, 0.25, 0.45];
        let truth = [
            true, true, true, true, true, false, false, false, false, false,
        ];
        let cases: Vec<_> = (0..10).map(|i| (a[i], b[i], truth[i])).collect();
        let d = delong(&cases).unwrap();
        assert!((d.auc_a - 0.88).abs() < 1e-12, "{d:?}");
        assert!((d.auc_b - 0.68).abs() < 1e-12, "{d:?}");
        assert!((d.se - 0.14142135623730953).abs() < 1e-12, "{d:?}");
        assert!((d.p_value - 0.15729920705028522).abs() < 1e-12, "{d:?}");
        // The same script's sklearn.calibration_curve: probabilities on a bin edge (0.1, 0.2,
        // 0.3) go to the lower bin.
        let s: Vec<_> = cases.iter().map(|c| (c.0, c.2)).collect();
        let observed: Vec<f64> = reliability(&s, 10)
            .iter()
            .filter_map(|b| b.observed)
            .collect();
        assert_eq!(observed, [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert!((brier(&s).unwrap() - 0.13725).abs() < 1e-12);
    }

    #[test]
    fn auc_by_midranks_counts_every_pair_with_ties_as_half() {
        let positives = [0.9, 0.5, 0.5, 0.3, 0.7];
        let negatives = [0.5, 0.1, 0.3, 0.3, 0.8, 0.2];
        let mut wins = 0.0;
        for p in positives {
            for n in negatives {
                wins += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let pairs = wins / (positives.len() * negatives.len()) as f64;
        assert!((auc(&positives, &negatives) - pairs).abs() < 1e-12);
    }

    #[test]
    fn a_model_compared_with_itself_is_identical_with_p_one() {
        let cases: Vec<_> = [(0.9, true), (0.2, true), (0.4, false), (0.1, false)]
            .iter()
            .map(|(p, y)| (*p, *p, *y))
            .collect();
        let d = delong(&cases).unwrap();
        assert!(
            d.identical && d.difference == 0.0 && d.p_value == 1.0,
            "{d:?}"
        );
    }

    #[test]
    fn delong_needs_two_of_each_class() {
        assert!(delong(&[(0.9, 0.8, true), (0.1, 0.2, false), (0.3, 0.3, false)]).is_none());
    }

    #[test]
    fn brier_and_bins_as_scikit_learn_documents_them() {
        // sklearn.metrics.brier_score_loss docs: y_true [0,1,1,0], y_prob [0.1,0.9,0.8,0.3]
        // gives 0.0375.
        let s = [(0.1, false), (0.9, true), (0.8, true), (0.3, false)];
        assert!((brier(&s).unwrap() - 0.0375).abs() < 1e-12);
        // sklearn.calibration.calibration_curve docs: y_true [0,0,0,0,1,1,1,1,1],
        // y_pred [0.1,0.2,0.3,0.4,0.65,0.7,0.8,0.9,1.0], n_bins=3 gives
        // prob_true [0, 0.5, 1], prob_pred [0.2, 0.525, 0.85].
        let y = [0, 0, 0, 0, 1, 1, 1, 1, 1];
        let p = [0.1, 0.2, 0.3, 0.4, 0.65, 0.7, 0.8, 0.9, 1.0];
        let s: Vec<_> = p.iter().zip(y).map(|(p, y)| (*p, y == 1)).collect();
        let bins = reliability(&s, 3);
        let observed: Vec<f64> = bins.iter().filter_map(|b| b.observed).collect();
        let predicted: Vec<f64> = bins.iter().filter_map(|b| b.mean_predicted).collect();
        assert_eq!(observed, vec![0.0, 0.5, 1.0]);
        for (ours, theirs) in predicted.iter().zip([0.2, 0.525, 0.85]) {
            assert!((ours - theirs).abs() < 1e-12, "{predicted:?}");
        }
        assert_eq!(bins.iter().map(|b| b.count).collect::<Vec<_>>(), [3, 2, 4]);
        let ece = expected_calibration_error(&bins).unwrap();
        assert!((ece - (3.0 * 0.2 + 2.0 * 0.025 + 4.0 * 0.15) / 9.0).abs() < 1e-12);
    }
}
