//! Doctors' feedback on AI findings, the study page's share dialog and the worklist's
//! "reviewed" filter (issue #15 items 2-3). A real headless Chromium (Debian `chromium`,
//! driven by Selenium from `tests/clients/ui_feedback_check.py`) signs in as a clinician,
//! agrees with the pneumonia finding of a Kermany chest X-ray wrapped as DX with a comment,
//! reloads, shares the study as a link and reads the page in Vietnamese; plain HTTP checks what
//! others see: a colleague reads the verdict, another facility gets 404, the audit trail and
//! the CSV export hold it (without the patient's name), and the "not reviewed" filter drops
//! the study.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use dicom_dictionary_std::tags;

/// A token of a new user of `facility` with `role`, named `name`.
fn token(server: &TramyServer, facility: &str, role: &str, name: &str) -> String {
    server.cli(&[
        "token",
        "create",
        "--facility",
        facility,
        "--role",
        role,
        "--name",
        name,
    ])
}

/// A request as the holder of `token`.
fn as_user(
    server: &TramyServer,
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    if method == "POST" {
        headers.push(("Content-Type", "application/json"));
    }
    server.http(method, path, &headers, body)
}

fn text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

/// Whether the worklist (`query` added) lists `study`, through the API and through the UI's
/// table.
fn listed(server: &TramyServer, token: &str, study: &str, api: &str, ui: &str) -> (bool, bool) {
    let list = as_user(
        server,
        token,
        "GET",
        &format!("/api/v1/worklist?{api}"),
        b"",
    );
    assert_eq!(list.status, 200, "{}", text(&list));
    let in_api = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["study_instance_uid"] == study);
    let table = as_user(
        server,
        token,
        "GET",
        &format!("/ui/worklist/table?{ui}"),
        b"",
    );
    assert_eq!(table.status, 200, "{}", text(&table));
    (in_api, text(&table).contains(study))
}

fn run_browser(server: &TramyServer, out: &Path, token: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new(python())
        .arg(repo_root().join("tests/clients/ui_feedback_check.py"))
        .arg(format!("http://127.0.0.1:{}", server.http_port))
        .arg(out)
        .args(args)
        .env("TRAMY_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let keep = std::env::temp_dir().join("tramy-ui-feedback-screenshots");
    let _ = std::fs::remove_dir_all(&keep);
    let _ = Command::new("cp").arg("-r").arg(out).arg(&keep).status();
    let see = format!("screenshots in {}", keep.display());
    assert_success(&output, &format!("ui_feedback_check.py ({see})"));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    if report.get("error").is_some() {
        let log = server.log();
        let tail: String = log
            .chars()
            .skip(log.chars().count().saturating_sub(6000))
            .collect();
        panic!("{report:#} ({see})\nserver log:\n{tail}");
    }
    report
}

#[test]
fn a_doctor_agrees_with_a_finding_and_colleagues_the_export_the_audit_and_the_worklist_see_it() {
    let (_, images) = pneumonia_model();
    // A referral hospital that is down: the study's delivery to it fails, with the reason. Its
    // port is a privileged one nothing here listens on (a port merely free now may be taken
    // later by the browser's driver, and the forwarder would talk DICOM to it).
    let server = TramyServer::start_with_config(
        r#"
[[peers]]
name = "hospital-pacs"
dimse = "TRAMY@127.0.0.1:9"
facility = "LOCAL"

[[forward]]
to = "hospital-pacs"

[forwarding]
max_backoff = "2s"
"#,
    );
    let tmp = tempfile::tempdir().unwrap();
    let dx = tmp.path().join("pneumonia.dcm");
    wrap_jpeg_as_dx(&images.join("PNEUMONIA/person1946_bacteria_4874.jpeg"), &dx);
    let obj = dicom_object::open_file(&dx).unwrap();
    let study = tramy::dicom::attributes::text(&obj, tags::STUDY_INSTANCE_UID);
    let patient_name = tramy::dicom::attributes::text(&obj, tags::PATIENT_NAME);
    let family_name = patient_name.split('^').next().unwrap().to_string();
    assert!(family_name.len() >= 3, "{patient_name}");

    server.cli(&["facility", "add", "B", "--name", "Provincial B"]);
    let an = token(&server, "LOCAL", "clinician", "Dr An");
    let binh = token(&server, "LOCAL", "clinician", "Dr Binh");
    let other = token(&server, "B", "clinician", "Dr Other");
    let researcher = token(&server, "LOCAL", "researcher", "Researcher");

    server.store_files(&[&dx], "the pneumonia chest X-ray");
    wait_long("triage of the study", 300, || {
        server
            .findings(&study)
            .iter()
            .any(|f| f["label"] == "pneumonia" && f["flagged"] == true)
            .then_some(())
    });
    let finding = server
        .findings(&study)
        .into_iter()
        .find(|f| f["label"] == "pneumonia")
        .unwrap();
    let id = finding["id"].as_i64().unwrap();
    let feedback_path = format!("/api/v1/studies/{study}/findings/{id}/feedback");

    // The study page follows its delivery: the peer, failed, and why (the page is read again
    // while a retry is under way).
    let delivery = wait_long("the failed delivery on the study page", 120, || {
        let page = as_user(&server, &an, "GET", &format!("/ui/studies/{study}"), b"");
        let body = text(&page);
        let at = body.find("class=\"delivery failed\"")?;
        Some(body[at..].to_string())
    });
    assert!(
        delivery.contains("hospital-pacs") && delivery.contains("Sending failed"),
        "{delivery}"
    );
    assert!(
        delivery.contains("Waiting to be sent") && delivery.contains("Last error:"),
        "{delivery}"
    );

    // Not reviewed yet: the "not reviewed" filter keeps it, the "reviewed" one drops it.
    assert_eq!(
        listed(&server, &an, &study, "reviewed=false", "reviewed=no"),
        (true, true)
    );
    assert_eq!(
        listed(&server, &an, &study, "reviewed=true", "reviewed=yes"),
        (false, false)
    );

    // In the browser: agree with a comment, reload, share as a link, read it in Vietnamese.
    let comment = "Đông đặc thùy dưới phổi phải, phù hợp với phim";
    let out = tmp.path().join("browser");
    std::fs::create_dir_all(&out).unwrap();
    let report = run_browser(
        &server,
        &out,
        &an,
        &[
            &study,
            comment,
            "transferred to the provincial hospital tonight",
        ],
    );
    let mine = &report["feedback"];
    assert_eq!(mine["chosen"], "agree", "{report:#}");
    assert_eq!(mine["comment"], comment, "{report:#}");
    let entries = mine["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{report:#}");
    assert_eq!(entries[0]["name"], "Dr An");
    assert_eq!(entries[0]["comment"], comment);
    assert_eq!(entries[0]["mine"], true);

    // A colleague of the same facility sees it on the page and through the API.
    let page = as_user(&server, &binh, "GET", &format!("/ui/studies/{study}"), b"");
    assert_eq!(page.status, 200);
    let body = text(&page);
    assert!(
        body.contains("Dr An") && body.contains("Đông đặc thùy dưới"),
        "{body}"
    );
    let listed_feedback = as_user(&server, &binh, "GET", &feedback_path, b"").json();
    assert_eq!(
        listed_feedback.as_array().unwrap().len(),
        1,
        "{listed_feedback:#}"
    );
    assert_eq!(listed_feedback[0]["verdict"], "agree");
    assert_eq!(listed_feedback[0]["reviewer_name"], "Dr An");
    assert_eq!(listed_feedback[0]["comment"], comment);
    // Their own verdict is a second one; a new one of theirs replaces it.
    for verdict in ["agree", "disagree"] {
        let r = as_user(
            &server,
            &binh,
            "POST",
            &feedback_path,
            format!(r#"{{"verdict":"{verdict}","comment":"=HYPERLINK(\"x\")"}}"#).as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", text(&r));
    }
    let both = as_user(&server, &binh, "GET", &feedback_path, b"").json();
    let verdicts: Vec<&str> = both
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["agree", "disagree"], "{both:#}");

    // Another facility's clinician learns nothing: 404 to read and to write.
    assert_eq!(
        as_user(&server, &other, "GET", &feedback_path, b"").status,
        404
    );
    let r = as_user(
        &server,
        &other,
        "POST",
        &feedback_path,
        br#"{"verdict":"agree"}"#,
    );
    assert_eq!(r.status, 404, "{}", text(&r));
    // Bad input: the standard's statuses with a reason, nothing stored.
    let long = format!(r#"{{"verdict":"agree","comment":"{}"}}"#, "x".repeat(2001));
    let r = as_user(&server, &binh, "POST", &feedback_path, long.as_bytes());
    assert_eq!(r.status, 400, "{}", text(&r));
    assert!(text(&r).contains("2000"), "{}", text(&r));
    let r = as_user(
        &server,
        &binh,
        "POST",
        &feedback_path,
        br#"{"verdict":"maybe"}"#,
    );
    assert_eq!(r.status, 400, "{}", text(&r));
    // A researcher gives no verdicts, and a clinician reads no export.
    let r = as_user(
        &server,
        &researcher,
        "POST",
        &feedback_path,
        br#"{"verdict":"agree"}"#,
    );
    assert_eq!(r.status, 403, "{}", text(&r));
    assert_eq!(
        as_user(&server, &an, "GET", "/api/v1/feedback", b"").status,
        403
    );

    // The audit trail has the feedback, without its comment.
    let trail = wait_long("the feedback in the audit trail", 60, || {
        let trail = server
            .http("GET", &format!("/api/v1/audit?study={study}"), &[], b"")
            .json();
        trail
            .as_array()?
            .iter()
            .any(|e| e["action"] == "feedback" && e["outcome"] == "success")
            .then_some(trail)
    });
    assert!(!trail.to_string().contains("Đông đặc"), "{trail:#}");

    // The export: one row per current verdict, the finding as reviewed, no patient's name; a
    // formula-like comment is text to a spreadsheet.
    let csv = server.http("GET", "/api/v1/feedback?format=csv", &[], b"");
    assert_eq!(csv.status, 200, "{}", text(&csv));
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let csv = text(&csv);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("study_instance_uid,series_instance_uid,sop_instance_uid,model"));
    assert!(
        lines[1].contains(&study)
            && lines[1].contains(",pneumonia,")
            && lines[1].contains(",agree,"),
        "{csv}"
    );
    assert!(
        lines[1].contains(comment) && lines[1].contains("clinician"),
        "{csv}"
    );
    assert!(lines[1].contains("chest-xray-pneumonia-kermany"), "{csv}");
    assert!(
        lines[2].contains(",disagree,") && lines[2].contains("'=HYPERLINK"),
        "{csv}"
    );
    assert!(!csv.contains(&family_name), "{csv}");
    // The facility's dashboard counts the same current verdicts per model version.
    let dashboard = text(&as_user(&server, &an, "GET", "/ui/dashboard", b""));
    let row = dashboard
        .lines()
        .find(|l| l.contains("class=\"agreement\"") && l.contains("data-label=\"pneumonia\""))
        .unwrap_or_else(|| panic!("no agreement row on the dashboard: {dashboard}"));
    assert!(
        row.contains(
            "<td class=\"num\">1</td><td class=\"num\">1</td><td class=\"num\">50.0 %</td>"
        ),
        "{row}"
    );
    let since_later = server.http(
        "GET",
        "/api/v1/feedback?since=2999-01-01T00:00:00Z",
        &[],
        b"",
    );
    assert_eq!(since_later.json(), serde_json::json!([]));
    assert_eq!(
        server
            .http("GET", "/api/v1/feedback?since=yesterday", &[], b"")
            .status,
        400
    );
    // A researcher sees only what is granted for research: nothing here.
    let r = as_user(&server, &researcher, "GET", "/api/v1/feedback", b"");
    assert_eq!((r.status, r.json()), (200, serde_json::json!([])));

    // Reviewed now: the "not reviewed" filter drops it, and its entry says so.
    assert_eq!(
        listed(&server, &an, &study, "reviewed=false", "reviewed=no"),
        (false, false)
    );
    assert_eq!(
        listed(
            &server,
            &an,
            &study,
            "reviewed=true",
            "reviewed=yes&facility=LOCAL"
        ),
        (true, true)
    );
    let entry = as_user(&server, &an, "GET", "/api/v1/worklist?facility=LOCAL", b"").json();
    let entry = entry
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["study_instance_uid"] == study)
        .cloned()
        .unwrap();
    assert_eq!(entry["reviewed"], true);
    assert_eq!(entry["facilities"], serde_json::json!(["LOCAL"]));
    assert_eq!(
        listed(&server, &an, &study, "facility=B", "facility=B"),
        (false, false)
    );

    // The share dialog made a link that opens the study for whoever holds it.
    let share = &report["share"];
    let href = share["href"].as_str().unwrap();
    let link = &href[href.find("/share/").unwrap()..];
    let opened = server.http("GET", link, &[("Authorization", "")], b"");
    assert_eq!(opened.status, 303, "{share:#}");
    assert_eq!(
        opened.header("location"),
        Some(format!("/viewer?StudyInstanceUIDs={study}").as_str())
    );
    let share_token = link.trim_start_matches("/share/");
    let seen = as_user(
        &server,
        share_token,
        "GET",
        &format!("/api/v1/studies/{study}/findings"),
        b"",
    );
    assert_eq!(seen.status, 200, "{}", text(&seen));

    // The dialog's grant: the patient's studies to facility B, listed in /api/v1/grants.
    let day = (chrono::Utc::now().date_naive() + chrono::Duration::days(3)).to_string();
    let form =
        format!("kind=grant&to_facility=B&expires={day}&consent=&reason=referral+for+surgery");
    let made = server.http(
        "POST",
        &format!("/ui/studies/{study}/share"),
        &[
            ("Authorization", &format!("Bearer {an}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept-Language", "en"),
        ],
        form.as_bytes(),
    );
    assert_eq!(made.status, 200, "{}", text(&made));
    assert!(
        text(&made).contains("id=\"share-grant\""),
        "{}",
        text(&made)
    );
    let grants = as_user(&server, &an, "GET", "/api/v1/grants", b"").json();
    assert!(
        grants
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["to_facility"] == "B" && g["patient"].is_string()),
        "{grants:#}"
    );
    let bad_day = server.http(
        "POST",
        &format!("/ui/studies/{study}/share"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"kind=link&expires=2001-01-01&reason=x",
    );
    assert_eq!(bad_day.status, 400);

    // In Vietnamese no English UI text is left; on a tablet the page does not scroll sideways.
    let vi = report["vi"]["study"].as_str().unwrap();
    assert_eq!(english_left(vi), Vec::<String>::new(), "{vi}");
    assert!(vi.contains("Đồng ý") && vi.contains("Chia sẻ"), "{vi}");
    assert_eq!(report["tablet"]["overflow"], 0, "{report:#}");
}
