//! Bad input over DIMSE gets a failure status with a reason, nothing partial is stored, and the
//! server keeps serving. Also the policies around conflicting instances and association limits.

mod common;

use std::io::Write;

use common::*;
use dicom_dictionary_std::tags;
use dicom_object::open_file;

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

fn ct_sample() -> std::path::PathBuf {
    repo_root().join("dicom-samples/ct_small_explicit_le.dcm")
}

fn ct_sop_instance() -> String {
    tramy::dicom::attributes::text(&open_file(ct_sample()).unwrap(), tags::SOP_INSTANCE_UID)
}

/// Sends `dataset` as a C-STORE on a context for CT Image Storage in `ts`; returns (status, comment).
fn send_raw(server: &TramyServer, dataset: &[u8], ts: &str, sop_instance: &str) -> (u64, String) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(dataset).unwrap();
    let path = file.path().display().to_string();
    let v = dimse_client(
        server.dimse_port,
        &[
            "send-raw",
            "--sop-class",
            CT_IMAGE_STORAGE,
            "--sop-instance",
            sop_instance,
            "--ts",
            ts,
            "--dataset-file",
            &path,
        ],
    );
    (
        v["status"]
            .as_u64()
            .unwrap_or_else(|| panic!("a status came back: {v}")),
        v["error_comment"].as_str().unwrap_or_default().to_string(),
    )
}

fn assert_nothing_stored(server: &TramyServer) {
    assert_eq!(
        server.indexed_instances(),
        0,
        "no index row for refused input"
    );
    assert!(
        server.object_files().is_empty(),
        "no object for refused input: {:?}",
        server.object_files()
    );
}

fn assert_still_serving(server: &TramyServer) {
    let out = pynetdicom("echoscu", &["-aec", "TRAMY", "127.0.0.1", &server.port()]);
    assert_success(&out, "echoscu after bad input");
}

#[test]
fn truncated_data_set_is_refused_with_a_reason() {
    let server = TramyServer::start();
    let full = dataset_bytes(&ct_sample());
    let (status, comment) = send_raw(
        &server,
        &full[..full.len() / 2],
        EXPLICIT_LE,
        &ct_sop_instance(),
    );
    assert_eq!(status, 0xC000, "cannot understand: {comment}");
    assert!(
        comment.contains("cannot be decoded"),
        "reason given: {comment}"
    );
    assert_nothing_stored(&server);
    assert_still_serving(&server);
}

#[test]
fn non_dicom_bytes_are_refused_with_a_reason() {
    let server = TramyServer::start();
    let (status, comment) = send_raw(
        &server,
        b"%PDF-1.4 this is not a DICOM data set at all....",
        EXPLICIT_LE,
        "1.2.3.4",
    );
    assert_eq!(status, 0xC000, "cannot understand: {comment}");
    assert!(!comment.is_empty());
    assert_nothing_stored(&server);
    assert_still_serving(&server);
}

#[test]
fn data_set_without_sop_instance_uid_is_refused() {
    let server = TramyServer::start();
    let mut obj = open_file(ct_sample()).unwrap().into_inner();
    obj.remove_element(tags::SOP_INSTANCE_UID);
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(
        &mut bytes,
        &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .unwrap();
    let (status, comment) = send_raw(&server, &bytes, EXPLICIT_LE, "1.2.3.4.5");
    assert_eq!(status, 0xC000, "{comment}");
    assert!(
        comment.contains("SOPInstanceUID"),
        "reason names the attribute: {comment}"
    );
    assert_nothing_stored(&server);
    assert_still_serving(&server);
}

#[test]
fn data_set_in_a_transfer_syntax_other_than_negotiated_is_refused() {
    let server = TramyServer::start();
    // Explicit VR bytes on a context negotiated as Implicit VR Little Endian.
    let (status, comment) = send_raw(
        &server,
        &dataset_bytes(&ct_sample()),
        IMPLICIT_LE,
        &ct_sop_instance(),
    );
    assert_eq!(status, 0xC000, "{comment}");
    assert!(
        comment.contains("1.2.840.10008.1.2"),
        "reason names the transfer syntax: {comment}"
    );
    assert_nothing_stored(&server);
    assert_still_serving(&server);
}

#[test]
fn data_set_not_matching_the_announced_sop_instance_is_refused() {
    let server = TramyServer::start();
    let (status, comment) = send_raw(
        &server,
        &dataset_bytes(&ct_sample()),
        EXPLICIT_LE,
        "1.2.3.4.5.6",
    );
    assert_eq!(status, 0xA900, "{comment}");
    assert_nothing_stored(&server);
}

#[test]
fn a_good_instance_after_bad_ones_is_stored() {
    let server = TramyServer::start();
    let _ = send_raw(&server, b"garbage", EXPLICIT_LE, "1.2.3");
    let (status, _) = send_raw(
        &server,
        &dataset_bytes(&ct_sample()),
        EXPLICIT_LE,
        &ct_sop_instance(),
    );
    assert_eq!(status, 0);
    assert_eq!(server.indexed_instances(), 1);
    assert_eq!(server.object_files().len(), 1);
}

/// The CT sample with one attribute changed: same SOP Instance UID, other bytes.
fn altered_ct() -> Vec<u8> {
    let mut obj = open_file(ct_sample()).unwrap().into_inner();
    obj.put_str(tags::STUDY_DESCRIPTION, dicom_core::VR::LO, "ALTERED");
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(
        &mut bytes,
        &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .unwrap();
    bytes
}

#[test]
fn different_data_under_a_stored_sop_instance_uid_keeps_the_first_with_a_warning() {
    let server = TramyServer::start();
    let original = dataset_bytes(&ct_sample());
    assert_eq!(
        send_raw(&server, &original, EXPLICIT_LE, &ct_sop_instance()).0,
        0
    );
    let (status, comment) = send_raw(&server, &altered_ct(), EXPLICIT_LE, &ct_sop_instance());
    assert_eq!(status, 0xB007, "warning: {comment}");
    let stored = server.object_files();
    assert_eq!(stored.len(), 1);
    assert!(
        dataset_bytes(&stored[0]) == original,
        "the first instance is kept"
    );
    assert!(
        server.log().contains("kept the first"),
        "the conflict is logged"
    );
}

#[test]
fn conflict_policy_reject_refuses_and_overwrite_replaces() {
    let reject = TramyServer::start_with_config("[ingest]\non_conflict = \"reject\"\n");
    assert_eq!(
        send_raw(
            &reject,
            &dataset_bytes(&ct_sample()),
            EXPLICIT_LE,
            &ct_sop_instance()
        )
        .0,
        0
    );
    assert_eq!(
        send_raw(&reject, &altered_ct(), EXPLICIT_LE, &ct_sop_instance()).0,
        0x0111
    );

    let overwrite = TramyServer::start_with_config("[ingest]\non_conflict = \"overwrite\"\n");
    assert_eq!(
        send_raw(
            &overwrite,
            &dataset_bytes(&ct_sample()),
            EXPLICIT_LE,
            &ct_sop_instance()
        )
        .0,
        0
    );
    assert_eq!(
        send_raw(&overwrite, &altered_ct(), EXPLICIT_LE, &ct_sop_instance()).0,
        0
    );
    let stored = overwrite.object_files();
    assert_eq!(stored.len(), 1);
    assert!(
        dataset_bytes(&stored[0]) == altered_ct(),
        "the new instance replaced the old"
    );
    assert_eq!(overwrite.indexed_instances(), 1);
}

#[test]
fn calling_ae_titles_off_the_allow_list_are_rejected() {
    let server =
        TramyServer::start_with_config("[dimse]\nallowed_calling_ae_titles = [\"MODALITY1\"]\n");
    let port = server.port();
    let (refused, said) = echo_said(&port, "INTRUDER");
    assert!(
        said.contains("Association Rejected") && said.contains("Rejected Permanent"),
        "echoscu ({}) said: {said}\nserver log:\n{}",
        refused.status,
        server.log()
    );
    assert!(
        said.to_lowercase().contains("calling ae title not recogni"),
        "the reason names the calling AE title: {said}"
    );
    let (allowed, _) = echo_said(&port, "MODALITY1");
    assert_success(&allowed, "echoscu from an allowed AE");
}

#[test]
fn associations_are_refused_with_a_reason_when_disk_space_is_low() {
    // A threshold no disk meets.
    let server = TramyServer::start_with_config("[ingest]\nmin_free_disk_mb = 1000000000000\n");
    let (out, said) = echo_said(&server.port(), "MODALITY1");
    assert!(
        said.contains("Association Rejected"),
        "echoscu ({}) said: {said}\nserver log:\n{}",
        out.status,
        server.log()
    );
    assert!(
        said.contains("Rejected Transient"),
        "a transient rejection tells the modality to retry later: {said}"
    );
    // The server logs once the refused requestor has closed, which may be after echoscu exits.
    wait_for("the reason in the server log", || {
        server
            .log()
            .contains("storage is nearly full")
            .then_some(())
    });
}
