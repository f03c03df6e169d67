//! Audit events as FHIR R4 `AuditEvent` resources in a `searchset` `Bundle`, shaped as IHE
//! Basic Audit Log Patterns (BALP) describes them:
//!
//! - `type`: an event over HTTP is BALP's RESTful operation (`audit-event-type#rest`) with the
//!   interaction as the first `subtype` (`restful-interaction#search|read|create|update|delete`);
//!   other events (DIMSE, the command line) carry the DICOM audit event ID (PS3.15 A.5.3,
//!   DCM 110100-series) as their type. The DICOM event ID is always in `subtype` too, so one
//!   code system finds every event of a kind whichever protocol it came by.
//! - `agent`: the requestor (`who` with the subject, its roles, its acting facility as
//!   `location`, the client's address in `network`, `requestor: true`) with BALP's user type
//!   (`v3-ParticipationType#IRCP`), or DICOM's Source Role ID for an AE title; and tramy as
//!   Destination Role ID (DCM 110152), `requestor: false`.
//! - `source`: tramy, an application server (`security-source-type#4`).
//! - `entity`: the patient (`object-role#1`, `audit-entity-type#1`, identifier with the issuer
//!   as its system), the study (`audit-entity-type#2`, DICOM's Study Instance UID as
//!   `urn:dicom:uid` / `urn:oid:UID`, PS3.15 A.5.3's ParticipantObjectIDTypeCode 110180) and,
//!   for a query, the query (`object-role#24`) described by the route (never its values, which
//!   may hold patient data).

use serde_json::{json, Value};

use super::{AuditAction, AuditEvent, AuditOutcome, PatientRef};

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
/// tramy's own identifier systems: principals' subjects, facility codes and role names.
const SUBJECT_SYSTEM: &str = "urn:tramy:subject";
const FACILITY_SYSTEM: &str = "urn:tramy:facility";
const ROLE_SYSTEM: &str = "urn:tramy:role";

/// A searchset Bundle of `events`, in their order.
pub fn bundle(events: &[AuditEvent]) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": events.len(),
        "entry": events.iter().map(|e| json!({
            "resource": audit_event(e),
            "search": { "mode": "match" },
        })).collect::<Vec<_>>(),
    })
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

/// The DICOM audit event ID (PS3.15 A.5.3) closest to each action.
fn dicom_event_id(action: AuditAction) -> (&'static str, &'static str) {
    use AuditAction as A;
    match action {
        A::Query => ("110112", "Query"),
        A::Retrieve | A::Forward => ("110104", "DICOM Instances Transferred"),
        A::Store => ("110104", "DICOM Instances Transferred"),
        A::ReadMetadata | A::ReadFindings | A::Triage | A::Feedback => {
            ("110103", "DICOM Instances Accessed")
        }
        A::Consent | A::Link => ("110110", "Patient Record"),
        A::Grant | A::Token | A::Administer => ("110113", "Security Alert"),
        A::ReadAudit => ("110101", "Audit Log Used"),
        A::LoginFailure => ("110114", "User Authentication"),
        A::ResearchExport => ("110106", "Export"),
    }
}

/// The HTTP method an event's detail starts with (`GET /dicomweb/… 200`), if it came over HTTP.
fn http_method(detail: &str) -> Option<&str> {
    let method = detail.split_whitespace().next()?;
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .contains(&method)
        .then_some(method)
}

/// BALP's restful interaction and FHIR's action code (C/R/U/D/E).
fn interaction(action: AuditAction, method: Option<&str>) -> (&'static str, &'static str) {
    use AuditAction as A;
    match (method, action) {
        (Some("POST"), A::Query) => ("search", "E"),
        (Some("POST"), _) => ("create", "C"),
        (Some("PUT" | "PATCH"), _) => ("update", "U"),
        (Some("DELETE"), _) => ("delete", "D"),
        (_, A::Store) => ("create", "C"),
        (_, A::Query | A::ReadAudit | A::LoginFailure) => ("search", "E"),
        _ => ("read", "R"),
    }
}

fn outcome(o: AuditOutcome) -> (&'static str, &'static str) {
    match o {
        AuditOutcome::Success => ("0", "success"),
        AuditOutcome::Denied => ("4", "refused: no credential, or not allowed"),
        AuditOutcome::NotFound => ("4", "nothing the caller may see matched"),
        AuditOutcome::Failed => ("8", "failed"),
    }
}

/// One event as an R4 `AuditEvent`.
pub fn audit_event(e: &AuditEvent) -> Value {
    let method = http_method(&e.detail);
    let (dcm_code, dcm_display) = dicom_event_id(e.action);
    let (rest_code, action_code) = interaction(e.action, method);
    let dicom_type = coding(DCM, dcm_code, dcm_display);
    let (kind, subtype) = match method {
        Some(_) => (
            coding(EVENT_TYPE, "rest", "Restful Operation"),
            vec![coding(INTERACTION, rest_code, rest_code), dicom_type],
        ),
        None => (dicom_type.clone(), vec![dicom_type]),
    };
    let (outcome_code, outcome_text) = outcome(e.outcome);
    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": e.id.to_string(),
        "type": kind,
        "subtype": subtype,
        "action": action_code,
        "recorded": e.time,
        "outcome": outcome_code,
        "outcomeDesc": outcome_text,
        "agent": [requestor(e), server()],
        "source": {
            "site": "tramy",
            "observer": { "display": "tramy" },
            "type": [coding(SOURCE_TYPE, "4", "Application Server")],
        },
    });
    let entities = entities(e);
    if !entities.is_empty() {
        resource["entity"] = Value::Array(entities);
    }
    resource
}

fn requestor(e: &AuditEvent) -> Value {
    let kind = if e.actor.starts_with("ae:") {
        coding(DCM, "110153", "Source Role ID")
    } else {
        coding(PARTICIPATION, "IRCP", "information recipient")
    };
    let mut agent = json!({
        "type": { "coding": [kind] },
        "who": {
            "identifier": { "system": SUBJECT_SYSTEM, "value": e.actor },
            "display": e.actor,
        },
        "requestor": true,
    });
    if !e.roles.is_empty() {
        agent["role"] = Value::Array(
            e.roles
                .iter()
                .map(|r| json!({ "coding": [coding(ROLE_SYSTEM, r, r)] }))
                .collect(),
        );
    }
    if let Some(facility) = &e.facility {
        agent["location"] = json!({
            "identifier": { "system": FACILITY_SYSTEM, "value": facility },
            "display": facility,
        });
    }
    if let Some(address) = &e.address {
        // Type 2: an IP address (FHIR network-type); the port, when noted, is dropped.
        agent["network"] = json!({ "address": host_of(address), "type": "2" });
    }
    agent
}

/// The host of `ip:port`, `[v6]:port`, or the address as it is.
fn host_of(address: &str) -> &str {
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        let text = address.rsplit_once(':').map_or(address, |(host, _)| host);
        return match socket {
            std::net::SocketAddr::V6(_) => text.trim_start_matches('[').trim_end_matches(']'),
            std::net::SocketAddr::V4(_) => text,
        };
    }
    address
}

fn server() -> Value {
    json!({
        "type": { "coding": [coding(DCM, "110152", "Destination Role ID")] },
        "who": { "display": "tramy" },
        "requestor": false,
    })
}

fn entities(e: &AuditEvent) -> Vec<Value> {
    let mut entities = Vec::new();
    if let Some(patient) = &e.patient {
        entities.push(json!({
            "what": { "identifier": patient_identifier(patient) },
            "type": coding(ENTITY_TYPE, "1", "Person"),
            "role": coding(OBJECT_ROLE, "1", "Patient"),
        }));
    }
    if let Some(study) = &e.study_instance_uid {
        entities.push(json!({
            "what": {
                "identifier": {
                    "system": "urn:dicom:uid",
                    "value": format!("urn:oid:{study}"),
                    "type": { "coding": [coding(DCM, "110180", "Study Instance UID")] },
                },
            },
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "3", "Report"),
        }));
    }
    if e.action == AuditAction::Query {
        entities.push(json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "24", "Query"),
            "description": e.detail,
        }));
    }
    entities
}

/// The patient's identifier: its issuer (Issuer of Patient ID) as the system, as a URI: an
/// issuer that is one already as it is, an OID as `urn:oid:`, any other name under
/// `urn:tramy:issuer:`; no issuer, no system.
fn patient_identifier(p: &PatientRef) -> Value {
    let issuer = p.issuer.trim();
    let is_oid = !issuer.is_empty()
        && issuer
            .split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()));
    let system = if issuer.is_empty() {
        None
    } else if is_oid {
        Some(format!("urn:oid:{issuer}"))
    } else if issuer.contains(':') && !issuer.contains(char::is_whitespace) {
        Some(issuer.to_string())
    } else {
        let escaped: String = issuer
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        Some(format!("urn:tramy:issuer:{escaped}"))
    };
    match system {
        Some(system) => json!({ "system": system, "value": p.id }),
        None => json!({ "value": p.id }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: AuditAction, detail: &str) -> AuditEvent {
        AuditEvent {
            id: 3,
            time: "2026-11-30T04:00:00.000Z".into(),
            actor: "token:t1".into(),
            facility: Some("79001".into()),
            roles: vec!["clinician".into()],
            address: Some("10.1.2.3:40000".into()),
            action,
            outcome: AuditOutcome::Success,
            study_instance_uid: Some("1.2.840.1".into()),
            patient: Some(PatientRef {
                id: "P1".into(),
                issuer: "1.2.3.4".into(),
            }),
            study_facilities: vec!["79001".into()],
            detail: detail.into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn an_http_read_is_a_balp_restful_read_with_patient_and_study() {
        let r = audit_event(&event(
            AuditAction::Retrieve,
            "GET /dicomweb/studies/{study} 200",
        ));
        assert_eq!(r["type"]["code"], "rest");
        assert_eq!(r["subtype"][0]["code"], "read");
        assert_eq!(r["subtype"][1]["code"], "110104");
        assert_eq!(r["action"], "R");
        assert_eq!(r["outcome"], "0");
        assert_eq!(r["agent"][0]["requestor"], true);
        assert_eq!(r["agent"][0]["network"]["address"], "10.1.2.3");
        assert_eq!(r["agent"][0]["location"]["identifier"]["value"], "79001");
        assert_eq!(r["entity"][0]["role"]["code"], "1");
        assert_eq!(
            r["entity"][0]["what"]["identifier"]["system"],
            "urn:oid:1.2.3.4"
        );
        assert_eq!(
            r["entity"][1]["what"]["identifier"]["value"],
            "urn:oid:1.2.840.1"
        );
    }

    #[test]
    fn a_dimse_query_carries_the_dicom_event_id_as_its_type() {
        let r = audit_event(&event(AuditAction::Query, "C-FIND STUDY 0000"));
        assert_eq!(r["type"]["system"], DCM);
        assert_eq!(r["type"]["code"], "110112");
        assert_eq!(r["action"], "E");
        assert_eq!(r["entity"][2]["role"]["code"], "24");
    }

    #[test]
    fn issuers_become_uris() {
        let id = |issuer: &str| {
            patient_identifier(&PatientRef {
                id: "1".into(),
                issuer: issuer.into(),
            })
        };
        assert_eq!(id("")["system"], Value::Null);
        assert_eq!(id("urn:vn:cccd")["system"], "urn:vn:cccd");
        assert_eq!(id("CHO RAY")["system"], "urn:tramy:issuer:CHO%20RAY");
    }

    #[test]
    fn ipv6_addresses_lose_their_port_and_brackets() {
        assert_eq!(host_of("[::1]:4000"), "::1");
        assert_eq!(host_of("127.0.0.1:4000"), "127.0.0.1");
        assert_eq!(host_of("ws1.example"), "ws1.example");
    }
}
