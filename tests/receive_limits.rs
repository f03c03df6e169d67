//! Receiving is bounded in memory (issue #7, item 3): large data sets go to a staging file while
//! they arrive, an instance over `[ingest] max_instance_mb` is refused with Out of Resources
//! (PS3.4 B.2.3 0xA700) and leaves nothing, and a data set that never ends, or several large
//! STOW-RS parts at once, cost bounded memory. Peak RSS is read from /proc/PID/status (VmHWM).
//! Instances are generated as they are sent; nothing large is kept in the repository.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const STUDY: &str = "1.2.826.0.1.3680043.10.1452.77.1";
const SERIES: &str = "1.2.826.0.1.3680043.10.1452.77.1.1";
/// One 1024 x 1024 8-bit frame.
const FRAME: u64 = 1024 * 1024;
const MB: u64 = 1024 * 1024;
/// Memory is measured without triage models: a loaded model alone takes some 350 MB of RSS.
/// fsync off: durability is not what these tests pin, and it keeps 1.5 GB of writes quick.
const WITHOUT_MODELS: &str = "[triage]\nenabled = false\n[ingest]\nfsync = false\n";

fn sop(n: u32) -> String {
    format!("{SERIES}.{n}")
}

/// The data set of a multi-frame instance up to and including its Pixel Data header.
fn dataset_head(sop: &str, frames: u64) -> Vec<u8> {
    let ids = MultiframeIds {
        sop,
        study: STUDY,
        series: SERIES,
        patient_id: "RXLIMITS",
    };
    multiframe_head(&ids, frames)
}

/// Frame `n`'s pixels: a pattern that differs per frame, cheap to make.
fn frame(n: u64) -> Vec<u8> {
    (0..FRAME)
        .map(|i| ((i + n * 7919).wrapping_mul(0x9E37_79B1) >> 24) as u8)
        .collect()
}

/// The preamble and File Meta group a sender puts before the data set.
fn meta(sop: &str) -> Vec<u8> {
    tramy::dicom::ReceivedInstance::from_dataset(EXPLICIT_LE, Default::default())
        .file_header(MF_SC, sop, Some("RXTEST"))
        .expect("meta group")
}

fn part10_len(sop: &str, frames: u64) -> u64 {
    (meta(sop).len() + dataset_head(sop, frames).len()) as u64 + frames * FRAME
}

/// Writes the Part 10 file of a multi-frame instance to `w`, made as it goes.
fn write_part10(w: &mut impl Write, sop: &str, frames: u64) -> std::io::Result<()> {
    w.write_all(&meta(sop))?;
    w.write_all(&dataset_head(sop, frames))?;
    // A few distinct frames, repeated: making 512 MiB of pattern would cost more than sending it.
    let distinct: Vec<Vec<u8>> = (0..frames.min(4)).map(frame).collect();
    for n in 0..frames {
        w.write_all(&distinct[(n % 4) as usize])?;
    }
    Ok(())
}

fn instance_file(dir: &Path, sop: &str, frames: u64) -> PathBuf {
    let path = dir.join(format!("{sop}.dcm"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    write_part10(&mut f, sop, frames).expect("write");
    f.flush().expect("flush");
    path
}

/// The data set bytes WADO-RS returns for `sop` (a single-part multipart/related body).
fn wado_dataset(server: &TramyServer, sop: &str) -> Vec<u8> {
    let r = server.http(
        "GET",
        &format!("/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{sop}"),
        &[("Accept", "multipart/related; type=\"application/dicom\"")],
        b"",
    );
    assert_eq!(r.status, 200, "WADO-RS {sop}");
    single_part_dataset(&r.body)
}

/// The value of a Prometheus sample (0 when absent).
fn metric(server: &TramyServer, sample: &str) -> f64 {
    let (_, body) = server.http_get("/metrics").expect("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn staging_files(server: &TramyServer) -> Vec<PathBuf> {
    walk(&server.data_dir.join("staging"))
}

/// A `/proc/PID/status` value in bytes (VmHWM: peak RSS; VmRSS: current).
fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("kB value");
    kb * 1024
}

/// Probes `/healthz` until stopped; returns the slowest answer.
fn probe_health(server: &TramyServer) -> (Arc<AtomicBool>, std::thread::JoinHandle<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let port = server.http_port;
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        while !flag.load(Ordering::Relaxed) {
            let t = Instant::now();
            let ok = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out.starts_with("HTTP/1.1 200"))
            });
            assert!(matches!(ok, Ok(true)), "/healthz failed: {ok:?}");
            slowest = slowest.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
        slowest
    });
    (stop, handle)
}

#[test]
fn an_instance_above_the_spill_threshold_is_stored_from_a_staging_file_and_a_resend_is_a_duplicate()
{
    // Uploaded once whole, from the staging file: the path uploads while receiving fall back to.
    let server = TramyServer::start_with_config(
        "[ingest]\nspool_above_kb = 1024\nupload_while_receiving = false\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    let over_dimse = instance_file(tmp.path(), &sop(1), 5);
    let over_stow = instance_file(tmp.path(), &sop(2), 5);

    server.store_files(&[&over_dimse], "storescu of a 5 MB instance");
    assert_eq!(wado_dataset(&server, &sop(1)), dataset_bytes(&over_dimse));
    server.store_files(&[&over_dimse], "storescu of it again");

    let (content_type, body) = stow_body(&[std::fs::read(&over_stow).unwrap()]);
    for _ in 0..2 {
        let r = server.http(
            "POST",
            "/dicomweb/studies",
            &[("Content-Type", &content_type)],
            &body,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(wado_dataset(&server, &sop(2)), dataset_bytes(&over_stow));

    assert_eq!(server.indexed_instances(), 2);
    assert_eq!(server.object_files().len(), 2);
    assert_eq!(
        metric(
            &server,
            "tramy_ingest_instances_total{outcome=\"duplicate\"}"
        ),
        2.0,
        "each re-send is recognised by its SHA-256"
    );
    assert_eq!(
        metric(&server, "tramy_receive_spooled_total"),
        4.0,
        "every reception went through a staging file"
    );
    assert_eq!(
        metric(&server, "tramy_receive_uploads_begun_total"),
        0.0,
        "nothing uploaded while it arrived"
    );
    assert!(staging_files(&server).is_empty(), "staging files left");
}

#[test]
fn an_instance_over_the_size_limit_is_refused_with_out_of_resources_and_leaves_nothing() {
    let server =
        TramyServer::start_with_config("[ingest]\nspool_above_kb = 1024\nmax_instance_mb = 3\n");
    let tmp = tempfile::tempdir().unwrap();
    let too_large = instance_file(tmp.path(), &sop(3), 5);
    let small = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");

    // One association: the refused instance first, then one that must still be stored.
    let out = pynetdicom(
        "storescu",
        &[
            "-aec",
            "TRAMY",
            "-d",
            "--required-contexts",
            "127.0.0.1",
            &server.port(),
            too_large.to_str().unwrap(),
            small.to_str().unwrap(),
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("0xA700"), "no Out of Resources status:\n{log}");
    assert!(
        log.contains("Releasing Association"),
        "the association was not kept to the end:\n{log}"
    );
    assert_eq!(server.indexed_instances(), 1, "only the small instance");
    // The reason travels in Error Comment.
    let raw = tmp.path().join("dataset.raw");
    std::fs::write(&raw, dataset_bytes(&too_large)).unwrap();
    let answer = dimse_client(
        server.dimse_port,
        &[
            "send-raw",
            "--sop-class",
            MF_SC,
            "--sop-instance",
            &sop(3),
            "--ts",
            EXPLICIT_LE,
            "--dataset-file",
            raw.to_str().unwrap(),
        ],
    );
    assert_eq!(answer["status"], 0xA700, "{answer}");
    assert!(
        answer["error_comment"]
            .as_str()
            .is_some_and(|c| c.contains("exceeds the 3 MB limit")),
        "{answer}"
    );

    let (content_type, body) = stow_body(&[
        std::fs::read(&too_large).unwrap(),
        std::fs::read(repo_root().join("dicom-samples/mr_small_explicit_le.dcm")).unwrap(),
    ]);
    let r = server.http(
        "POST",
        "/dicomweb/studies",
        &[("Content-Type", &content_type)],
        &body,
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let failed = &r.json()["00081198"]["Value"];
    assert_eq!(failed[0]["00081197"]["Value"][0], 0xA700, "{failed}");
    assert!(
        r.header("warning")
            .is_some_and(|w| w.contains("exceeds the 3 MB limit")),
        "{:?}",
        r.headers
    );

    assert_eq!(server.indexed_instances(), 2);
    assert_eq!(
        server.object_files().len(),
        2,
        "nothing of the refused ones"
    );
    assert!(staging_files(&server).is_empty(), "staging files left");
}

/// The attack of issue #7: a C-STORE whose data set never ends (1 GiB of fragments, none last).
#[test]
fn a_data_set_that_never_ends_costs_bounded_memory_and_its_staging_file_goes_with_it() {
    let server = TramyServer::start_with_config(WITHOUT_MODELS);
    let (stop, prober) = probe_health(&server);
    let (mut association, pc) = begin_c_store(&server, "ATTACKER", &sop(9));
    let mut first = dataset_head(&sop(9), 2048);
    first.resize(128 * 1024, 0);
    send_dataset(&mut association, pc, &first, false);
    const GIB: u64 = 1024 * MB;
    let fragment = frame(1)[..128 * 1024].to_vec();
    for _ in 1..(GIB / (128 * 1024)) {
        send_dataset(&mut association, pc, &fragment, false);
    }
    // The server has taken it all in when its staging file holds 1 GiB (less the batch it has
    // not written yet).
    let staged = wait_for("1 GiB in a staging file", || {
        staging_files(&server)
            .into_iter()
            .find(|f| std::fs::metadata(f).is_ok_and(|m| m.len() + MB >= GIB))
    });
    let peak = proc_status(server.pid(), "VmHWM");
    stop.store(true, Ordering::Relaxed);
    let slowest = prober.join().expect("health probe");
    eprintln!(
        "peak RSS while receiving 1 GiB that never ends: {} MB",
        peak / MB
    );
    assert!(peak < 300 * MB, "peak RSS {} MB", peak / MB);
    assert!(
        slowest < Duration::from_secs(1),
        "/healthz took {slowest:?}"
    );

    association.abort().unwrap();
    wait_for("the staging file removed", || {
        (!staged.exists()).then_some(())
    });
    assert!(staging_files(&server).is_empty());
    assert_eq!(server.indexed_instances(), 0);
    server.store_files(
        &[&repo_root().join("dicom-samples/ct_small_explicit_le.dcm")],
        "a store after the attack",
    );
}

/// Three 512 MiB STOW-RS parts at once (2.7 GB of RSS, kept, before staging).
#[test]
fn three_large_stow_parts_at_once_cost_bounded_memory_that_is_given_back() {
    let server = TramyServer::start_with_config(WITHOUT_MODELS);
    let baseline = proc_status(server.pid(), "VmRSS");
    let port = server.http_port;
    let token = server.token().to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..3)
        .map(|n| {
            let sent = sent.clone();
            let token = token.clone();
            std::thread::spawn(move || {
                let sop = sop(20 + n);
                let boundary = "rx-limits-boundary";
                let head = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n");
                let tail = format!("\r\n--{boundary}--\r\n");
                let len = head.len() as u64 + part10_len(&sop, 512) + tail.len() as u64;
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
                let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut s);
                write!(
                    w,
                    "POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                     Authorization: Bearer {token}\r\n\
                     Content-Type: multipart/related; type=\"application/dicom\"; boundary={boundary}\r\n\
                     Content-Length: {len}\r\n\r\n{head}"
                )
                .unwrap();
                write_part10(&mut w, &sop, 512).unwrap();
                w.write_all(tail.as_bytes()).unwrap();
                w.flush().unwrap();
                drop(w);
                sent.fetch_add(1, Ordering::Relaxed);
                let mut response = String::new();
                s.read_to_string(&mut response).unwrap();
                response
            })
        })
        .collect();
    for sender in senders {
        let response = sender.join().expect("sender");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let peak = proc_status(server.pid(), "VmHWM");
    let after = proc_status(server.pid(), "VmRSS");
    eprintln!(
        "three 512 MiB STOW-RS parts at once: peak RSS {} MB, {} MB after ({} MB before)",
        peak / MB,
        after / MB,
        baseline / MB
    );
    assert!(peak < 500 * MB, "peak RSS {} MB", peak / MB);
    assert!(
        after < baseline + 100 * MB,
        "RSS after {} MB, before {} MB",
        after / MB,
        baseline / MB
    );
    assert_eq!(server.indexed_instances(), 3);
    assert!(staging_files(&server).is_empty(), "staging files left");
    for object in server.object_files() {
        assert!(std::fs::metadata(&object).unwrap().len() > 512 * MB);
    }
}

/// A client that goes away mid-part leaves no staging file; one a crash left is removed at start.
#[test]
fn staging_files_go_with_a_vanished_client_and_at_start_up() {
    let mut server = TramyServer::start_with_config(
        "[triage]\nenabled = false\n[ingest]\nspool_above_kb = 1024\n",
    );
    let sop = sop(30);
    let mut part = Vec::new();
    write_part10(&mut part, &sop, 8).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", server.http_port)).unwrap();
    write!(
        s,
        "POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary=gone\r\n\
         Content-Length: {}\r\n\r\n--gone\r\nContent-Type: application/dicom\r\n\r\n",
        server.token(),
        part.len() + 100
    )
    .unwrap();
    // Half the instance: past the threshold, so it is in a staging file when the client leaves.
    s.write_all(&part[..part.len() / 2]).unwrap();
    wait_for("a staging file", || {
        (!staging_files(&server).is_empty()).then_some(())
    });
    drop(s);
    wait_for("the staging file removed", || {
        staging_files(&server).is_empty().then_some(())
    });
    assert_eq!(server.indexed_instances(), 0);

    // What a crash would leave behind.
    let leftover = server.data_dir.join("staging/rx-crashed");
    std::fs::write(&leftover, b"partial data set").unwrap();
    server.restart();
    assert!(
        !leftover.exists(),
        "a leftover staging file survived start-up"
    );
}

type Association = dicom_ul::ClientAssociation<TcpStream>;

/// Opens an association from `calling_ae_title` and sends a C-STORE-RQ command announcing
/// `announced`; returns the association and the presentation context its data set goes on.
fn begin_c_store(
    server: &TramyServer,
    calling_ae_title: &str,
    announced: &str,
) -> (Association, u8) {
    use dicom_dictionary_std::tags;
    use dicom_ul::pdu::PDataValueType;
    use tramy::dimse::message::CommandBuilder;
    let mut association = dicom_ul::ClientAssociationOptions::new()
        .with_presentation_context(MF_SC, vec![EXPLICIT_LE])
        .calling_ae_title(calling_ae_title)
        .called_ae_title("TRAMY")
        .establish(("127.0.0.1", server.dimse_port))
        .expect("association");
    let pc = association.presentation_contexts()[0].id;
    let command = CommandBuilder::new(0x0001)
        .u16(tags::MESSAGE_ID, 1)
        .uid(tags::AFFECTED_SOP_CLASS_UID, MF_SC)
        .uid(tags::AFFECTED_SOP_INSTANCE_UID, announced)
        .u16(tags::PRIORITY, 0)
        .dataset(true)
        .encode()
        .unwrap();
    send_pdv(
        &mut association,
        pc,
        PDataValueType::Command,
        true,
        &command,
    );
    (association, pc)
}

fn send_pdv(
    association: &mut Association,
    pc: u8,
    value_type: dicom_ul::pdu::PDataValueType,
    is_last: bool,
    data: &[u8],
) {
    use dicom_ul::pdu::PDataValue;
    association
        .send(&dicom_ul::Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type,
                is_last,
                data: data.to_vec(),
            }],
        })
        .expect("a P-DATA-TF sent");
}

/// Sends `bytes` of a data set in 128 KiB fragments, the last one marked last when `ends`.
fn send_dataset(association: &mut Association, pc: u8, bytes: &[u8], ends: bool) {
    let fragments: Vec<&[u8]> = bytes.chunks(128 * 1024).collect();
    for (n, fragment) in fragments.iter().enumerate() {
        let last = ends && n + 1 == fragments.len();
        send_pdv(
            association,
            pc,
            dicom_ul::pdu::PDataValueType::Data,
            last,
            fragment,
        );
    }
}

/// Reads the C-STORE-RSP status and releases the association.
fn c_store_status(mut association: Association) -> u16 {
    use tramy::dimse::message::Command;
    let status = match association.receive().expect("C-STORE-RSP") {
        dicom_ul::Pdu::PData { data } => Command::decode(&data[0].data)
            .expect("a command")
            .status()
            .expect("a status"),
        other => panic!("not a C-STORE-RSP: {other:?}"),
    };
    association.release().expect("release");
    status
}

/// A multi-frame data set for `sop` of `frames` 1 MiB frames.
fn multiframe(sop: &str, frames: u64) -> Vec<u8> {
    let mut dataset = dataset_head(sop, frames);
    for n in 0..frames {
        dataset.extend(frame(n % 3));
    }
    dataset
}

/// Issue #11: a large instance goes to the object store while it arrives (a multipart upload
/// to a provisional key), and is filed at its final key once checked; one whose data set
/// contradicts its command leaves nothing there.
#[test]
fn a_large_instance_is_uploaded_while_it_arrives_and_a_refused_one_leaves_nothing() {
    let server = TramyServer::start_with_config(
        "[triage]\nenabled = false\n[ingest]\nfsync = false\nspool_above_kb = 1024\n",
    );
    let dataset = multiframe(&sop(20), 24);
    let (mut association, pc) = begin_c_store(&server, "MODALITY", &sop(20));
    let half = 12 * MB as usize;
    send_dataset(&mut association, pc, &dataset[..half], false);
    wait_for("an upload begun before the last byte", || {
        (metric(&server, "tramy_receive_uploads_begun_total") == 1.0).then_some(())
    });
    send_dataset(&mut association, pc, &dataset[half..], true);
    assert_eq!(c_store_status(association), 0x0000, "stored");
    assert_eq!(
        metric(&server, "tramy_ingest_uploaded_while_receiving_total"),
        1.0,
        "filed from the upload made while it arrived, not written again"
    );
    assert_eq!(wado_dataset(&server, &sop(20)), dataset);
    let objects = server.object_files();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert!(
        objects[0].to_string_lossy().contains("/studies/"),
        "{objects:?}"
    );

    // A data set announced under another SOP Instance UID: refused, its upload aborted.
    let (mut association, pc) = begin_c_store(&server, "MODALITY", &sop(22));
    send_dataset(&mut association, pc, &multiframe(&sop(21), 3), true);
    assert_ne!(
        c_store_status(association),
        0x0000,
        "a data set that contradicts its command is refused"
    );
    assert_eq!(metric(&server, "tramy_receive_uploads_begun_total"), 2.0);
    assert_eq!(server.object_files().len(), 1, "nothing of the refused one");
    assert!(
        walk(&server.data_dir.join("journal")).is_empty(),
        "every journaled write settled"
    );
    assert_eq!(server.indexed_instances(), 1);
}

/// A node killed while it uploads a large instance leaves nothing of it once restarted: the
/// journal names the provisional key, and start-up removes what is there (on a local folder,
/// a completed upload never filed too).
#[test]
fn an_upload_cut_off_by_a_kill_is_removed_at_the_next_start() {
    let mut server = TramyServer::start_with_config(
        "[triage]\nenabled = false\n[ingest]\nfsync = false\nspool_above_kb = 1024\n",
    );
    let dataset = multiframe(&sop(30), 24);
    let (mut association, pc) = begin_c_store(&server, "MODALITY", &sop(30));
    send_dataset(&mut association, pc, &dataset[..12 * MB as usize], false);
    wait_for("an upload begun", || {
        (metric(&server, "tramy_receive_uploads_begun_total") == 1.0).then_some(())
    });
    server.kill();
    drop(association);
    assert_eq!(walk(&server.data_dir.join("journal")).len(), 1, "journaled");
    let local = !server
        .process_env()
        .iter()
        .any(|(k, _)| k == "TRAMY_OBJECT_STORE_URL");
    if local {
        // Cut off between completing the upload and moving it: a whole object, never filed.
        let key = "incoming/00000000000000000000000000000001.dcm";
        let path = server.data_dir.join("objects").join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &dataset[..1000]).unwrap();
        use sha2::Digest;
        let entry = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        std::fs::write(server.data_dir.join("journal").join(entry), key).unwrap();
    }
    server.restart();
    assert_eq!(server.object_files(), Vec::<PathBuf>::new(), "nothing left");
    assert!(
        walk(&server.data_dir.join("journal")).is_empty(),
        "journal settled"
    );
    assert_eq!(server.indexed_instances(), 0);

    let (mut association, pc) = begin_c_store(&server, "MODALITY", &sop(30));
    send_dataset(&mut association, pc, &dataset, true);
    assert_eq!(
        c_store_status(association),
        0x0000,
        "stored when sent again"
    );
    assert_eq!(wado_dataset(&server, &sop(30)), dataset);
}
