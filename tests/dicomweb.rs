//! DICOMweb (PS3.18) against the real server: dicomweb-client round trips every sample through
//! STOW-RS, QIDO-RS and WADO-RS; bad input gets the status the standard names and stores nothing
//! partial; DIMSE and DICOMweb see each other's instances at once.

mod common;

use std::process::Command;

use common::*;

fn start() -> TramyServer {
    // dicomweb-client sends a Host header without the port on POST, so RetrieveURLs come from
    // the configured public URL, as a deployment behind a proxy would set it.
    let mut server = TramyServer::start();
    server.reconfigure("[http]\npublic_url = \"http://127.0.0.1:{http_port}\"\n");
    server
}

fn check(server: &TramyServer, what: &str, files: &[std::path::PathBuf]) {
    let out = Command::new(python())
        .arg(repo_root().join("tests/clients/dicomweb_check.py"))
        .env("TRAMY_TOKEN", server.token())
        .arg(what)
        .arg(server.dicomweb())
        .args(files)
        .output()
        .expect("dicomweb_check.py runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{what}: no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        result["ok"],
        true,
        "{what} failed: {}\nserver log:\n{}",
        result["details"],
        server.log()
    );
}

#[test]
fn dicomweb_client_round_trips_every_sample_through_stow_qido_wado() {
    let server = start();
    let files = samples();
    check(&server, "store", &files);
    assert_eq!(server.indexed_instances(), files.len() as i64);
    check(&server, "search", &files);
    check(&server, "retrieve", &files);
    check(&server, "metadata", &files);
    check(&server, "frames", &files);
    check(&server, "rendered", &files);
    check(&server, "transcode", &files);
    check(&server, "bulkdata", &files);
}

fn sample_bytes(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("dicom-samples").join(name)).unwrap()
}

fn post(server: &TramyServer, path: &str, content_type: &str, body: &[u8]) -> HttpResponse {
    server.http(
        "POST",
        path,
        &[
            ("Content-Type", content_type),
            ("Accept", "application/dicom+json"),
        ],
        body,
    )
}

#[test]
fn stow_of_a_non_dicom_part_among_good_ones_stores_the_good_ones_and_answers_202() {
    let server = start();
    let (ct, body) = stow_body(&[
        sample_bytes("ct_small_explicit_le.dcm"),
        b"not DICOM at all".to_vec(),
        sample_bytes("mr_small_rle.dcm"),
    ]);
    let r = post(&server, "/dicomweb/studies", &ct, &body);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let json = r.json();
    assert_eq!(
        json["00081199"]["Value"].as_array().unwrap().len(),
        2,
        "two referenced: {json}"
    );
    let failed = json["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["00081197"]["Value"][0], 0xC000);
    assert!(
        r.header("warning").is_some_and(|w| w.contains("DICM")),
        "the reason is in a Warning header"
    );
    assert_eq!(server.indexed_instances(), 2);
    assert_eq!(server.object_files().len(), 2);
}

#[test]
fn stow_with_only_bad_parts_answers_409_and_stores_nothing() {
    let server = start();
    let full = sample_bytes("ct_small_explicit_le.dcm");
    let (ct, body) = stow_body(&[full[..full.len() / 2].to_vec()]);
    let r = post(&server, "/dicomweb/studies", &ct, &body);
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(server.indexed_instances(), 0);
    assert!(server.object_files().is_empty());
}

#[test]
fn stow_to_another_study_fails_the_part_with_a_mismatch() {
    let server = start();
    let (ct, body) = stow_body(&[sample_bytes("ct_small_explicit_le.dcm")]);
    let r = post(&server, "/dicomweb/studies/1.2.3.4", &ct, &body);
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xA900
    );
    assert!(r
        .header("warning")
        .is_some_and(|w| w.contains("Study Instance UID")));
    assert_eq!(server.indexed_instances(), 0);
}

#[test]
fn malformed_stow_requests_get_400_or_415() {
    let server = start();
    let (ct, _) = stow_body(&[]);
    // The body does not contain the announced boundary.
    let r = post(
        &server,
        "/dicomweb/studies",
        &ct,
        b"garbage without any boundary",
    );
    assert_eq!(
        r.status,
        400,
        "malformed multipart: {}",
        String::from_utf8_lossy(&r.body)
    );
    let r = post(
        &server,
        "/dicomweb/studies",
        "multipart/related; type=\"application/dicom\"",
        b"--x\r\n",
    );
    assert_eq!(r.status, 400, "missing boundary");
    let r = post(&server, "/dicomweb/studies", "application/json", b"{}");
    assert_eq!(r.status, 415, "wrong content type");
    assert!(r.json()["reason"]
        .as_str()
        .unwrap()
        .contains("multipart/related"));
    assert_eq!(server.indexed_instances(), 0);
}

#[test]
fn unknown_uids_get_404_and_bad_queries_400() {
    let server = start();
    let get = |path: &str, accept: &str| server.http("GET", path, &[("Accept", accept)], b"");
    let dicom = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
    assert_eq!(get("/dicomweb/studies/1.2.3", dicom).status, 404);
    assert_eq!(
        get("/dicomweb/studies/1.2.3/metadata", "application/dicom+json").status,
        404
    );
    assert_eq!(
        get(
            "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/frames/1",
            "*/*"
        )
        .status,
        404
    );
    assert_eq!(get("/dicomweb/studies/not-a-uid", dicom).status, 400);
    for bad in [
        "/dicomweb/studies?limit=ten",
        "/dicomweb/studies?StudyDate=yesterday",
        "/dicomweb/studies?NoSuchKeyword=1",
        "/dicomweb/studies?fuzzymatching=maybe",
    ] {
        let r = get(bad, "application/dicom+json");
        assert_eq!(r.status, 400, "{bad}: {}", String::from_utf8_lossy(&r.body));
        assert!(!r.json()["reason"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        get("/dicomweb/studies", "application/dicom+xml").status,
        406
    );
}

fn instance_path(sample: &str) -> String {
    let obj = dicom_object::open_file(repo_root().join("dicom-samples").join(sample)).unwrap();
    let t = |tag| tramy::dicom::attributes::text(&obj, tag);
    use dicom_dictionary_std::tags;
    format!(
        "/dicomweb/studies/{}/series/{}/instances/{}",
        t(tags::STUDY_INSTANCE_UID),
        t(tags::SERIES_INSTANCE_UID),
        t(tags::SOP_INSTANCE_UID)
    )
}

/// The NM sample relabelled as MPEG-4 AVC video (PS3.5 A.4.6), a syntax tramy has no decoder
/// for: an instance no conversion can be made from.
fn undecodable_instance() -> Vec<u8> {
    use dicom_encoding::TransferSyntaxIndex;
    let mut obj =
        dicom_object::open_file(repo_root().join("dicom-samples/nm_jpeg_extended.dcm")).unwrap();
    let h264 = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get("1.2.840.10008.1.2.4.102")
        .unwrap();
    obj.update_meta(|meta| meta.set_transfer_syntax(h264));
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

#[test]
fn transfer_syntaxes_that_cannot_be_produced_get_406_with_a_way_out() {
    let server = start();
    let (ct, body) = stow_body(&[
        sample_bytes("ct_small_explicit_le.dcm"),
        undecodable_instance(),
    ]);
    assert_eq!(post(&server, "/dicomweb/studies", &ct, &body).status, 200);
    // tramy does not encode into compressed syntaxes.
    let r = server.http(
        "GET",
        &instance_path("ct_small_explicit_le.dcm"),
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50",
        )],
        b"",
    );
    assert_eq!(r.status, 406, "{}", String::from_utf8_lossy(&r.body));
    // No video decoder here: the default (Explicit VR Little Endian) cannot be made.
    let r = server.http(
        "GET",
        &instance_path("nm_jpeg_extended.dcm"),
        &[("Accept", "multipart/related; type=\"application/dicom\"")],
        b"",
    );
    assert_eq!(r.status, 406, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["reason"]
        .as_str()
        .unwrap()
        .contains("transfer-syntax=*"));
    let r = server.http(
        "GET",
        &instance_path("nm_jpeg_extended.dcm"),
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
        b"",
    );
    assert_eq!(r.status, 200, "as stored always works");
    let r = server.http(
        "GET",
        &instance_path("ct_small_explicit_le.dcm"),
        &[("Accept", "application/json")],
        b"",
    );
    assert_eq!(r.status, 406);
}

#[test]
fn dimse_and_dicomweb_see_each_others_instances_at_once() {
    let server = start();
    let ct_file = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    server.store_files(&[&ct_file], "storescu");
    let r = server.http(
        "GET",
        "/dicomweb/studies?ModalitiesInStudy=CT",
        &[("Accept", "application/dicom+json")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json().as_array().unwrap().len(),
        1,
        "C-STORE is visible to QIDO-RS immediately"
    );

    let (ct, body) = stow_body(&[sample_bytes("nm_jpeg_extended.dcm")]);
    assert_eq!(post(&server, "/dicomweb/studies", &ct, &body).status, 200);
    let out = pynetdicom_find(
        &server,
        None,
        &[
            "QueryRetrieveLevel=STUDY",
            "ModalitiesInStudy=NM",
            "StudyInstanceUID=",
        ],
    );
    assert_success(&out, "findscu");
    let log = output_text(&out);
    assert_eq!(
        log.matches("0xFF00 (Pending)").count(),
        1,
        "STOW-RS is visible to C-FIND immediately:\n{log}"
    );
}

#[test]
fn http_conventions_cors_gzip_metrics_openapi_and_xml() {
    let mut server = TramyServer::start();
    server.reconfigure(
        "[http]\npublic_url = \"http://127.0.0.1:{http_port}\"\ncors_allowed_origins = [\"http://viewer.example\"]\n",
    );

    // A browser viewer on another origin: the preflight is answered and the origin allowed.
    let r = server.http(
        "OPTIONS",
        "/dicomweb/studies",
        &[
            ("Origin", "http://viewer.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
        b"",
    );
    assert!(r.status < 300, "preflight answered: {}", r.status);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://viewer.example")
    );
    let r = server.http(
        "GET",
        "/dicomweb/studies",
        &[("Origin", "http://other.example")],
        b"",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "unlisted origins get no CORS grant"
    );

    // STOW answered in XML when asked.
    let (ct, body) = stow_body(&[sample_bytes("ct_small_explicit_le.dcm")]);
    let r = server.http(
        "POST",
        "/dicomweb/studies",
        &[("Content-Type", &ct), ("Accept", "application/dicom+xml")],
        &body,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/dicom+xml"));
    let xml = String::from_utf8_lossy(&r.body);
    assert!(
        xml.contains("<NativeDicomModel") && xml.contains("keyword=\"ReferencedSOPSequence\""),
        "{xml}"
    );

    // JSON is gzip-compressed for clients that accept it.
    let r = server.http(
        "GET",
        "/dicomweb/studies",
        &[
            ("Accept", "application/dicom+json"),
            ("Accept-Encoding", "gzip"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(&r.body[..2], &[0x1f, 0x8b], "a gzip stream");

    // Prometheus metrics count what happened, by route template, never by UID.
    let r = server.http("GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("tramy_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/dicomweb/studies\""), "{text}");
    assert!(
        text.contains("tramy_ingest_instances_total{outcome=\"stored\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("1.3.6.1.4.1.5962"),
        "no UIDs in metric labels"
    );

    // tramy's own endpoints are described in OpenAPI.
    let r = server.http("GET", "/openapi.json", &[], b"");
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    assert!(doc["paths"]["/healthz"].is_object() && doc["paths"]["/metrics"].is_object());
}

fn with_ct() -> (TramyServer, String) {
    let server = TramyServer::start();
    let ct = repo_root().join("dicom-samples/ct_small_explicit_le.dcm");
    server.store_files(&[ct.as_path()], "the CT");
    let (study, series, sop) = ct_uids();
    (
        server,
        format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}"),
    )
}

#[test]
fn gzip_is_for_json_only_never_dicom_or_frames() {
    let (server, instance) = with_ct();
    let gzip = ("Accept-Encoding", "gzip");
    for (path, accept) in [
        (
            instance.clone(),
            "multipart/related; type=\"application/dicom\"",
        ),
        (
            format!("{instance}/frames/1"),
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
        ),
        (format!("{instance}/rendered"), "image/png"),
    ] {
        let r = server.http("GET", &path, &[("Accept", accept), gzip], b"");
        assert_eq!(r.status, 200, "{accept}");
        assert_eq!(
            r.header("content-encoding"),
            None,
            "{accept} is not gzipped"
        );
    }
    for path in [
        "/dicomweb/studies".to_string(),
        format!("{instance}/metadata"),
    ] {
        let r = server.http(
            "GET",
            &path,
            &[("Accept", "application/dicom+json"), gzip],
            b"",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{path}");
    }
}

#[test]
fn retrieve_urls_follow_the_reverse_proxy_headers_and_ignore_bad_ones() {
    let (server, instance) = with_ct();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut all = vec![("Accept", "application/dicom+json")];
        all.extend_from_slice(headers);
        let r = server.http("GET", path, &all, b"");
        assert_eq!(r.status, 200);
        r.json()
    };
    let study = get(
        "/dicomweb/studies",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "pacs.example.org"),
        ],
    );
    let url = study[0]["00081190"]["Value"][0].as_str().unwrap();
    assert!(
        url.starts_with("https://pacs.example.org/dicomweb/studies/"),
        "{url}"
    );
    let meta = get(
        &format!("{instance}/metadata"),
        &[(
            "Forwarded",
            "for=10.1.1.1;proto=https;host=\"pacs.example.org:8443\"",
        )],
    );
    let bulk = meta[0]["7FE00010"]["BulkDataURI"].as_str().unwrap();
    assert!(
        bulk.starts_with("https://pacs.example.org:8443/dicomweb/studies/"),
        "{bulk}"
    );
    // Values that are not a scheme or a host name are ignored: the Host header is used.
    let study = get(
        "/dicomweb/studies",
        &[
            ("X-Forwarded-Proto", "javascript"),
            ("X-Forwarded-Host", "evil.example/\"><script>"),
        ],
    );
    let url = study[0]["00081190"]["Value"][0].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
}

#[test]
fn pydicom_reads_qido_and_metadata_json_with_numeric_is_and_ds() {
    let (server, instance) = with_ct();
    let script = r#"
import json, os, sys, pydicom, requests
base, instance, path = sys.argv[1], sys.argv[2], sys.argv[3]
h = {"Accept": "application/dicom+json", "Authorization": "Bearer " + os.environ["TRAMY_TOKEN"]}
meta = requests.get(base + instance + "/metadata", headers=h).json()[0]
qido = requests.get(base + "/dicomweb/instances?includefield=all", headers=h).json()[0]
file = pydicom.dcmread(path, stop_before_pixels=True)
problems = []
for doc, what in [(meta, "metadata"), (qido, "QIDO")]:
    for tag, attr in doc.items():
        values = attr.get("Value")
        if values == [] or (values is not None and all(v is None for v in values)):
            problems.append(f"{what} {tag}: an empty Value array")
        if attr["vr"] in ("IS", "DS") and values is not None:
            if not all(v is None or isinstance(v, (int, float)) for v in values):
                problems.append(f"{what} {tag}: {attr['vr']} {values} not numbers")
    ds = pydicom.Dataset.from_json(doc)
    for kw in ["InstanceNumber", "SliceThickness", "PixelSpacing", "ImagePositionPatient"]:
        if kw in file and kw in ds and ds[kw].value != file[kw].value:
            problems.append(f"{what} {kw}: {ds[kw].value} != {file[kw].value}")
        elif kw in file and kw not in ds and what == "metadata":
            problems.append(f"{what}: {kw} missing")
print(json.dumps(problems))
"#;
    let out = Command::new(python())
        .env("TRAMY_TOKEN", server.token())
        .args(["-c", script])
        .arg(server.dicomweb().trim_end_matches("/dicomweb"))
        .arg(&instance)
        .arg(repo_root().join("dicom-samples/ct_small_explicit_le.dcm"))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "[]",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_failed_request_is_logged_at_warn_with_its_reason_and_no_patient_data() {
    let (server, instance) = with_ct();
    let r = server.http(
        "GET",
        "/dicomweb/studies/1.2.3/metadata",
        &[("Accept", "application/dicom+json")],
        b"",
    );
    assert_eq!(r.status, 404);
    let r = server.http(
        "GET",
        "/dicomweb/studies?PatientBirthDate=NGUYEN^VAN^AN",
        &[],
        b"",
    );
    assert_eq!(r.status, 400);
    let r = server.http("GET", &instance, &[("Accept", "image/gif")], b"");
    assert_eq!(r.status, 406);
    let log = server.log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("HTTP request failed"))
        .collect();
    assert_eq!(failed.len(), 3, "{log}");
    assert!(
        failed[0].contains("status=404")
            && failed[0].contains("route=\"/dicomweb/studies/{study}/metadata\"")
            && failed[0].contains("no such study"),
        "{}",
        failed[0]
    );
    assert!(failed[1].contains("status=400"), "{}", failed[1]);
    assert!(
        failed[2].contains("status=406") && failed[2].contains("Accept"),
        "{}",
        failed[2]
    );
    assert!(
        !log.contains("NGUYEN"),
        "no patient data in the log:\n{log}"
    );
    assert!(
        !log.contains("1.2.3/metadata"),
        "route templates, not paths"
    );
}
