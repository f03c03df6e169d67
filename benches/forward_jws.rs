//! The cost of signing and verifying a delivery manifest per study (issue #10 benchmarks): sign
//! (canonical JSON + Ed25519, `tramy::forward::jws::sign`), parse (split, base64url, header and
//! key checks) and verify (signature + payload decoding) for a 100- and a 1000-instance
//! manifest. Run: `cargo bench --bench forward_jws`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ed25519_dalek::SigningKey;
use tramy::forward::jws;
use tramy::forward::manifest::{Manifest, ManifestInstance, MANIFEST_TYPE};

/// A manifest of `n` CT instances with realistic UID and digest lengths.
fn manifest(n: usize) -> Manifest {
    let root = "1.2.826.0.1.3680043.8.498";
    Manifest {
        version: 1,
        id: "0f3c8a52-6a0e-4d5e-9d0b-2f1f6c0a9b11".into(),
        sender: "LOCAL".into(),
        destination: "FB".into(),
        study_instance_uid: format!("{root}.1.77"),
        instances: (0..n)
            .map(|i| ManifestInstance {
                sop_instance_uid: format!("{root}.2.{}.{i}", 10_000_000 + i * 7919),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sha256: format!("{:064x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15),
                size: 524_288 + i as i64,
            })
            .collect(),
        findings: Vec::new(),
        patient_links: Vec::new(),
        created_at: "2026-11-30T06:00:00Z".into(),
    }
}

fn bench_manifests(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let verifying = key.verifying_key();
    let mut group = c.benchmark_group("manifest");
    for n in [100usize, 1000] {
        let m = manifest(n);
        let signed = jws::sign(&key, MANIFEST_TYPE, &m);
        group.bench_with_input(BenchmarkId::new("sign", n), &m, |b, m| {
            b.iter(|| jws::sign(&key, MANIFEST_TYPE, m))
        });
        group.bench_with_input(BenchmarkId::new("parse", n), &signed, |b, s| {
            b.iter(|| jws::parse(s, MANIFEST_TYPE).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("parse+verify", n), &signed, |b, s| {
            b.iter(|| {
                jws::parse(s, MANIFEST_TYPE)
                    .unwrap()
                    .verify::<Manifest>(&verifying)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_manifests);
criterion_main!(benches);
