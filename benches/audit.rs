//! The audit trail's cost on a request: enqueueing an event (`Index::record_audit`, what a
//! request pays), an event awaited until committed (`record_audit_committed`), and the writer's
//! sustained rate (a burst of events, then one awaited). fsync off, as on a busy archive the
//! events share group commits with instances. Run: `cargo bench --bench audit`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tramy::access::Principal;
use tramy::audit::{AuditAction, AuditOutcome, NewAuditEvent};
use tramy::auth::{Identity, Role};
use tramy::store::Index;

fn event(i: u64) -> NewAuditEvent {
    let who = Principal::authenticated(Identity {
        subject: "token:bench".into(),
        facility: Some("A".into()),
        roles: vec![Role::Clinician],
    })
    .from_address("127.0.0.1:40000");
    NewAuditEvent {
        actor: who,
        action: AuditAction::Query,
        outcome: AuditOutcome::Success,
        study_instance_uid: Some(format!("1.2.826.0.1.{}", i % 1000)),
        patient: None,
        detail: "GET /dicomweb/studies 200".into(),
    }
}

fn bench_audit(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("index.sqlite"), false).unwrap();
    let mut n = 0u64;
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    // A request's cost while the writer keeps up: the queue is drained (untimed) before each
    // enqueue, which alone is timed. (A saturated writer makes requests wait: the burst below.)
    group.bench_function("record_audit (enqueue, what a request pays)", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let e = event(n);
                let start = std::time::Instant::now();
                runtime.block_on(index.record_audit(e)).unwrap();
                spent += start.elapsed();
                n += 1;
                runtime
                    .block_on(index.record_audit_committed(event(n)))
                    .unwrap();
            }
            spent
        })
    });
    group.bench_function("record_audit_committed", |b| {
        b.iter(|| {
            n += 1;
            runtime
                .block_on(index.record_audit_committed(event(n)))
                .unwrap();
        })
    });
    const BURST: u64 = 1000;
    group.throughput(Throughput::Elements(BURST));
    group.bench_function("1000 events appended and committed", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for _ in 1..BURST {
                    n += 1;
                    index.record_audit(event(n)).await.unwrap();
                }
                n += 1;
                index.record_audit_committed(event(n)).await.unwrap();
            })
        })
    });
    group.finish();
    let report = runtime
        .block_on(index.verify_audit_chain(&Principal::system()))
        .unwrap();
    assert_eq!(report.first_break, None);
    eprintln!("{} events verified", report.verified);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench_audit
}
criterion_main!(benches);
