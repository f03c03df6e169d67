//! The facility dashboard and the admin pages (issue #15 item 5): a real headless Chromium
//! (Debian `chromium` and `chromium-driver`, driven by Selenium from
//! `tests/clients/ui_dashboard_check.py`) reads a facility's dashboard, whose counts must be
//! those of `GET /api/v1/facilities/{code}/stats`, with one bar per day and a failed delivery
//! with its reason; adds an AE title and makes and revokes a token through the admin pages, each
//! seen by the JSON API; and reads the dashboard in Vietnamese with no English left. Plain HTTP
//! checks who may see what (another facility's clinician: 403), the flag rates per model
//! version, and that the pages' changes are audited as the API's are.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// A port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A server of facility LOCAL that forwards everything to a DIMSE peer that is not there.
fn server_with_a_dead_peer() -> TramyServer {
    TramyServer::start_with_config(&format!(
        r#"
[triage]
enabled = false

[[peers]]
name = "closed-pacs"
dimse = "NOBODY@127.0.0.1:{}"
facility = "LOCAL"

[[forward]]
to = "closed-pacs"

[forwarding]
max_backoff = "2s"
"#,
        closed_port()
    ))
}

/// Two studies of LOCAL: two CT instances and one.
fn store_two_studies(server: &TramyServer, dir: &Path) -> (String, String) {
    let (first, files) = make_study_with(&dir.join("first"), 2, &[]);
    let (second, more) = make_study_with(&dir.join("second"), 1, &[]);
    let all: Vec<&Path> = files.iter().chain(&more).map(PathBuf::as_path).collect();
    server.store_files(&all, "two studies of facility LOCAL");
    (first, second)
}

/// The study's delivery to the dead peer once it has failed, with its reason.
fn failed_delivery(server: &TramyServer, study: &str) -> serde_json::Value {
    wait_long("the delivery to the closed port to fail", 120, || {
        let (code, body) = server.http_get(&format!("/api/v1/studies/{study}/deliveries"))?;
        assert_eq!(code, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        let entry = list.as_array()?.first()?.clone();
        entry["last_error"].is_string().then_some(entry)
    })
}

fn bearer(
    server: &TramyServer,
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> HttpResponse {
    server.http(
        method,
        path,
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Accept", "text/html"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body,
    )
}

#[test]
fn an_admin_reads_the_dashboards_counts_and_failures_and_manages_ae_titles_and_tokens_in_the_browser(
) {
    let server = server_with_a_dead_peer();
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = store_two_studies(&server, tmp.path());
    let failed = failed_delivery(&server, &first);
    let stats = server
        .http("GET", "/api/v1/facilities/LOCAL/stats", &[], b"")
        .json();
    let today = stats["to"].as_str().unwrap().to_string();
    let day = stats["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["date"] == today.as_str())
        .cloned()
        .unwrap();
    assert_eq!(day["received"]["instances"], 3, "{stats:#}");
    assert_eq!(day["received"]["studies"], 2, "{stats:#}");

    let out = tmp.path().join("browser");
    std::fs::create_dir_all(&out).unwrap();
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/clients/ui_dashboard_check.py"))
        .arg(format!("http://127.0.0.1:{}", server.http_port))
        .arg(&out)
        .args(["LOCAL", "UI-ADDED"])
        .env("TRAMY_TOKEN", server.token())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The token the page showed works against the API until the page revokes it.
    let made = wait_long("the token made in the browser", 300, || {
        std::fs::read_to_string(out.join("token"))
            .ok()
            .or_else(|| child.try_wait().unwrap().map(|_| String::new()))
    });
    let with_new = |path: &str| {
        let auth = format!("Bearer {}", made.trim());
        server
            .http("GET", path, &[("Authorization", &auth)], b"")
            .status
    };
    if !made.is_empty() {
        assert_eq!(with_new("/api/v1/worklist"), 200);
        std::fs::write(out.join("checked"), b"").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let keep = std::env::temp_dir().join("tramy-ui-dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&keep);
    let _ = Command::new("cp").arg("-r").arg(&out).arg(&keep).status();
    let see = format!("screenshots in {}", keep.display());
    assert_success(&output, &format!("ui_dashboard_check.py ({see})"));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report.get("error").is_none(), "{report:#} ({see})");

    // Today's figures are the API's, in the table and in the charts, one bar per day.
    let dash = &report["dashboard"];
    assert_eq!(dash["today"], today.as_str(), "{report:#}");
    assert_eq!(dash["received"], "3");
    assert_eq!(dash["studies"], "2");
    assert_eq!(dash["total_received"], "3");
    assert_eq!(dash["total_studies"], "2");
    assert_eq!(dash["table_rows"], 30);
    let charts = dash["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 4, "{dash:#}");
    for chart in charts {
        assert_eq!(chart["role"], "img", "{chart}");
        assert!(!chart["title"].as_str().unwrap().is_empty(), "{chart}");
        assert_eq!(chart["bars"], 30, "{chart}");
    }
    assert_eq!(charts[0]["id"], "chart-received");
    assert_eq!(charts[0]["today"], "3");
    assert_eq!(charts[1]["today"], "2");
    for chart in dash["week"].as_array().unwrap() {
        assert_eq!(chart["bars"], 7, "{chart}");
    }
    // The failed delivery is listed with the reason the outbox recorded.
    let listed = dash["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["study"] == first.as_str())
        .unwrap_or_else(|| panic!("{dash:#}"));
    assert_eq!(listed["peer"], "closed-pacs");
    assert_eq!(listed["failed"], true, "{listed}");
    let reason = listed["reason"].as_str().unwrap();
    assert!(!reason.is_empty());
    assert_eq!(Some(reason), failed["last_error"].as_str(), "{failed}");

    // The peers page tells how the dead peer's outbox stands: all three instances waiting or
    // failed, with the reason.
    let peer_cell = |page: &str, class: &str| -> i64 {
        let row = page.split("<tr data-peer=\"closed-pacs\">").nth(1).unwrap();
        let cell = row
            .split(&format!("class=\"num {class}\">"))
            .nth(1)
            .unwrap();
        cell.split('<').next().unwrap().parse().unwrap()
    };
    wait_long("the peers page to show the failure", 60, || {
        let page = server.http("GET", "/ui/admin/peers", &[("Accept", "text/html")], b"");
        assert_eq!(page.status, 200);
        let page = String::from_utf8_lossy(&page.body).to_string();
        let (pending, failed, dead) = (
            peer_cell(&page, "pending"),
            peer_cell(&page, "failed"),
            peer_cell(&page, "dead"),
        );
        assert_eq!(pending + failed + dead, 3, "{page}");
        (failed + dead > 0 && page.contains(reason)).then_some(())
    });

    // No page scrolls sideways at a tablet's width.
    assert_eq!(report["tablet"]["dashboard"], 0, "{report:#} ({see})");
    assert_eq!(report["tablet"]["tokens"], 0, "{report:#} ({see})");

    // The AE title added in the page is the API's; the same one again is refused, with why.
    let ae = &report["ae"];
    assert_eq!(ae["path"], "/ui/admin/ae-titles");
    assert!(ae["again"].as_str().unwrap().contains("UI-ADDED"), "{ae}");
    let listed = server.http("GET", "/api/v1/ae-titles", &[], b"").json();
    let added = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ae_title"] == "UI-ADDED")
        .unwrap_or_else(|| panic!("{listed:#}"));
    assert_eq!(added["facility"], "LOCAL");
    assert_eq!(added["host"], "127.0.0.1");
    assert_eq!(added["port"], 11112);

    // The token was shown once, and stopped working once revoked in the page.
    let token = &report["token"];
    assert_eq!(token["shown_again"], false, "{token}");
    assert_eq!(token["path"], "/ui/admin/tokens");
    assert_eq!(with_new("/api/v1/worklist"), 401);

    // In Vietnamese: no English left, dates as 30/11/2026.
    let vi = &report["vi"];
    assert_eq!(vi["path"], "/ui/dashboard");
    let text = vi["text"].as_str().unwrap();
    let left = english_left(text);
    assert!(
        left.is_empty(),
        "English on the Vietnamese dashboard: {left:?}\n{text}"
    );
    let (y, m, d) = (&today[0..4], &today[5..7], &today[8..10]);
    assert!(text.contains(&format!("{d}/{m}/{y}")), "{text}");
    for title in vi["chart_titles"].as_array().unwrap() {
        let title = title.as_str().unwrap();
        assert!(english_left(title).is_empty(), "{title}");
    }
}

/// A token of a new `role` of `facility`.
fn token_of(server: &TramyServer, facility: &str, role: &str) -> String {
    server.cli(&["token", "create", "--facility", facility, "--role", role])
}

#[test]
fn only_a_facilitys_own_admins_and_clinicians_see_its_dashboard_and_only_admins_the_admin_pages() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let tmp = tempfile::tempdir().unwrap();
    store_two_studies(&server, tmp.path());
    server.cli(&["facility", "add", "B", "--name", "Provincial B"]);
    let b_clinician = token_of(&server, "B", "clinician");
    let local_clinician = token_of(&server, "LOCAL", "clinician");
    let b_admin = token_of(&server, "B", "admin");
    let page = |token: &str, path: &str| bearer(&server, token, "GET", path, b"");

    // Another facility's clinician: 403 on LOCAL's dashboard and on every admin page; their
    // own dashboard shows none of LOCAL's arrivals.
    assert_eq!(
        page(&b_clinician, "/ui/dashboard?facility=LOCAL").status,
        403
    );
    let own = page(&b_clinician, "/ui/dashboard");
    assert_eq!(own.status, 200);
    let own = String::from_utf8_lossy(&own.body).to_string();
    assert!(own.contains("id=\"total-received\">0<"), "{own}");
    for path in [
        "/ui/admin/facilities",
        "/ui/admin/ae-titles",
        "/ui/admin/tokens",
        "/ui/admin/peers",
    ] {
        assert_eq!(page(&b_clinician, path).status, 403, "{path}");
        assert_eq!(page(&local_clinician, path).status, 403, "{path}");
    }
    let post = bearer(
        &server,
        &b_clinician,
        "POST",
        "/ui/admin/ae-titles",
        b"ae_title=SNEAKY&facility=B",
    );
    assert_eq!(post.status, 403);
    // Another facility's admin may not read LOCAL's dashboard, nor add an AE title to it (the
    // API's check and reason, shown in the page); the peers are the superadmin's.
    assert_eq!(page(&b_admin, "/ui/dashboard?facility=LOCAL").status, 403);
    let post = bearer(
        &server,
        &b_admin,
        "POST",
        "/ui/admin/ae-titles",
        b"ae_title=SNEAKY&facility=LOCAL",
    );
    assert_eq!(post.status, 403);
    assert!(String::from_utf8_lossy(&post.body).contains("id=\"admin-error\""));
    assert_eq!(page(&b_admin, "/ui/admin/peers").status, 403);
    let listed = server.http("GET", "/api/v1/ae-titles", &[], b"").json();
    assert!(!listed.to_string().contains("SNEAKY"), "{listed}");
    // A bad port is refused with its reason; nothing is stored.
    let post = bearer(
        &server,
        &b_admin,
        "POST",
        "/ui/admin/ae-titles",
        b"ae_title=BADPORT&facility=B&port=99999",
    );
    assert_eq!(post.status, 400);
    assert!(String::from_utf8_lossy(&post.body).contains("port"));

    // The facility's own clinician sees it; a bad period is refused.
    assert_eq!(page(&local_clinician, "/ui/dashboard").status, 200);
    assert_eq!(page(&local_clinician, "/ui/dashboard?days=0").status, 400);
    assert_eq!(page(&local_clinician, "/ui/dashboard?days=400").status, 400);
    assert_eq!(
        page(server.token(), "/ui/dashboard?facility=NOPE").status,
        404
    );

    // The admin pages in Vietnamese have no English left.
    for path in [
        "/ui/admin/facilities",
        "/ui/admin/ae-titles",
        "/ui/admin/tokens",
        "/ui/admin/peers",
    ] {
        let r = server.http(
            "GET",
            path,
            &[("Accept", "text/html"), ("Accept-Language", "vi")],
            b"",
        );
        assert_eq!(r.status, 200, "{path}");
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(body.contains("<html lang=\"vi\">"), "{path}");
        // The page's text, without its inlined style sheet.
        let text = match body.split_once("<style>") {
            Some((head, rest)) => format!("{head}{}", rest.split_once("</style>").unwrap().1),
            None => body.clone(),
        };
        let left = english_left(&text);
        assert!(left.is_empty(), "{path}: English left: {left:?}");
    }

    // A change made in a page is audited as the API's: B's admin added an AE title.
    let added = bearer(
        &server,
        &b_admin,
        "POST",
        "/ui/admin/ae-titles",
        b"ae_title=B-MODALITY&facility=B",
    );
    assert_eq!(added.status, 303);
    // (the trail is written behind the answer: wait for it)
    wait_long("the page's change in the audit trail", 60, || {
        let audit = server
            .http("GET", "/api/v1/audit?limit=1000", &[], b"")
            .json();
        let events = audit.as_array()?.clone();
        events
            .iter()
            .any(|e| {
                e["detail"] == "POST /ui/admin/ae-titles 303"
                    && e["action"] == "administer"
                    && e["facility"] == "B"
            })
            .then_some(())
    });
}

#[test]
fn the_flag_rate_of_each_model_version_counts_the_findings_over_threshold_among_those_scored() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let tmp = tempfile::tempdir().unwrap();
    let (study, _) = store_two_studies(&server, tmp.path());
    let sops = server.index_rows(
        "SELECT i.sop_instance_uid, se.series_instance_uid FROM instances i \
         JOIN series se ON i.series_fk = se.id JOIN studies st ON se.study_fk = st.id \
         WHERE st.study_instance_uid = ?1",
        &[&study],
    );
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    // Model m version 1 scored three labels (one flagged), version 2 one (flagged).
    let mut sql = String::new();
    for (k, (version, label, flagged)) in
        [("1", "a", 1), ("1", "b", 0), ("1", "c", 0), ("2", "a", 1)]
            .iter()
            .enumerate()
    {
        let row = &sops[k % sops.len()];
        let (sop, series) = (row[0].as_deref().unwrap(), row[1].as_deref().unwrap());
        sql.push_str(&format!(
            "INSERT INTO findings (study_instance_uid, series_instance_uid, sop_instance_uid, model, \
             model_version, label, probability, flagged, urgency, statement, created_at) VALUES \
             ('{study}', '{series}', '{sop}', 'm', '{version}', '{label}', 0.5, {flagged}, 'routine', 'research', '{now}');"
        ));
    }
    server.index_execute(&sql, &sql);
    let body = |lang: &str| {
        let r = server.http(
            "GET",
            "/ui/dashboard",
            &[("Accept", "text/html"), ("Accept-Language", lang)],
            b"",
        );
        assert_eq!(r.status, 200);
        String::from_utf8_lossy(&r.body).to_string()
    };
    let rows = |page: &str| -> Vec<String> {
        page.split("<tr class=\"rate\">")
            .skip(1)
            .map(|r| {
                r.split("</tr>")
                    .next()
                    .unwrap()
                    .replace("<td class=\"num\">", "|")
                    .replace("<td>", "|")
                    .replace("</td>", "")
            })
            .collect()
    };
    assert_eq!(
        rows(&body("en")),
        ["|m|1|3|1|33.3 %", "|m|2|1|1|100.0 %"],
        "per model version: scored, over threshold, rate"
    );
    assert_eq!(rows(&body("vi")), ["|m|1|3|1|33,3 %", "|m|2|1|1|100,0 %"]);
}

#[test]
fn an_ae_title_removed_in_the_admin_page_may_no_longer_associate_and_another_facilitys_stays() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    server.cli(&["facility", "add", "B", "--name", "Provincial B"]);
    server.cli(&["ae", "add", "B-CR", "--facility", "B"]);
    let b_admin = token_of(&server, "B", "admin");
    let (allowed, said) = echo_said(&server.port(), "B-CR");
    assert!(allowed.status.success(), "{said}");

    // B's admin may not remove LOCAL's AE title: unknown to them (as the API says), still there.
    let remove = |token: &str, ae: &str| {
        bearer(
            &server,
            token,
            "POST",
            &format!("/ui/admin/ae-titles/{ae}/remove"),
            b"",
        )
    };
    let refused = remove(&b_admin, "STORESCU");
    assert_eq!(refused.status, 404);
    let body = String::from_utf8_lossy(&refused.body).to_string();
    assert!(body.contains("no AE title STORESCU"), "{body}");
    let (still, said) = echo_said(&server.port(), "STORESCU");
    assert!(still.status.success(), "{said}");

    // Their own: gone from the API's list, and refused at the next association.
    assert_eq!(remove(&b_admin, "B-CR").status, 303);
    let listed = server.http("GET", "/api/v1/ae-titles", &[], b"").json();
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["ae_title"] == "B-CR"),
        "{listed:#}"
    );
    let (gone, said) = echo_said(&server.port(), "B-CR");
    assert!(!gone.status.success(), "{said}");

    // The API removes the same way.
    server.cli(&["ae", "add", "B-DX", "--facility", "B"]);
    let auth = format!("Bearer {b_admin}");
    let api = |path: &str| server.http("DELETE", path, &[("Authorization", &auth)], b"");
    assert_eq!(api("/api/v1/ae-titles/B-DX").status, 204);
    assert_eq!(api("/api/v1/ae-titles/B-DX").status, 404);
}

/// The per-day rows of a dashboard page: (date, received instances, received studies).
fn day_rows(page: &str) -> Vec<(String, String, String)> {
    page.split("<tr data-date=\"")
        .skip(1)
        .map(|r| {
            let date = r.split('"').next().unwrap().to_string();
            let cell = |class: &str| {
                let from = r.split(&format!("class=\"num {class}\">")).nth(1).unwrap();
                from.split('<').next().unwrap().to_string()
            };
            (date, cell("received"), cell("studies"))
        })
        .collect()
}

#[test]
fn every_days_row_of_the_dashboard_is_the_stats_apis_over_two_days() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = store_two_studies(&server, tmp.path());
    // The first study arrived yesterday, as someone with the database would move it.
    let yesterday = (chrono::Utc::now() - chrono::TimeDelta::days(1))
        .format("%Y-%m-%dT12:00:00.000Z")
        .to_string();
    let moved = format!(
        "UPDATE instances SET received_at = '{yesterday}' WHERE series_fk IN \
         (SELECT se.id FROM series se JOIN studies st ON se.study_fk = st.id \
         WHERE st.study_instance_uid = '{first}');"
    );
    server.index_execute(&moved, &moved);
    let stats = server
        .http(
            "GET",
            &format!(
                "/api/v1/facilities/LOCAL/stats?from={}",
                (chrono::Utc::now() - chrono::TimeDelta::days(6)).format("%Y-%m-%d")
            ),
            &[],
            b"",
        )
        .json();
    let api: Vec<(String, String, String)> = stats["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["date"].as_str().unwrap().to_string(),
                d["received"]["instances"].to_string(),
                d["received"]["studies"].to_string(),
            )
        })
        .collect();
    assert_eq!(api.len(), 2, "{stats:#}");
    let page = server.http(
        "GET",
        "/ui/dashboard?days=7",
        &[("Accept", "text/html")],
        b"",
    );
    assert_eq!(page.status, 200);
    let page = String::from_utf8_lossy(&page.body).to_string();
    let rows = day_rows(&page);
    assert_eq!(rows.len(), 7);
    let shown: Vec<_> = rows.into_iter().filter(|(_, n, _)| n != "0").collect();
    assert_eq!(
        shown, api,
        "the dashboard's days with arrivals are the API's"
    );
    assert_eq!(page.matches("<rect class=\"chart-bar\"").count(), 4 * 7);
}

#[test]
fn a_superadmin_adds_a_peer_in_the_admin_page_that_the_api_lists_and_removes_it_again() {
    let server = TramyServer::start_with_config("[triage]\nenabled = false\n");
    server.cli(&["facility", "add", "HUB", "--name", "National hub"]);
    let superadmin = server.token().to_string();
    let form =
        b"name=hub&kind=dicomweb&facility=HUB&dicomweb_url=https%3A%2F%2Fhub.example%2Fdicomweb\
&max_bytes_per_sec=2000000&windows=22%3A00-06%3A00";
    let added = bearer(&server, &superadmin, "POST", "/ui/admin/peers", form);
    assert_eq!(
        added.status,
        303,
        "{}",
        String::from_utf8_lossy(&added.body)
    );
    let peers = server.http("GET", "/api/v1/peers", &[], b"").json();
    let hub = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hub")
        .unwrap_or_else(|| panic!("{peers:#}"))
        .clone();
    assert_eq!(
        hub["dicomweb_url"], "https://hub.example/dicomweb",
        "{hub:#}"
    );
    assert_eq!(hub["windows"][0], "22:00-06:00", "{hub:#}");
    let page = bearer(&server, &superadmin, "GET", "/ui/admin/peers", b"");
    assert!(String::from_utf8_lossy(&page.body).contains("data-peer=\"hub\""));

    // A description the API refuses is refused here with its reason, and nothing is added.
    let bad = bearer(
        &server,
        &superadmin,
        "POST",
        "/ui/admin/peers",
        b"name=bad%20name&facility=HUB&dicomweb_url=https%3A%2F%2Fx.example",
    );
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("peer name"));
    // A facility's admin may not add one.
    let admin = token_of(&server, "LOCAL", "admin");
    assert_eq!(
        bearer(&server, &admin, "POST", "/ui/admin/peers", form).status,
        403
    );

    // Removed from the page: gone from the API's list.
    let removed = bearer(
        &server,
        &superadmin,
        "POST",
        "/ui/admin/peers/hub/remove",
        b"",
    );
    assert_eq!(removed.status, 303);
    let peers = server.http("GET", "/api/v1/peers", &[], b"").json();
    assert!(
        !peers.as_array().unwrap().iter().any(|p| p["name"] == "hub"),
        "{peers:#}"
    );
}
