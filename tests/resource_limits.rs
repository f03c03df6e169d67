//! Bounded connections and bounded per-request cost (issue #7 items 3, 4, 5): sockets that never
//! speak, trickle bytes or never finish a request cannot take the archive away from other
//! clients; no request costs unbounded memory or CPU; refused input logs one quiet line.
//!
//! Attackers connect from 127.0.0.2 (loopback range), legitimate clients from 127.0.0.1, so the
//! per-peer limits can be seen separating them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, UserVariableItem};
use dicom_ul::Pdu;

const ATTACKER: &str = "127.0.0.2";

/// A TCP connection to `port` on 127.0.0.1 from the address `from`.
fn connect_from(from: &str, port: u16) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap()
    });
    let std = stream.into_std().unwrap();
    std.set_nonblocking(false).unwrap();
    std
}

/// The bytes of an A-ASSOCIATE-RQ for Verification from `calling`.
fn association_rq(calling: &str) -> Vec<u8> {
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling.into(),
        called_ae_title: "TRAMY".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.1.1".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    });
    let mut bytes = Vec::new();
    dicom_ul::write_pdu(&mut bytes, &rq).unwrap();
    bytes
}

/// Reads until the peer closes; returns what arrived and how long the close took, or None if
/// the connection was still open after `limit`.
fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some((got, start.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some((got, start.elapsed()))
            }
            Err(_) => return None,
        }
    }
}

/// C-ECHO from 127.0.0.1 succeeds and answers within 1 s (client start-up included; dcmtk's
/// echoscu starts in milliseconds, the pynetdicom fallback's Python takes up to a second more).
fn assert_echo_within_1s(server: &TramyServer, when: &str) {
    let start = Instant::now();
    let (out, said) = echo_said(&server.port(), "MODALITY");
    let took = start.elapsed();
    let bound = if dcmtk_available() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(2)
    };
    assert!(out.status.success(), "{when}: C-ECHO failed:\n{said}");
    assert!(took < bound, "{when}: C-ECHO took {took:?}");
}

/// GET /healthz answers 200 within 1 s.
fn assert_healthz_within_1s(server: &TramyServer, when: &str) {
    let start = Instant::now();
    let answer = server.http_get("/healthz");
    let took = start.elapsed();
    assert_eq!(answer.map(|(c, _)| c), Some(200), "{when}: /healthz");
    assert!(
        took < Duration::from_secs(1),
        "{when}: /healthz took {took:?}"
    );
}

const DIMSE_LIMITS: &str = "[dimse]\nmax_associations = 8\nmax_associations_per_peer = 4\nartim_secs = 2\npdu_timeout_secs = 3\n";

#[test]
fn idle_and_dripping_sockets_from_one_peer_do_not_lock_out_another() {
    let server = TramyServer::start_with_config(DIMSE_LIMITS);
    let port = server.dimse_port;
    // 64 sockets that never speak, more than every association slot.
    let mut idle: Vec<TcpStream> = (0..64).map(|_| connect_from(ATTACKER, port)).collect();
    // Beyond twice its limit (4) a peer's connections are closed unread, at once.
    let (_, took) = wait_closed(&mut idle[63], Duration::from_secs(1))
        .expect("a connection far over the per-peer limit is closed at once");
    assert!(took < Duration::from_secs(1));
    // And 4 that trickle an A-ASSOCIATE-RQ one byte at a time.
    let rq = association_rq("DRIP");
    let mut drips: Vec<TcpStream> = (0..4).map(|_| connect_from(ATTACKER, port)).collect();
    for i in 0..3 {
        for d in &mut drips {
            let _ = d.write_all(&rq[i..i + 1]);
        }
        assert_echo_within_1s(&server, "under the idle-socket and slow-drip attack");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Every attacking socket is closed by ARTIM (2 s), bytes arriving or not.
    for s in idle.iter_mut().chain(drips.iter_mut()) {
        assert!(
            wait_closed(s, Duration::from_secs(5)).is_some(),
            "a socket that never completed its A-ASSOCIATE-RQ was still open after ARTIM"
        );
    }
    assert_echo_within_1s(&server, "after the attack");
}

#[test]
fn a_socket_that_sends_nothing_is_closed_after_artim() {
    let server = TramyServer::start_with_config(DIMSE_LIMITS);
    let mut s = connect_from(ATTACKER, server.dimse_port);
    let (_, took) = wait_closed(&mut s, Duration::from_secs(6))
        .expect("a silent connection is closed by ARTIM (2 s)");
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
}

/// Opens an association for Verification from the attacker's address (A-ASSOCIATE-AC read).
fn established(port: u16) -> TcpStream {
    let mut s = connect_from(ATTACKER, port);
    s.write_all(&association_rq("DRIP")).unwrap();
    let mut head = [0u8; 6];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x02, "A-ASSOCIATE-AC");
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let mut rest = vec![0u8; len];
    s.read_exact(&mut rest).unwrap();
    s
}

/// Sends `next()` every 500 ms until the server closes the association; returns how long that
/// took, or None if it was still open after 8 s.
fn drip_until_closed(s: &mut TcpStream, mut next: impl FnMut() -> Vec<u8>) -> Option<Duration> {
    let start = Instant::now();
    s.set_nonblocking(true).unwrap();
    while start.elapsed() < Duration::from_secs(8) {
        if s.write_all(&next()).is_err() {
            return Some(start.elapsed());
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {} // the A-ABORT
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Some(start.elapsed()),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

#[test]
fn one_byte_at_a_time_does_not_hold_an_established_association() {
    let server = TramyServer::start_with_config(DIMSE_LIMITS);
    let mut s = established(server.dimse_port);
    // A P-DATA-TF PDU announcing 1000 bytes, then one byte every 500 ms: each byte arrives well
    // within pdu_timeout (3 s), but the PDU never completes.
    let mut first = vec![0x04, 0x00];
    first.extend_from_slice(&1000u32.to_be_bytes());
    let mut sent_head = false;
    let took = drip_until_closed(&mut s, || {
        if std::mem::replace(&mut sent_head, true) {
            vec![0]
        } else {
            first.clone()
        }
    })
    .expect("a PDU trickled one byte at a time held the association for 8 s");
    assert!(took < Duration::from_secs(6), "closed only after {took:?}");
}

#[test]
fn complete_tiny_pdus_do_not_hold_an_established_association() {
    let server = TramyServer::start_with_config(DIMSE_LIMITS);
    let mut s = established(server.dimse_port);
    // Every 500 ms a whole P-DATA-TF PDU carrying one byte of a command that never ends
    // (PS3.8 9.3.5: PDV item length, context 1, control header 0x01 = command, not last).
    let tiny = vec![0x04, 0, 0, 0, 0, 7, 0, 0, 0, 3, 1, 0x01, 0];
    let took = drip_until_closed(&mut s, || tiny.clone())
        .expect("tiny PDUs, each in time, held the association for 8 s");
    assert!(took < Duration::from_secs(6), "closed only after {took:?}");
}

#[test]
fn one_peer_is_limited_to_its_share_of_associations() {
    let server = TramyServer::start_with_config(DIMSE_LIMITS);
    let port = server.dimse_port;
    let _held: Vec<TcpStream> = (0..4).map(|_| connect_from(ATTACKER, port)).collect();
    let mut fifth = connect_from(ATTACKER, port);
    fifth.write_all(&association_rq("GREEDY")).unwrap();
    let (answer, _) = wait_closed(&mut fifth, Duration::from_secs(5)).expect("an answer");
    // A-ASSOCIATE-RJ (PS3.8 9.3.4): result 2 transient, source 3 service provider
    // (presentation), reason 2 local limit exceeded.
    assert_eq!(
        answer.first(),
        Some(&0x03),
        "A-ASSOCIATE-RJ, got {answer:?}"
    );
    assert_eq!(
        &answer[7..10],
        &[2, 3, 2],
        "transient, local limit exceeded"
    );
    assert_echo_within_1s(&server, "while another peer is at its limit");
    wait_for("the refusal in the log", || {
        server
            .log()
            .contains("max_associations_per_peer")
            .then_some(())
    });
}

const HTTP_LIMITS: &str =
    "[http]\nheader_read_timeout_secs = 4\nbody_read_timeout_secs = 2\nmax_connections = 2000\n";

/// Opens `n` connections that each send the start of a request and never finish its header.
fn half_sent_requests(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = connect_from(ATTACKER, port);
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect()
}

#[test]
fn half_sent_http_requests_do_not_stop_the_archive_answering() {
    // This test process holds the 1050 sockets too.
    rlimit::increase_nofile_limit(4096).unwrap();
    let server = TramyServer::start_with_config(&format!("{HTTP_LIMITS}{DIMSE_LIMITS}"));
    let mut held = half_sent_requests(server.http_port, 1050);
    assert_healthz_within_1s(&server, "with 1050 half-sent requests open");
    assert_echo_within_1s(&server, "with 1050 half-sent HTTP requests open");
    let ct = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    server.store_files(
        &[ct.as_path()],
        "C-STORE with 1050 half-sent HTTP requests open",
    );
    // The header read timeout (4 s) closes them.
    let (_, took) = wait_closed(&mut held[0], Duration::from_secs(10))
        .expect("a request whose header never ended was closed");
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    assert!(
        !server.log().contains("Too many open files"),
        "the server ran out of file descriptors"
    );
}

#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    let server = TramyServer::start_with_config(
        "[http]\nheader_read_timeout_secs = 10\nmax_connections = 10\n",
    );
    let _held = half_sent_requests(server.http_port, 10);
    // The listener takes connections in order, so the 11th finds every slot taken. It must be
    // closed well before the held ones' 10 s header timeout could free a slot for it; the bound
    // is generous because CI's 2 busy cores can delay the accept loop.
    let mut extra = connect_from(ATTACKER, server.http_port);
    let (_, took) = wait_closed(&mut extra, Duration::from_secs(5))
        .expect("the 11th connection is closed long before the header timeout");
    assert!(took < Duration::from_secs(5));
    // Once the header timeout frees the slots, requests are served again.
    wait_for("/healthz after the header timeout", || {
        server
            .http_get("/healthz")
            .filter(|(c, _)| *c == 200)
            .map(|_| ())
    });
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let server = TramyServer::start_with_config(HTTP_LIMITS);
    let mut s = connect_from(ATTACKER, server.http_port);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    wait_closed(&mut s, Duration::from_secs(8))
        .expect("an idle keep-alive connection is closed by the header read timeout (4 s)");
}

#[test]
fn a_stalled_request_body_is_cut_off() {
    let server = TramyServer::start_with_config(HTTP_LIMITS);
    let mut s = connect_from(ATTACKER, server.http_port);
    write!(
        s,
        "POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\nContent-Type: application/dicom\r\n\r\nDICM",
        server.token()
    )
    .unwrap();
    let start = Instant::now();
    let (answer, took) = wait_closed(&mut s, Duration::from_secs(10))
        .expect("a request whose body stalls is answered and closed");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || !text.starts_with("HTTP/1.1 2"),
        "a stalled body was not refused: {text}"
    );
    let _ = start;
    assert_healthz_within_1s(&server, "after a stalled body");
}

/// The number of top-level results in a QIDO-RS answer.
fn result_count(r: &HttpResponse) -> usize {
    r.json().as_array().map_or(0, Vec::len)
}

#[test]
fn qido_results_are_capped_with_a_warning_and_all_fields_cost_less() {
    let server = TramyServer::start_with_config(
        "[http]\nmax_query_results = 3\nmax_query_results_all_fields = 2\n",
    );
    let files = samples();
    let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    server.store_files(&refs, "the samples");
    let accept = [("Accept", "application/dicom+json")];
    let get = |q: &str| server.http("GET", &format!("/dicomweb/instances{q}"), &accept, b"");

    let r = get("?limit=100000000");
    assert_eq!(r.status, 200);
    assert_eq!(result_count(&r), 3, "capped at max_query_results");
    let warning = r.header("warning").expect("a Warning header says so");
    assert!(warning.starts_with("299 "), "{warning}");
    assert!(warning.contains("maximum supported"), "{warning}");

    let r = get("?limit=100000000&includefield=all");
    assert_eq!(
        result_count(&r),
        2,
        "capped at max_query_results_all_fields"
    );
    assert!(r.header("warning").is_some());
    // Each result still carries the whole metadata.
    assert!(r.json()[0].as_object().unwrap().len() > 20);

    // Within the cap, or at the end of the results: no warning.
    let r = get("?limit=2");
    assert_eq!(result_count(&r), 2);
    assert!(r.header("warning").is_none());
    let r = get(&format!("?offset={}", files.len() - 2));
    assert_eq!(result_count(&r), 2);
    assert!(r.header("warning").is_none(), "no more results exist");

    // A refused query is still a proper 400 with a reason, not a cut-off 200.
    let r = get("?StudyDate=notadate");
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn a_repeated_frame_list_is_served_once_and_a_long_one_is_refused() {
    let server = TramyServer::start();
    let ct = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    server.store_files(&[ct.as_path()], "the CT");
    let (study, series, sop) = ct_uids();
    let base = format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames");
    let accept = [(
        "Accept",
        "multipart/related; type=\"application/octet-stream\"",
    )];
    let single = server.http("GET", &format!("{base}/1"), &accept, b"");
    assert_eq!(single.status, 200);
    let repeated = vec!["1"; 2000].join(",");
    let r = server.http("GET", &format!("{base}/{repeated}"), &accept, b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body.len(),
        single.body.len(),
        "2000 repeats of frame 1 are one frame"
    );
    let distinct: Vec<String> = (1..=2049).map(|n| n.to_string()).collect();
    let r = server.http(
        "GET",
        &format!("{base}/{}", distinct.join(",")),
        &accept,
        b"",
    );
    assert_eq!(r.status, 400);
    assert!(r.header("warning").unwrap().contains("frames"));
}

/// The WARN and ERROR lines of the server's log.
fn loud_lines(server: &TramyServer) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_damaged_file_meta_group_logs_one_line() {
    let server = TramyServer::start();
    let mut file =
        std::fs::read(repo_root().join("dicom-samples/ct_small_explicit_le.dcm")).unwrap();
    // File Meta Information Group Length (0002,0000) 3000 bytes too long: dicom-rs then reads
    // the data set's elements as meta elements and warns about each of them.
    assert_eq!(&file[132..136], &[2, 0, 0, 0]);
    let len = u32::from_le_bytes(file[140..144].try_into().unwrap()) + 3000;
    file[140..144].copy_from_slice(&len.to_le_bytes());
    let before = loud_lines(&server).len();
    let (ct, body) = stow_body(&[file]);
    let r = server.http(
        "POST",
        "/dicomweb/studies",
        &[("Content-Type", ct.as_str())],
        &body,
    );
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    let after = loud_lines(&server);
    // The refused part, and the failed request (every 4xx/5xx is logged with its reason), not
    // one line per element dicom-rs read wrongly.
    assert_eq!(
        after.len() - before,
        2,
        "one line for the refused part, one for the 409:\n{}",
        after[before..].join("\n")
    );
    assert!(
        after[before + 1].contains("status=409"),
        "{}",
        after[before + 1]
    );
}

#[test]
fn rendering_an_image_logs_no_warning() {
    let server = TramyServer::start();
    let ct = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    server.store_files(&[ct.as_path()], "the CT");
    let (study, series, sop) = ct_uids();
    let before = loud_lines(&server);
    let r = server.http(
        "GET",
        &format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered"),
        &[("Accept", "image/jpeg")],
        b"",
    );
    assert_eq!(r.status, 200);
    let wado =
        format!("/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}");
    assert_eq!(server.http("GET", &wado, &[], b"").status, 200);
    assert_eq!(loud_lines(&server), before, "rendering logged a warning");
}

#[test]
fn wado_uri_refuses_frame_number_zero() {
    let server = TramyServer::start();
    let ct = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    server.store_files(&[ct.as_path()], "the CT");
    let (study, series, sop) = ct_uids();
    let wado =
        format!("/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}");
    let r = server.http("GET", &format!("{wado}&frameNumber=0"), &[], b"");
    assert_eq!(r.status, 400);
    assert!(r.header("warning").unwrap().contains("numbered from 1"));
    let r = server.http("GET", &format!("{wado}&frameNumber=1"), &[], b"");
    assert_eq!(r.status, 200);
}

#[test]
fn a_refused_c_find_does_not_log_the_birth_date() {
    let server = TramyServer::start();
    let birth_date = "1968x0412";
    let key = format!("PatientBirthDate={birth_date}");
    let out = pynetdicom_find(&server, None, &["QueryRetrieveLevel=STUDY", &key]);
    let said = output_text(&out);
    assert!(
        said.contains("0xA900") || said.contains("0xC") || said.contains("Failure"),
        "the query is refused:\n{said}"
    );
    wait_for("the refusal in the log", || {
        server.log().contains("C-FIND refused").then_some(())
    });
    let log = server.log();
    assert!(
        !log.contains("1968"),
        "the birth date reached the log:\n{log}"
    );
}

#[test]
fn a_cleartext_http2_connection_cannot_skip_the_header_timeout() {
    let server = TramyServer::start_with_config(HTTP_LIMITS);
    let mut s = connect_from(ATTACKER, server.http_port);
    // The HTTP/2 connection preface (RFC 9113 3.4), then silence.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    wait_closed(&mut s, Duration::from_secs(8))
        .expect("an h2c connection is refused or closed like any other idle one");
    // Two bytes, fewer than any protocol sniffing needs, then silence.
    let mut s = connect_from(ATTACKER, server.http_port);
    s.write_all(b"GE").unwrap();
    wait_closed(&mut s, Duration::from_secs(8))
        .expect("a connection that sent two bytes is closed by the header timeout");
}

#[test]
fn heatmaps_beyond_the_pool_get_503_with_retry_after_at_once() {
    let (model, _) = pneumonia_model();
    let models_dir = model.parent().unwrap().display().to_string();
    let server = TramyServer::start_with_config(&format!(
        "[http]\nmax_concurrent_renders = 1\n[triage]\nmodels_dir = \"{models_dir}\"\n"
    ));
    let ct = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    server.store_files(&[ct.as_path()], "the CT");
    let (study, series, sop) = ct_uids();
    let path = format!(
        "/api/v1/studies/{study}/series/{series}/instances/{sop}/heatmap?model=chest-xray-pneumonia-kermany&label=pneumonia"
    );
    let answers: Vec<(u16, Option<String>, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let start = Instant::now();
                    let r = server.http("GET", &path, &[], b"");
                    let retry = r.header("retry-after").map(str::to_string);
                    (r.status, retry, start.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        answers.iter().any(|a| a.0 == 200),
        "one heatmap is computed: {answers:?}"
    );
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert!(!refused.is_empty(), "the others are refused: {answers:?}");
    for (_, retry, took) in refused {
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(
            *took < Duration::from_secs(1),
            "refused only after {took:?}"
        );
    }
}
