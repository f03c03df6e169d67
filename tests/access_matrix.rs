//! Every route of the router × every role × own, other and granted data (issue #9 item 5): the
//! allow/deny matrix holds exactly. The routes come from `tramy::web::route_table()`, the list
//! the router is built from, and `expected` has no catch-all arm for them: a new route fails
//! this test until someone decides who may use it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::Method;
use common::*;

const CT: &str = "dicom-samples/ct_small_explicit_le.dcm";
const STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
const PATIENT: &str = "1CT1";

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    Superadmin,
    AdminA,
    ClinicianA,
    ModalityA,
    ResearcherA,
    NodeA,
    /// A clinician of facility B: A's study is another facility's data.
    ClinicianB,
    /// A clinician of facility C, to which A granted the study.
    ClinicianC,
    /// A doctor with no account holding a share link to the study.
    ShareHolder,
}

const EVERYONE: [Who; 10] = [
    Who::Nobody,
    Who::Superadmin,
    Who::AdminA,
    Who::ClinicianA,
    Who::ModalityA,
    Who::ResearcherA,
    Who::NodeA,
    Who::ClinicianB,
    Who::ClinicianC,
    Who::ShareHolder,
];

/// What a request got: the status, and for a list whether A's study was in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Status(u16),
    /// 200 with A's study among the results.
    Listed,
    /// 200 without it.
    NotListed,
}

use Got::*;
use Who::*;

/// Reading A's study's data: A's readers and the granted facility see it; a modality may not
/// read at all; everyone else is told it does not exist.
fn read_study(who: Who) -> Got {
    match who {
        Nobody => Status(401),
        ModalityA => Status(403),
        Superadmin | AdminA | ClinicianA | NodeA | ClinicianC | ShareHolder => Status(200),
        ResearcherA | ClinicianB => Status(404),
    }
}

/// A search: readers get 200, with A's study where they may see it.
fn search(who: Who) -> Got {
    match who {
        Nobody => Status(401),
        ModalityA => Status(403),
        Superadmin | AdminA | ClinicianA | NodeA | ClinicianC | ShareHolder => Listed,
        ResearcherA | ClinicianB => NotListed,
    }
}

/// Storing: everyone with a role that stores.
fn store(who: Who) -> Got {
    match who {
        Nobody => Status(401),
        ResearcherA | ShareHolder => Status(403),
        _ => Status(200),
    }
}

/// Registry administration: superadmin and admins (of their own facility).
fn administer(who: Who, ok: u16) -> Got {
    match who {
        Nobody => Status(401),
        Superadmin | AdminA => Status(ok),
        _ => Status(403),
    }
}

/// The server's own settings: superadmin only.
fn superadmin(who: Who, ok: u16) -> Got {
    match who {
        Nobody => Status(401),
        Superadmin => Status(ok),
        _ => Status(403),
    }
}

/// Exchanging deliveries with a peer server: a node, or an administrator.
fn deliver(who: Who, ok: u16) -> Got {
    match who {
        Nobody => Status(401),
        Superadmin | AdminA | NodeA => Status(ok),
        _ => Status(403),
    }
}

/// Consents and grants: who manages patients' consent and referral, and what they get on A's
/// patient or study (`own`), on it as B (`other`) and as C, to which it is granted (`granted`).
fn share(who: Who, own: u16, other: u16, granted: u16) -> Got {
    match who {
        Nobody => Status(401),
        ModalityA | ResearcherA | NodeA | ShareHolder => Status(403),
        Superadmin | AdminA | ClinicianA => Status(own),
        ClinicianB => Status(other),
        ClinicianC => Status(granted),
    }
}

/// The routes whose GET answers a list of studies or their parts: whether A's study is in it
/// is what they are checked for.
const SEARCHES: [&str; 9] = [
    "/dicomweb/studies",
    "/dicomweb/series",
    "/dicomweb/instances",
    "/dicomweb/studies/{study}/series",
    "/dicomweb/studies/{study}/instances",
    "/dicomweb/studies/{study}/series/{series}/instances",
    "/api/v1/worklist",
    "/ui/",
    "/ui/worklist/table",
];

/// The expected outcome of `route` for `who`. No catch-all: every route is decided here.
fn expected(method: &Method, route: &str, who: Who) -> Got {
    let get = method == Method::GET;
    match route {
        "/healthz" | "/login" if get => Status(200),
        // Sign-in through the identity provider: open, and not configured here.
        "/login/oidc" | "/login/oidc/callback" => Status(404),
        "/login" => Status(401), // a wrong token in the form, whoever asks
        "/logout" => Status(303),
        "/metrics" => administer(who, 200),
        "/openapi.json" => match who {
            Nobody => Status(401),
            _ => Status(200),
        },
        "/dicomweb/studies" | "/dicomweb/studies/{study}" if !get => store(who),
        r if SEARCHES.contains(&r) => search(who),
        "/dicomweb/studies/{study}"
        | "/dicomweb/studies/{study}/metadata"
        | "/dicomweb/studies/{study}/series/{series}"
        | "/dicomweb/studies/{study}/series/{series}/metadata"
        | "/dicomweb/studies/{study}/series/{series}/instances/{sop}"
        | "/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata"
        | "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}"
        | "/dicomweb/studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag}"
        | "/dicomweb/studies/{study}/rendered"
        | "/dicomweb/studies/{study}/thumbnail"
        | "/dicomweb/studies/{study}/series/{series}/rendered"
        | "/dicomweb/studies/{study}/series/{series}/thumbnail"
        | "/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered"
        | "/dicomweb/studies/{study}/series/{series}/instances/{sop}/thumbnail"
        | "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered"
        | "/wado"
        | "/api/v1/studies/{study}/findings" => read_study(who),
        // No model is loaded here: whoever may see the instance learns that; nobody else does.
        "/api/v1/studies/{study}/series/{series}/instances/{sop}/heatmap"
        | "/api/v1/studies/{study}/series/{series}/instances/{sop}/anatomy-mask" => {
            match read_study(who) {
                Status(200) => Status(404),
                other => other,
            }
        }
        "/api/v1/triage/jobs" => match search(who) {
            Listed | NotListed => Status(200),
            other => other,
        },
        // The granted facility sees the patient, so it may record what the patient consents to.
        "/api/v1/patients/{patient}/consents" if get => share(who, 200, 404, 200),
        "/api/v1/patients/{patient}/consents" => share(who, 201, 404, 201),
        "/api/v1/patients/{patient}/consents/{id}/revoke" => share(who, 404, 404, 404),
        // The study's patient has an ID, so linking it is refused (400) by whoever may see it.
        "/api/v1/patients/{patient}/links" if get => share(who, 200, 404, 200),
        "/api/v1/patients/{patient}/links" => share(who, 400, 404, 400),
        "/api/v1/patients/{patient}/links/{id}" => share(who, 404, 404, 404),
        // Read like the patient's links: whoever may manage the patient and sees them.
        "/api/v1/patients/{patient}/link-suggestions" => share(who, 200, 404, 200),
        // A grant of A's study to B: the superadmin must name the facility (400 without).
        "/api/v1/grants" if get => share(who, 200, 200, 200),
        // Only the facility holding the study can grant it (C, the recipient, would be granting
        // to itself: 400).
        "/api/v1/grants" => match share(who, 201, 404, 400) {
            Status(201) if who == Superadmin => Status(400),
            other => other,
        },
        "/api/v1/grants/{id}" => share(who, 404, 404, 404),
        "/api/v1/share-links" => match share(who, 201, 404, 404) {
            Status(201) if who == Superadmin => Status(400),
            other => other,
        },
        // An open route: the link itself is the credential, and this one is made up.
        "/share/{token}" => Status(401),
        // Priors from a peer: a facility's clinician or admin, or a superadmin; the matrix's body
        // is empty, so whoever may ask gets 400 (a peer is never called).
        "/api/v1/peers/{name}/retrieve" => match who {
            Nobody => Status(401),
            Superadmin | AdminA | ClinicianA | ClinicianB | ClinicianC => Status(400),
            ModalityA | ResearcherA | NodeA | ShareHolder => Status(403),
        },
        "/api/v1/facilities" if get => administer(who, 200),
        // A facility's public signing key: for anyone who authenticates (a share link only reads
        // its study).
        "/api/v1/facilities/{code}/keys" => match who {
            Nobody => Status(401),
            ShareHolder => Status(403),
            _ => Status(200),
        },
        "/api/v1/facilities" => match who {
            Nobody => Status(401),
            Superadmin => Status(201),
            _ => Status(403),
        },
        // A facility's delivery counts: its own admins and clinicians, and the superadmin.
        "/api/v1/facilities/{code}/stats" => match who {
            Nobody => Status(401),
            Superadmin | AdminA | ClinicianA => Status(200),
            _ => Status(403),
        },
        // Research sets: researchers (an empty set without a research grant) and the superadmin.
        "/api/v1/research/exports" => match who {
            Nobody => Status(401),
            Superadmin | ResearcherA => Status(200),
            _ => Status(403),
        },
        "/api/v1/ae-titles" | "/api/v1/tokens" if get => administer(who, 200),
        "/api/v1/ae-titles" | "/api/v1/tokens" => administer(who, 201),
        "/api/v1/tokens/{id}" => administer(who, 404),
        // The audit trail: superadmin all of it, an admin its facility's part.
        "/api/v1/audit" => administer(who, 200),
        // Peers are the whole server's: superadmin only.
        "/api/v1/peers" if get => superadmin(who, 200),
        "/api/v1/peers" => superadmin(who, 201),
        "/api/v1/peers/{name}" | "/api/v1/peers/{name}/retry" => superadmin(who, 404),
        "/api/v1/studies/{study}/deliveries" => read_study(who),
        // What a peer server does here: a node, an admin or superadmin (an empty manifest is
        // not one).
        "/api/v1/deliveries" => deliver(who, 400),
        "/api/v1/deliveries/check" => deliver(who, 200),
        // The web UI: a study's page is its findings; the event stream answers only a client
        // that accepts one (406 here), after the role's check; the language switch is anyone's.
        "/ui/studies/{study}" => read_study(who),
        // Feedback on a finding (there is none here: whoever may read findings learns that);
        // giving it is a clinician's or an admin's; the export is a researcher's or an admin's.
        "/api/v1/studies/{study}/findings/{finding}/feedback" if get => match who {
            Nobody => Status(401),
            ModalityA => Status(403),
            _ => Status(404),
        },
        "/api/v1/studies/{study}/findings/{finding}/feedback"
        | "/ui/studies/{study}/findings/{finding}/feedback" => match who {
            Nobody => Status(401),
            ModalityA | ResearcherA | NodeA | ShareHolder => Status(403),
            _ => Status(404),
        },
        "/api/v1/feedback" => match who {
            Nobody => Status(401),
            Superadmin | AdminA | ResearcherA => Status(200),
            _ => Status(403),
        },
        // The study page's share dialog makes a share link as `/api/v1/share-links` does.
        "/ui/studies/{study}/share" => match share(who, 200, 404, 404) {
            Status(200) if who == Superadmin => Status(400),
            other => other,
        },
        "/ui/events" => match who {
            Nobody => Status(401),
            ModalityA => Status(403),
            _ => Status(406),
        },
        "/ui/lang/{lang}" => match who {
            Nobody => Status(401),
            _ => Status(303),
        },
        // The viewer's settings: no data, for whoever may open the viewer (a share link too);
        // 404 where the build could not fetch the viewer.
        "/app-config.js" => match who {
            Nobody => Status(401),
            _ if tramy::config::HttpConfig::default()
                .viewer_files()
                .is_none() =>
            {
                Status(404)
            }
            _ => Status(200),
        },
        // The facility dashboard: as the facility's counts (a caller's own facility; B's and
        // C's clinicians see their own).
        "/ui/dashboard" => match who {
            Nobody => Status(401),
            Superadmin | AdminA | ClinicianA | ClinicianB | ClinicianC => Status(200),
            _ => Status(403),
        },
        // The admin pages: as the registry's API (a changed form redirects to its list).
        "/ui/admin/" => administer(who, 303),
        "/ui/admin/facilities" | "/ui/admin/ae-titles" | "/ui/admin/tokens" if get => {
            administer(who, 200)
        }
        "/ui/admin/facilities" => match who {
            Nobody => Status(401),
            Superadmin => Status(303),
            _ => Status(403),
        },
        "/ui/admin/ae-titles" => administer(who, 303),
        "/ui/admin/tokens" => administer(who, 200),
        "/ui/admin/tokens/{id}/revoke"
        | "/ui/admin/ae-titles/{ae_title}/remove"
        | "/api/v1/ae-titles/{ae_title}" => administer(who, 404),
        "/ui/admin/peers" if get => superadmin(who, 200),
        // A peer from the page: the matrix's form is empty, so whoever may add one gets 400.
        "/ui/admin/peers" => superadmin(who, 400),
        "/ui/admin/peers/{name}/remove" => superadmin(who, 404),
        other => panic!("{method} {other}: no expectation; decide who may use this route"),
    }
}

struct World {
    server: TramyServer,
    tokens: Vec<(Who, String)>,
    series: String,
    sop: String,
    unique: AtomicUsize,
}

impl World {
    fn token(&self, who: Who) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(w, _)| *w == who)
            .map(|(_, t)| t.as_str())
    }

    fn fill(&self, route: &str) -> String {
        let path = route
            .replace("{study}", STUDY)
            .replace("{series}", &self.series)
            .replace("{sop}", &self.sop)
            .replace("{frames}", "1")
            .replace("{frame}", "1")
            .replace("{finding}", "1")
            .replace("{tag}", "7FE00010")
            .replace("{patient}", PATIENT)
            .replace("{code}", "A")
            .replace("{name}", "no-such-peer")
            .replace("{id}", "0123456789abcdef")
            .replace("{ae_title}", "NO-SUCH-AE")
            .replace(
                "{token}",
                "tramyshare_0123456789abcdef0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            );
        match route {
            "/wado" => format!(
                "/wado?requestType=WADO&studyUID={STUDY}&seriesUID={}&objectUID={}&contentType=application%2Fdicom",
                self.series, self.sop
            ),
            "/api/v1/studies/{study}/series/{series}/instances/{sop}/heatmap" => {
                format!("{path}?model=none&label=none")
            }
            "/api/v1/studies/{study}/series/{series}/instances/{sop}/anatomy-mask" => {
                format!("{path}?anatomy=chest")
            }
            _ => path,
        }
    }

    /// A body that would succeed for whoever may do it.
    fn body(&self, method: &Method, route: &str) -> (String, Vec<u8>) {
        let n = self.unique.fetch_add(1, Ordering::SeqCst);
        let json =
            |v: serde_json::Value| ("application/json".to_string(), v.to_string().into_bytes());
        let form = |text: String| {
            (
                "application/x-www-form-urlencoded".to_string(),
                text.into_bytes(),
            )
        };
        match (method.as_str(), route) {
            ("POST", "/dicomweb/studies" | "/dicomweb/studies/{study}") => {
                stow_body(&[std::fs::read(repo_root().join(CT)).unwrap()])
            }
            ("POST", "/login") => (
                "application/x-www-form-urlencoded".into(),
                b"token=tramy_0000_wrong".to_vec(),
            ),
            ("POST", "/api/v1/patients/{patient}/consents") => json(serde_json::json!({
                "purpose": "referral", "recipient": "C", "source": "paper"
            })),
            ("POST", "/api/v1/patients/{patient}/links") => json(serde_json::json!({
                "study_instance_uid": STUDY
            })),
            ("POST", "/api/v1/grants") => json(serde_json::json!({
                // To C, which holds a grant of it already: the matrix's own requests never
                // open A's study to B.
                "to_facility": "C", "study_instance_uid": STUDY, "scope": ["metadata"],
                "expires_at": (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339(),
                "break_glass_reason": "matrix test"
            })),
            ("POST", "/api/v1/share-links") => json(serde_json::json!({
                "study_instance_uid": STUDY,
                "expires_at": (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339(),
                "break_glass_reason": "matrix test"
            })),
            ("POST", "/api/v1/studies/{study}/findings/{finding}/feedback") => {
                json(serde_json::json!({ "verdict": "agree" }))
            }
            ("POST", "/ui/studies/{study}/findings/{finding}/feedback") => (
                "application/x-www-form-urlencoded".into(),
                b"verdict=agree&comment=matrix".to_vec(),
            ),
            ("POST", "/ui/studies/{study}/share") => (
                "application/x-www-form-urlencoded".into(),
                format!(
                    "kind=link&expires={}&reason=matrix+test",
                    chrono::Utc::now().date_naive() + chrono::TimeDelta::days(2)
                )
                .into_bytes(),
            ),
            ("POST", "/api/v1/facilities") => json(serde_json::json!({
                "code": format!("F{n}"), "name": "Matrix facility"
            })),
            ("POST", "/api/v1/ae-titles") => json(serde_json::json!({
                "ae_title": format!("MATRIX{n}"), "facility": "A"
            })),
            ("POST", "/api/v1/peers") => json(serde_json::json!({
                "name": format!("matrix{n}"), "dicomweb_url": "http://127.0.0.1:9/dicomweb",
                "facility": "A"
            })),
            ("POST", "/api/v1/deliveries/check") => json(serde_json::json!({ "instances": [] })),
            ("POST", "/api/v1/research/exports") => json(serde_json::json!({})),
            ("POST", "/ui/admin/facilities") => form(format!("code=UF{n}&name=Matrix")),
            ("POST", "/ui/admin/ae-titles") => form(format!("ae_title=UIMATRIX{n}&facility=A")),
            ("POST", "/ui/admin/tokens") => form("facility=A&role=clinician&name=matrix".into()),
            ("POST", "/api/v1/tokens") => json(serde_json::json!({
                "facility": "A", "role": "clinician", "name": "matrix"
            })),
            _ => (String::new(), Vec::new()),
        }
    }

    fn ask(&self, method: &Method, route: &str, who: Who) -> Got {
        let path = self.fill(route);
        let (content_type, body) = self.body(method, route);
        let authorization = self
            .token(who)
            .map(|t| format!("Bearer {t}"))
            .unwrap_or_default();
        let accept = match route {
            r if r.ends_with("rendered") || r.ends_with("thumbnail") => "image/png",
            r if r.contains("/frames/") || r.contains("/bulkdata/") => {
                "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*"
            }
            "/dicomweb/studies/{study}"
            | "/dicomweb/studies/{study}/series/{series}"
            | "/dicomweb/studies/{study}/series/{series}/instances/{sop}"
                if method == Method::GET =>
            {
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*"
            }
            _ => "application/dicom+json, application/json",
        };
        let mut headers = vec![
            ("Authorization", authorization.as_str()),
            ("Accept", accept),
        ];
        if !content_type.is_empty() {
            headers.push(("Content-Type", content_type.as_str()));
        }
        let r = self.server.http(method.as_str(), &path, &headers, &body);
        let lists = SEARCHES.contains(&route) && method == Method::GET;
        if lists && r.status == 200 {
            if String::from_utf8_lossy(&r.body).contains(STUDY) {
                Listed
            } else {
                NotListed
            }
        } else {
            Status(r.status)
        }
    }
}

fn world() -> World {
    // Every route is asked by nobody and with wrong tokens: the throttle of refused credentials
    // (tested in tests/access.rs) must not answer 429 to the routes asked after them.
    let server = TramyServer::start_with_config(
        "[triage]\nenabled = false\n[auth]\nmax_failed_attempts = 10000\n",
    );
    for (code, name) in [
        ("A", "District A"),
        ("B", "Provincial B"),
        ("C", "Central C"),
    ] {
        server.cli(&["facility", "add", code, "--name", name]);
    }
    let token = |facility: &str, role: &str| {
        server.cli(&["token", "create", "--facility", facility, "--role", role])
    };
    let tokens = vec![
        (Superadmin, server.token().to_string()),
        (AdminA, token("A", "admin")),
        (ClinicianA, token("A", "clinician")),
        (ModalityA, token("A", "modality")),
        (ResearcherA, token("A", "researcher")),
        (NodeA, token("A", "node")),
        (ClinicianB, token("B", "clinician")),
        (ClinicianC, token("C", "clinician")),
    ];
    let mut w = World {
        server,
        tokens,
        series: String::new(),
        sop: String::new(),
        unique: AtomicUsize::new(0),
    };
    // A's modality stores the study; A's clinician grants it to C under the patient's consent.
    assert_eq!(
        w.ask(&Method::POST, "/dicomweb/studies", ModalityA),
        Status(200)
    );
    let a = w.token(ClinicianA).unwrap().to_string();
    let post = |path: &str, body: serde_json::Value| {
        w.server.http(
            "POST",
            path,
            &[
                ("Authorization", &format!("Bearer {a}")),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    };
    let consent = post(
        &format!("/api/v1/patients/{PATIENT}/consents"),
        serde_json::json!({"purpose": "referral", "recipient": "C", "source": "vneid"}),
    );
    assert_eq!(consent.status, 201);
    let granted = post(
        "/api/v1/grants",
        serde_json::json!({"to_facility": "C", "study_instance_uid": STUDY,
            "scope": ["metadata", "images", "findings"],
            "expires_at": (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339(),
            "consent_id": consent.json()["id"]}),
    );
    assert_eq!(granted.status, 201);
    let link = post(
        "/api/v1/share-links",
        serde_json::json!({"study_instance_uid": STUDY,
            "expires_at": (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339(),
            "break_glass_reason": "second opinion by phone"}),
    );
    assert_eq!(link.status, 201, "{}", String::from_utf8_lossy(&link.body));
    let share_token = link.json()["token"].as_str().unwrap().to_string();
    w.tokens.push((ShareHolder, share_token));
    let (_, series, sop) = ct_uids();
    w.series = series;
    w.sop = sop;
    w
}

#[test]
fn every_route_allows_and_denies_exactly_per_role_and_data() {
    let w = world();
    let mut wrong = Vec::new();
    let routes = tramy::web::route_table();
    assert!(routes.len() > 40, "the route table lists every route");
    for (method, route) in &routes {
        for who in EVERYONE {
            let want = expected(method, route, who);
            let got = w.ask(method, route, who);
            if got != want {
                wrong.push(format!(
                    "{method} {route} as {who:?}: got {got:?}, want {want:?}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} route × caller outcomes differ:\n{}\nserver log:\n{}",
        wrong.len(),
        routes.len() * EVERYONE.len(),
        wrong.join("\n"),
        w.server
            .log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
