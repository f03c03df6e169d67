//! `/metrics` as Prometheus reads it: latencies as histograms (buckets aggregate across servers,
//! quantile summaries do not), and a `# HELP` line for every metric.

mod common;

use common::*;

#[test]
fn metrics_are_histograms_with_help_lines() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    for _ in 0..3 {
        server.http_get("/healthz").expect("healthz answers");
    }
    let (code, body) = server.http_get("/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE tramy_http_request_duration_seconds histogram"),
        "{body}"
    );
    assert!(
        body.contains("tramy_http_request_duration_seconds_bucket{"),
        "{body}"
    );
    assert!(!body.contains("quantile="), "no summaries: {body}");
    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "{name} has a HELP line:\n{body}"
        );
    }
}
