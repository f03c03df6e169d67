//! The web UI for doctors (issue #15): a real headless Chromium (Debian `chromium`,
//! `chromium-driver`, driven by Selenium from `tests/clients/ui_check.py`) signs in with a
//! token, finds the flagged chest X-ray first on the worklist, sees a finding arrive without a
//! reload, reads the study page's finding and toggles its heatmap, and reads both pages in
//! Vietnamese with no English left. Plain HTTP checks the rest: without a session every page
//! leads to sign-in, another facility sees none of the studies, and the event stream tells only
//! its own user, once per session, until sign-out.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dicom_dictionary_std::tags;

fn study_of(path: &Path) -> String {
    let obj = dicom_object::open_file(path).unwrap();
    tramy::dicom::attributes::text(&obj, tags::STUDY_INSTANCE_UID)
}

/// A Kermany validation image wrapped as DX in `dir`, with its study UID.
fn chest(images: &Path, dir: &Path, class_and_file: &str) -> (PathBuf, String) {
    let out = dir.join(format!("{}.dcm", class_and_file.replace('/', "-")));
    wrap_jpeg_as_dx(&images.join(class_and_file), &out);
    let study = study_of(&out);
    (out, study)
}

/// The worklist entry of `study` once triage is done with it.
fn triaged(server: &TramyServer, study: &str) -> serde_json::Value {
    wait_long(&format!("triage of {study}"), 300, || {
        let list = server.http("GET", "/api/v1/worklist", &[], b"").json();
        list.as_array()?
            .iter()
            .find(|e| e["study_instance_uid"] == study && e["pending_jobs"] == 0)
            .cloned()
    })
}

#[test]
fn a_doctor_signs_in_reads_the_flagged_study_first_sees_new_findings_live_and_reads_it_in_vietnamese(
) {
    let (_, images) = pneumonia_model();
    let server = TramyServer::start();
    let tmp = tempfile::tempdir().unwrap();
    // Scored 0.03, 0.999 and 0.995 by the model (keras-reference.json): the normal one arrives
    // first, the flagged one must still come first.
    let (normal, normal_study) = chest(&images, tmp.path(), "NORMAL/NORMAL2-IM-1430-0001.jpeg");
    let (flagged, flagged_study) = chest(
        &images,
        tmp.path(),
        "PNEUMONIA/person1946_bacteria_4874.jpeg",
    );
    let (live, live_study) = chest(
        &images,
        tmp.path(),
        "PNEUMONIA/person1947_bacteria_4876.jpeg",
    );
    server.store_files(&[&normal], "the normal chest X-ray");
    triaged(&server, &normal_study);
    server.store_files(&[&flagged], "the pneumonia chest X-ray");
    assert_eq!(triaged(&server, &flagged_study)["flags"][0], "pneumonia");

    let out = tmp.path().join("browser");
    std::fs::create_dir_all(&out).unwrap();
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/clients/ui_check.py"))
        .arg(format!("http://127.0.0.1:{}", server.http_port))
        .arg(&out)
        .args([&flagged_study, &live_study])
        .env("TRAMY_TOKEN", server.token())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The page is open and marked: a new study arrives and is triaged meanwhile.
    wait_long("the browser's worklist page", 300, || {
        out.join("ready")
            .exists()
            .then_some(())
            .or_else(|| child.try_wait().unwrap().map(|_| ()))
    });
    server.store_files(&[&live], "a chest X-ray while the page is open");
    let output = child.wait_with_output().unwrap();
    let keep = std::env::temp_dir().join("tramy-ui-screenshots");
    let _ = std::fs::remove_dir_all(&keep);
    let _ = Command::new("cp").arg("-r").arg(&out).arg(&keep).status();
    let see = format!("screenshots in {}", keep.display());
    assert_success(&output, &format!("ui_check.py ({see})"));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report.get("error").is_none(), "{report:#} ({see})");

    // Without a session the browser was sent to sign in; with it, the flagged study is first.
    assert_eq!(report["before_sign_in"], "/login");
    let order = report["order"].as_array().unwrap();
    assert_eq!(order[0], flagged_study.as_str(), "{report:#}");
    assert!(order.contains(&normal_study.as_str().into()), "{report:#}");

    // The live study appeared, flagged, on the page that never reloaded; the worklist keeps
    // the flagged studies first.
    let live_view = &report["live"];
    assert_eq!(
        live_view["row"]["flags"], "pneumonia",
        "{live_view:#} ({see})"
    );
    assert_eq!(live_view["same_document"], true, "{live_view:#}");
    let live_order = live_view["order"].as_array().unwrap();
    assert_eq!(
        live_order.last().unwrap(),
        normal_study.as_str(),
        "{live_view:#}"
    );

    // The study page: the finding with its model, threshold and use statement; the heatmap
    // over the image, hidden and shown by its toggle, fainter with the slider.
    let study = &report["study"];
    assert_eq!(study["label"], "pneumonia");
    let probability: f64 = study["probability"].as_str().unwrap().parse().unwrap();
    assert!(probability > 0.9, "{study:#}");
    assert_eq!(study["threshold"], "0.50");
    assert!(study["model"]
        .as_str()
        .unwrap()
        .starts_with("chest-xray-pneumonia-kermany"));
    assert!(study["statement"]
        .as_str()
        .unwrap()
        .contains("not for diagnosis"));
    assert_eq!(study["before"]["loaded"], true, "{study:#} ({see})");
    assert_eq!(study["before"]["base_loaded"], true, "{study:#} ({see})");
    assert_eq!(study["before"]["shown"], true, "{study:#}");
    assert_eq!(study["toggled_off"]["shown"], false, "{study:#}");
    assert_eq!(study["toggled_on"]["shown"], true, "{study:#}");
    assert_eq!(study["slid"]["opacity"], "0.2", "{study:#}");

    // In Vietnamese (the link on the page), no English UI text is left, dates are dd/mm/yyyy
    // and the probability has a decimal comma.
    let vi = &report["vi"];
    assert_eq!(vi["study_lang"], "vi");
    for page in ["worklist", "study"] {
        let text = vi[page].as_str().unwrap();
        assert_eq!(english_left(text), Vec::<String>::new(), "{page}:\n{text}");
    }
    let worklist = vi["worklist"].as_str().unwrap();
    assert!(worklist.contains("Ca chụp cần đọc"), "{worklist}");
    assert!(worklist.contains("01/01/2026"), "{worklist}");
    let vi_probability = format!("{probability:.3}").replace('.', ",");
    let vi_study = vi["study"].as_str().unwrap();
    assert!(vi_study.contains(&vi_probability));
    // The model's own words come from its manifest's Vietnamese: the finding and its statement.
    assert!(worklist.contains("Viêm phổi"), "{worklist}");
    assert!(vi_study.contains("Viêm phổi"), "{vi_study}");
    assert!(
        vi_study.contains("không dùng để chẩn đoán") && !vi_study.contains("not for diagnosis"),
        "{vi_study}"
    );

    // On a tablet in portrait neither page scrolls sideways; the worklist's rows are cards.
    let tablet = &report["tablet"];
    assert_eq!(tablet["worklist"]["overflow"], 0, "{tablet:#} ({see})");
    assert_eq!(tablet["worklist"]["header_row"], "none", "{tablet:#}");
    assert_eq!(tablet["study"]["overflow"], 0, "{tablet:#} ({see})");

    assert_eq!(report["after_sign_out"], "/login");
}

/// A token of a new clinician of `facility`.
fn clinician(server: &TramyServer, facility: &str) -> String {
    server.cli(&[
        "token",
        "create",
        "--facility",
        facility,
        "--role",
        "clinician",
    ])
}

fn page(server: &TramyServer, token: &str, path: &str, language: &str) -> HttpResponse {
    server.http(
        "GET",
        path,
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Accept", "text/html"),
            ("Accept-Language", language),
        ],
        b"",
    )
}

const CT: &str = "dicom-samples/ct_small_explicit_le.dcm";

#[test]
fn without_a_session_every_page_leads_to_sign_in_and_another_facility_sees_none_of_the_studies() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let ct = repo_root().join(CT);
    server.store_files(&[&ct], "a CT study of facility LOCAL");
    let study = study_of(&ct);

    // Every UI page (and the site's root) sends a browser without a session to sign in.
    let mut paths: Vec<String> = tramy::web::route_table()
        .into_iter()
        .filter(|(method, path)| method == "GET" && path.starts_with("/ui"))
        .map(|(_, path)| path.replace("{study}", &study).replace("{lang}", "vi"))
        .collect();
    assert!(paths.len() >= 5, "{paths:?}");
    paths.push("/".into());
    for path in &paths {
        let r = server.http(
            "GET",
            path,
            &[("Authorization", ""), ("Accept", "text/html")],
            b"",
        );
        // Signing in leads back to the page asked for (the worklist needs no reminder).
        let expected = match path.as_str() {
            "/" | "/ui/" => "/login".to_string(),
            other => format!(
                "/login?next={}",
                form_urlencoded::byte_serialize(other.as_bytes()).collect::<String>()
            ),
        };
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some(expected.as_str())),
            "{path}"
        );
    }

    // The sign-in page speaks the chosen language and keeps the choice; the switch link on the
    // other pages keeps it too and only ever leads back into the UI.
    let login = server.http("GET", "/login?lang=vi", &[("Authorization", "")], b"");
    assert_eq!(login.status, 200);
    assert!(String::from_utf8_lossy(&login.body).contains("<html lang=\"vi\">"));
    assert!(login
        .header("set-cookie")
        .unwrap()
        .starts_with("tramy_lang=vi;"));
    for (back, to) in [
        ("%2Fui%2Fstudies%2Fx", "/ui/studies/x"),
        ("%2F%2Fevil.example%2Fui%2F", "/ui/"),
        ("https%3A%2F%2Fevil.example%2F", "/ui/"),
    ] {
        let r = server.http("GET", &format!("/ui/lang/en?back={back}"), &[], b"");
        assert_eq!((r.status, r.header("location")), (303, Some(to)), "{back}");
        assert!(r
            .header("set-cookie")
            .unwrap()
            .starts_with("tramy_lang=en;"));
    }

    // The facility's own clinician sees the study; facility B's sees none of it, in any page.
    server.cli(&["facility", "add", "B", "--name", "Provincial B"]);
    let (local, b) = (clinician(&server, "LOCAL"), clinician(&server, "B"));
    let own = page(&server, &local, "/ui/", "en");
    assert_eq!(own.status, 200);
    assert_eq!(own.header("cache-control"), Some("no-store"));
    assert!(String::from_utf8_lossy(&own.body).contains(&study));
    for path in ["/ui/", "/ui/worklist/table"] {
        let other = page(&server, &b, path, "en");
        assert_eq!(other.status, 200, "{path}");
        let body = String::from_utf8_lossy(&other.body);
        assert!(
            !body.contains(&study) && !body.contains("1CT1"),
            "{path}:\n{body}"
        );
    }
    let other = page(&server, &b, &format!("/ui/studies/{study}"), "vi");
    assert_eq!(other.status, 404);
    let body = String::from_utf8_lossy(&other.body);
    assert!(body.contains("Không có ca chụp này"), "{body}");

    // Both looks at the study page are in the audit trail (queued, written with the next group
    // commit), as reading its findings: B's as not found, the facility's own as a success.
    let _ = page(&server, &local, &format!("/ui/studies/{study}"), "en");
    let audited = |facility: &str, outcome: &str| {
        let trail = server
            .http("GET", &format!("/api/v1/audit?study={study}"), &[], b"")
            .json();
        trail
            .as_array()?
            .iter()
            .any(|e| {
                e["action"] == "read_findings"
                    && e["outcome"] == outcome
                    && e["facility"] == facility
            })
            .then_some(())
    };
    wait_for("B's look in the audit trail", || audited("B", "not_found"));
    wait_for("the clinician's look in the audit trail", || {
        audited("LOCAL", "success")
    });

    // The language follows Accept-Language, and the filters narrow the list.
    let vi = page(&server, &local, "/ui/", "vi-VN,vi;q=0.9,en;q=0.5");
    assert!(String::from_utf8_lossy(&vi.body).contains("<html lang=\"vi\">"));
    let filtered = |query: &str| {
        let r = page(
            &server,
            &local,
            &format!("/ui/worklist/table?{query}"),
            "en",
        );
        assert_eq!(r.status, 200, "{query}");
        String::from_utf8_lossy(&r.body).contains(&study)
    };
    assert!(filtered("modality=CT&from=2004-01-19&to=2004-01-19"));
    assert!(!filtered("modality=MR"));
    assert!(!filtered("from=2004-01-20"));
    assert!(!filtered("flagged=on"));
    let bad = page(&server, &local, "/ui/?from=19.01.2004", "en");
    assert_eq!(bad.status, 400);
}

/// An open event stream: the raw response as it arrives.
struct Stream {
    socket: TcpStream,
    seen: String,
}

impl Stream {
    fn open(server: &TramyServer, session: &str) -> Stream {
        let mut socket = TcpStream::connect(("127.0.0.1", server.http_port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(
            socket,
            "GET /ui/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept-Encoding: gzip\r\nAccept: text/event-stream\r\nCookie: tramy_session={session}\r\n\r\n"
        )
        .unwrap();
        let mut stream = Stream {
            socket,
            seen: String::new(),
        };
        stream.until("the stream's head", |s| s.contains("\r\n\r\n"));
        assert!(stream.seen.starts_with("HTTP/1.1 200"), "{}", stream.seen);
        assert!(stream.seen.contains("text/event-stream"), "{}", stream.seen);
        // Never compressed, even for a browser that accepts gzip: events go out as they happen.
        let head = stream.seen.to_ascii_lowercase();
        assert!(!head.contains("content-encoding"), "{}", stream.seen);
        stream
    }

    /// Reads until `done` holds for what arrived, or the server closes the stream.
    fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut buf = [0u8; 4096];
        while !done(&self.seen) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.seen
            );
            match self.socket.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("{what}: {e}"),
            }
        }
        true
    }

    /// Reads to the end of the stream (its last chunk, or the server closed the connection).
    fn read_to_close(&mut self, what: &str) {
        self.until(what, |s| s.ends_with("\r\n0\r\n\r\n"));
    }
}

fn sign_out(server: &TramyServer, session: &str) {
    let r = server.http(
        "POST",
        "/logout",
        &[
            ("Authorization", ""),
            ("Cookie", &format!("tramy_session={session}")),
        ],
        b"",
    );
    assert_eq!(r.status, 303);
}

#[test]
fn the_event_stream_tells_only_its_user_of_changes_once_per_session_until_sign_out() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    server.cli(&["facility", "add", "B", "--name", "Provincial B"]);
    let (local, b) = (clinician(&server, "LOCAL"), clinician(&server, "B"));

    // A page that does not accept an event stream gets 406, not a stream that never ends.
    let r = server.http("GET", "/ui/events", &[("Accept", "text/html")], b"");
    assert_eq!(r.status, 406);

    let mut mine = Stream::open(&server, &local);
    let mut theirs = Stream::open(&server, &b);
    let ct = repo_root().join(CT);
    server.store_files(&[&ct], "a CT study of facility LOCAL");
    assert!(mine.until("the worklist event", |s| s.contains("event: worklist")));

    // A second page of the same session takes the stream: the first is told and closed.
    let mut again = Stream::open(&server, &local);
    mine.read_to_close("the replaced stream's end");
    assert!(mine.seen.contains("event: closed"), "{}", mine.seen);

    // Signing out ends the session's stream.
    sign_out(&server, &local);
    again.read_to_close("the signed-out stream's end");
    assert!(again.seen.contains("event: closed"), "{}", again.seen);

    // B's stream polled the same change (each poll is a second apart) but was never told: the
    // study is not B's.
    std::thread::sleep(Duration::from_secs(3));
    sign_out(&server, &b);
    theirs.read_to_close("B's stream's end");
    assert!(!theirs.seen.contains("event: worklist"), "{}", theirs.seen);
}

#[test]
fn the_worklist_filters_find_their_studies_however_far_down_the_order_they_are() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let (ct, mr) = (
        repo_root().join(CT),
        repo_root().join("dicom-samples/mr_small_explicit_le.dcm"),
    );
    // The CT arrives first, so it leads the (unflagged) worklist.
    server.store_files(&[&ct], "the CT");
    server.store_files(&[&mr], "the MR");
    let (ct_study, mr_study) = (study_of(&ct), study_of(&mr));
    let studies = |query: &str| -> Vec<String> {
        let r = server.http("GET", &format!("/api/v1/worklist?{query}"), &[], b"");
        assert_eq!(
            r.status,
            200,
            "{query}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["study_instance_uid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(studies("limit=1"), [ct_study.as_str()]);
    // One row asked for, the filter still finds the MR below the CT.
    assert_eq!(studies("limit=1&modality=mr"), [mr_study.as_str()]);
    let date = |path: &Path| {
        let obj = dicom_object::open_file(path).unwrap();
        tramy::dicom::attributes::text(&obj, tags::STUDY_DATE)
    };
    let (ct_date, mr_date) = (date(&ct), date(&mr));
    let on_the_ct_day = studies(&format!("from={ct_date}&to={ct_date}"));
    assert!(on_the_ct_day.contains(&ct_study), "{on_the_ct_day:?}");
    assert_eq!(on_the_ct_day.contains(&mr_study), mr_date == ct_date);
    assert!(studies("to=19000101").is_empty(), "no study is that old");
    assert!(studies("flagged=true").is_empty(), "nothing was triaged");
    let bad = server.http("GET", "/api/v1/worklist?from=2026-01-01", &[], b"");
    assert_eq!(bad.status, 400);

    // The web UI's filters are the same query: the MR's page lists only the MR.
    let page = server.http(
        "GET",
        "/ui/worklist/table?modality=MR",
        &[("Accept", "text/html")],
        b"",
    );
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains(&mr_study) && !html.contains(&ct_study),
        "{html}"
    );
}
