//! What each HTTP request is, for the audit trail (issue #9 item 9): its action, the study and
//! patient it names, and how it ended. [`super::auth::authenticate`] records one event per
//! request through [`event`], so no route can skip it; the liveness probe, the OpenAPI
//! document, metrics and a viewer's static files are not accesses to patient data and are not
//! recorded.

use axum::http::{Method, StatusCode};

use crate::access::Principal;
use crate::audit::{AuditAction, AuditOutcome, NewAuditEvent, PatientRef};

/// The audit action of `method` on the route template `route`; `None`: not recorded.
pub fn action_of(method: &Method, route: &str) -> Option<AuditAction> {
    use AuditAction as A;
    let get = method == Method::GET;
    Some(match route {
        "/healthz" | "/openapi.json" | "/metrics" | "/logout" => return None,
        // Refusals are recorded as login failures.
        "/login" | "/login/oidc" | "/login/oidc/callback" | "/share/{token}" => return None,
        "/ui/lang/{lang}" => return None, // a language preference, no data
        "/app-config.js" => return None,  // the viewer's settings, no data
        r if r.ends_with("/feedback") => A::Feedback,
        "/ui/studies/{study}/share" => A::Grant,
        r if r.starts_with("/ui/studies/") => A::ReadFindings,
        r if r.starts_with("/ui/admin/tokens") => A::Token,
        r if r.starts_with("/ui/admin") => A::Administer,
        r if r.starts_with("/dicomweb") && !get => A::Store,
        "/dicomweb/studies"
        | "/dicomweb/series"
        | "/dicomweb/instances"
        | "/dicomweb/studies/{study}/series"
        | "/dicomweb/studies/{study}/instances"
        | "/dicomweb/studies/{study}/series/{series}/instances"
        | "/api/v1/worklist" => A::Query,
        r if r.starts_with("/dicomweb") && r.ends_with("/metadata") => A::ReadMetadata,
        r if r.starts_with("/dicomweb") || r == "/wado" => A::Retrieve,
        r if r.ends_with("/findings")
            || r.ends_with("/heatmap")
            || r.ends_with("/anatomy-mask")
            || r == "/api/v1/triage/jobs" =>
        {
            A::ReadFindings
        }
        r if r.contains("/consents") => A::Consent,
        r if r.ends_with("/link-suggestions") => A::Query,
        r if r.contains("/links") => A::Link,
        r if r.starts_with("/api/v1/grants") || r == "/api/v1/share-links" => A::Grant,
        r if r.starts_with("/api/v1/tokens") => A::Token,
        r if r.starts_with("/api/v1/facilities") || r.starts_with("/api/v1/ae-titles") => {
            A::Administer
        }
        "/api/v1/audit" => A::ReadAudit,
        r if r.starts_with("/api/v1/deliveries") || r == "/api/v1/peers/{name}/retrieve" => {
            A::Forward
        }
        r if r.starts_with("/api/v1/peers") => A::Administer,
        "/api/v1/research/exports" => A::ResearchExport,
        // A route added without a decision here is still recorded, as what it most likely is.
        _ if get => A::Query,
        _ => A::Administer,
    })
}

/// How a response status reads in the trail.
pub fn outcome_of(status: StatusCode) -> AuditOutcome {
    match status.as_u16() {
        200..=399 => AuditOutcome::Success,
        401 | 403 => AuditOutcome::Denied,
        404 => AuditOutcome::NotFound,
        _ => AuditOutcome::Failed,
    }
}

/// The value of the path parameter `name` (`{name}` in `route`) in `path`, percent-decoded.
fn path_parameter(route: &str, path: &str, name: &str) -> Option<String> {
    let wanted = format!("{{{name}}}");
    let index = route.split('/').position(|segment| segment == wanted)?;
    let raw = path.split('/').nth(index)?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The value of query parameter `key` (case-insensitive, as QIDO-RS and WADO-URI keys are
/// matched), percent-decoded.
fn query_parameter(query: Option<&str>, keys: &[&str]) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| keys.iter().any(|key| k.eq_ignore_ascii_case(key)))
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// The event for one request.
pub fn event(
    who: Principal,
    method: &Method,
    route: &str,
    uri: &axum::http::Uri,
    status: StatusCode,
) -> Option<NewAuditEvent> {
    let action = action_of(method, route)?;
    let (path, query) = (uri.path(), uri.query());
    let study = path_parameter(route, path, "study").or_else(|| {
        query_parameter(
            query,
            &["studyUID", "StudyInstanceUID", "0020000D", "study"],
        )
    });
    let patient = path_parameter(route, path, "patient")
        .or_else(|| query_parameter(query, &["PatientID", "00100020", "patient"]))
        .and_then(|p| PatientRef::parse(&p));
    Some(NewAuditEvent {
        actor: who,
        action,
        outcome: outcome_of(status),
        study_instance_uid: study,
        patient,
        detail: format!("{method} {route} {}", status.as_u16()),
    })
}

/// The event for a request refused before it reached a route: no or a bad credential.
pub fn login_failure(address: String, method: &Method, route: &str, why: &str) -> NewAuditEvent {
    NewAuditEvent {
        actor: Principal::anonymous().from_address(address),
        action: AuditAction::LoginFailure,
        outcome: AuditOutcome::Denied,
        study_instance_uid: None,
        patient: None,
        detail: format!("{method} {route} 401: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_an_action_or_is_deliberately_not_recorded() {
        let not_recorded = [
            "/healthz",
            "/openapi.json",
            "/metrics",
            "/login",
            "/login/oidc",
            "/login/oidc/callback",
            "/logout",
            "/share/{token}",
            "/ui/lang/{lang}",
            "/app-config.js",
        ];
        for (method, route) in crate::web::route_table() {
            let action = action_of(&method, &route);
            assert_eq!(
                action.is_none(),
                not_recorded.contains(&route.as_str()),
                "{method} {route}: {action:?}"
            );
        }
        assert_eq!(
            action_of(&Method::GET, "/dicomweb/studies/{study}/metadata"),
            Some(AuditAction::ReadMetadata)
        );
        assert_eq!(
            action_of(&Method::POST, "/dicomweb/studies/{study}"),
            Some(AuditAction::Store)
        );
        assert_eq!(
            action_of(&Method::GET, "/dicomweb/studies/{study}/rendered"),
            Some(AuditAction::Retrieve)
        );
    }

    #[test]
    fn the_study_and_patient_are_read_from_the_path_and_the_query() {
        let uri: axum::http::Uri = "/dicomweb/studies/1.2.3/series/4.5/metadata"
            .parse()
            .unwrap();
        let e = event(
            Principal::system(),
            &Method::GET,
            "/dicomweb/studies/{study}/series/{series}/metadata",
            &uri,
            StatusCode::OK,
        )
        .unwrap();
        assert_eq!(e.study_instance_uid.as_deref(), Some("1.2.3"));
        let uri: axum::http::Uri = "/dicomweb/studies?PatientID=VN%7C0123".parse().unwrap();
        let e = event(
            Principal::system(),
            &Method::GET,
            "/dicomweb/studies",
            &uri,
            StatusCode::OK,
        )
        .unwrap();
        assert_eq!(
            e.patient,
            Some(PatientRef {
                id: "0123".into(),
                issuer: "VN".into()
            })
        );
        let uri: axum::http::Uri = "/api/v1/patients/VN%7C0123/consents".parse().unwrap();
        let e = event(
            Principal::system(),
            &Method::POST,
            "/api/v1/patients/{patient}/consents",
            &uri,
            StatusCode::CREATED,
        )
        .unwrap();
        assert_eq!(e.action, AuditAction::Consent);
        assert_eq!(e.patient.unwrap().id, "0123");
    }
}
