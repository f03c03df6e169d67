//! The ingest path in-process: parse → write object → commit index, for the CT sample with a fresh
//! SOP Instance UID each time, with and without fsync. Run: `cargo bench --bench ingest`.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tramy::config::Config;
use tramy::dicom::ReceivedInstance;
use tramy::ingest::{Archive, Expected, Sender};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dicom-samples/ct_small_explicit_le.dcm"
);
const SOP_UID: &[u8] = b"1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322";

/// The sample's data set with its SOP Instance UID replaced by one of the same length.
fn unique_instance(template: &ReceivedInstance, n: u64) -> ReceivedInstance {
    let suffix = format!("{n:011}");
    let mut uid = SOP_UID.to_vec();
    let len = uid.len();
    uid[len - 11..].copy_from_slice(suffix.as_bytes());
    let mut data = template.dataset.to_vec();
    let at = data
        .windows(SOP_UID.len())
        .position(|w| w == SOP_UID)
        .expect("the sample holds its SOP Instance UID");
    data[at..at + SOP_UID.len()].copy_from_slice(&uid);
    ReceivedInstance::from_dataset(&template.transfer_syntax, Bytes::from(data))
}

fn bench_ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let template =
        ReceivedInstance::from_part10(Bytes::from(std::fs::read(SAMPLE).unwrap())).unwrap();
    let sender = Sender {
        principal: tramy::access::Principal::system(),
        source: "BENCH".into(),
        address: "127.0.0.1".into(),
        origin_facility: None,
    };
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(template.dataset.len() as u64));
    for fsync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.ingest.fsync = fsync;
        config.ingest.min_free_disk_mb = 0;
        let archive = runtime.block_on(async { Archive::open(&config).unwrap() });
        let name = if fsync {
            "ct_small/fsync"
        } else {
            "ct_small/no_fsync"
        };
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter_batched(
                || unique_instance(&template, counter.fetch_add(1, Ordering::Relaxed)),
                |instance| async {
                    archive
                        .ingest(instance, &sender, &Expected::NOTHING)
                        .await
                        .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = bench_ingest
}
criterion_main!(benches);
