//! The findings SR as third-party tools read it: triage runs on an instance, the report is
//! fetched over WADO-URI exactly as stored, and dcmtk's `dsrdump` and dicom3tools' `dciodvfy`
//! (Debian `dicom3tools`, installed by `.ci/run`) report no error on it; pydicom finds the coded
//! finding the manifest names and, in every TID 1500 measurement group, a Tracking Identifier
//! and a Tracking Unique Identifier, the image region the finding applies to and the probability
//! under the finding's code (what OHIF 3.13 needs to show a finding, see `src/triage/sr.rs`).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use dicom_dictionary_std::tags;
use tramy::triage::manifest::{CodedConcept, ModelManifest};

/// What pydicom reads from the report: the root concept and template, per measurement group
/// its tracking identifiers, finding, algorithm and image references, and the evidence.
const SUMMARY: &str = r#"
import json, sys, pydicom
ds = pydicom.dcmread(sys.argv[1])
def name(i):
    c = i.ConceptNameCodeSequence[0]
    return [c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning]
def frames(r):
    v = r.get("ReferencedFrameNumber")
    return [] if v is None else [int(x) for x in (v if isinstance(v, pydicom.multival.MultiValue) else [v])]
def image(c):
    r = c.ReferencedSOPSequence[0]
    return {"class": r.ReferencedSOPClassUID, "sop": r.ReferencedSOPInstanceUID, "frames": frames(r)}
measurements = [i for i in ds.ContentSequence if i.ValueType == "CONTAINER" and name(i)[:2] == ["126010", "DCM"]]
groups = []
for g in measurements[0].ContentSequence:
    out = {"concept": name(g), "tracking_id": [], "tracking_uid": [], "finding": [], "algorithm": {}, "images": [], "certainty": [], "regions": []}
    for c in g.ContentSequence:
        n = name(c)
        if n[:2] == ["112039", "DCM"] and c.ValueType == "TEXT":
            out["tracking_id"].append(c.TextValue)
        elif n[:2] == ["112040", "DCM"] and c.ValueType == "UIDREF":
            out["tracking_uid"].append(c.UID)
        elif n[:2] == ["121071", "DCM"] and c.ValueType == "CODE":
            v = c.ConceptCodeSequence[0]
            out["finding"].append({"value": v.CodeValue, "scheme": v.CodingSchemeDesignator, "meaning": v.CodeMeaning})
        elif n[1] == "DCM" and n[0] in ("111001", "111003"):
            out["algorithm"][n[2]] = c.TextValue
        elif c.ValueType == "IMAGE":
            out["images"].append(image(c))
        elif c.ValueType == "SCOORD":
            out["regions"].append({"concept": name(c), "type": c.GraphicType, "data": [float(x) for x in c.GraphicData],
                "from": [[i.RelationshipType, image(i)] for i in c.ContentSequence]})
        elif c.ValueType == "NUM":
            m = c.MeasuredValueSequence[0]
            out["certainty"].append({"concept": name(c), "value": float(m.NumericValue), "unit": m.MeasurementUnitsCodeSequence[0].CodeValue, "images": [image(i) for i in c.ContentSequence if i.ValueType == "IMAGE"]})
    groups.append(out)
library = [i for i in ds.ContentSequence if i.ValueType == "CONTAINER" and name(i)[:2] == ["111028", "DCM"]]
print(json.dumps({
    "root": name(ds),
    "template": ds.ContentTemplateSequence[0].TemplateIdentifier,
    "groups": groups,
    "library": [image(i) for lg in library[0].ContentSequence for i in lg.ContentSequence if i.ValueType == "IMAGE"],
    "evidence": [s.ReferencedSOPInstanceUID for st in ds.CurrentRequestedProcedureEvidenceSequence for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence],
}))
"#;

/// `dsrdump` reads the report as a valid SR (PS3.3 A.35.3 relationship constraints included)
/// without an error; returns what it printed.
fn dsrdump_clean(report: &Path) -> String {
    assert!(dcmtk_available(), "dcmtk is needed (see .ci/run)");
    let out = Command::new("dsrdump").arg(report).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !said.contains("E: ") && !said.contains("W: "),
        "dsrdump: {said}"
    );
    said
}

/// `dciodvfy` checks the Comprehensive SR IOD (modules, attribute types and VRs) and reports
/// no error, and no warning but those in `allowed`.
fn dciodvfy_clean(report: &Path, allowed: &[&str]) {
    let out = Command::new("dciodvfy")
        .arg(report)
        .output()
        .expect("dciodvfy runs: install Debian dicom3tools (see .ci/run)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("Error") || l.starts_with("Warning"))
        .filter(|l| !(l.starts_with("Warning") && allowed.iter().any(|a| l.contains(a))))
        .collect();
    assert!(
        said.contains("ComprehensiveSR") && problems.is_empty(),
        "dciodvfy: {said}"
    );
}

fn summary(report: &Path) -> serde_json::Value {
    let out = Command::new(python())
        .args(["-c", SUMMARY])
        .arg(report)
        .output()
        .unwrap();
    assert_success(&out, "pydicom summary of the report");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn concept(c: &CodedConcept) -> serde_json::Value {
    serde_json::json!({ "value": c.value, "scheme": c.scheme, "meaning": c.meaning })
}

/// Every measurement group has one Tracking Identifier and one Tracking Unique Identifier, the
/// latter unique in the report; the algorithm is named with its version.
fn assert_groups_are_trackable(report: &serde_json::Value, model: &ModelManifest) {
    let groups = report["groups"].as_array().unwrap();
    assert!(!groups.is_empty(), "{report}");
    let mut uids = std::collections::HashSet::new();
    for g in groups {
        assert_eq!(
            g["concept"],
            serde_json::json!(["125007", "DCM", "Measurement Group"])
        );
        assert_eq!(g["tracking_id"].as_array().unwrap().len(), 1, "{g}");
        let uid = g["tracking_uid"][0]
            .as_str()
            .expect("Tracking Unique Identifier");
        assert!(
            uid.starts_with("2.25.") && uids.insert(uid.to_string()),
            "{g}"
        );
        assert_eq!(g["algorithm"]["Algorithm Name"], model.name.as_str());
        assert_eq!(g["algorithm"]["Algorithm Version"], model.version.as_str());
    }
}

fn shipped(model: &str) -> ModelManifest {
    let path = repo_root().join("models").join(model).join("model.toml");
    ModelManifest::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_pneumonia_report_is_a_valid_tid_1500_with_the_manifest_code_and_tracking_identifiers() {
    let (_, images) = pneumonia_model();
    let manifest = shipped("chest-xray-pneumonia");
    let tmp = tempfile::tempdir().unwrap();
    let dx = tmp.path().join("dx.dcm");
    wrap_jpeg_as_dx(&images.join("PNEUMONIA/person1946_bacteria_4874.jpeg"), &dx);
    let source = dicom_object::open_file(&dx).unwrap();
    let attr = |tag| tramy::dicom::attributes::text(&source, tag);

    let server = TramyServer::start();
    server.store_files(&[&dx], "storescu of the DX");
    let file = fetch_report(
        &server,
        &attr(tags::STUDY_INSTANCE_UID),
        &manifest.name,
        tmp.path(),
    );

    let dump = dsrdump_clean(&file);
    assert!(dump.contains("Imaging Measurement Report"), "{dump}");
    dciodvfy_clean(&file, &[]);

    let report = summary(&file);
    assert_eq!(
        report["root"],
        serde_json::json!(["126000", "DCM", "Imaging Measurement Report"])
    );
    assert_eq!(report["template"], "1500");
    assert_groups_are_trackable(&report, &manifest);
    let group = &report["groups"][0];
    // The manifest's code, each part in its own attribute: SNOMED CT 233604007 "Pneumonia".
    let code = manifest.labels[0]
        .code
        .as_ref()
        .expect("the manifest's code");
    assert_eq!(group["finding"], serde_json::json!([concept(code)]));
    assert_eq!(group["finding"][0]["scheme"], "SCT");
    assert_eq!(group["finding"][0]["value"], "233604007");

    // Probability as Certainty of Finding in percent, inferred from the source image.
    let certainty = &group["certainty"][0];
    assert_eq!(
        certainty["concept"],
        serde_json::json!(["111012", "DCM", "Certainty of Finding"])
    );
    assert_eq!(certainty["unit"], "%");
    assert!((0.0..=100.0).contains(&certainty["value"].as_f64().unwrap()));

    // Every image reference resolves to the source instance and is listed as evidence.
    let source_ref = serde_json::json!({
        "class": attr(tags::SOP_CLASS_UID),
        "sop": attr(tags::SOP_INSTANCE_UID),
        "frames": [],
    });
    assert_eq!(group["images"], serde_json::json!([source_ref]));
    assert_eq!(certainty["images"], serde_json::json!([source_ref]));

    // The region: the lung fields the chest gate found (their convex hull), a closed POLYLINE
    // (column, row; PS3.3 C.18.6.1.2) inside the image, selected from the source image, as
    // OHIF's `_processTID1410Measurement` reads it; the finding's site is the lung.
    let (columns, rows) = (
        attr(tags::COLUMNS).parse::<f64>().unwrap(),
        attr(tags::ROWS).parse::<f64>().unwrap(),
    );
    let region = &group["regions"][0];
    assert_eq!(
        (&region["concept"], &region["type"], &region["from"]),
        (
            &serde_json::json!(["111030", "DCM", "Image Region"]),
            &serde_json::json!("POLYLINE"),
            &serde_json::json!([["SELECTED FROM", source_ref]])
        )
    );
    let share = polygon_share(&region["data"], columns, rows);
    assert!(
        (0.2..0.9).contains(&share),
        "the lung fields' hull covers {share} of the image"
    );
    assert!(
        dump.contains("Finding Site") && dump.contains("Lung structure"),
        "{dump}"
    );
    // The probability under the finding's own code, the label OHIF prints beside the region.
    let named = &group["certainty"][1];
    assert_eq!(
        named["concept"],
        serde_json::json!([code.value, code.scheme, code.meaning])
    );
    assert_eq!(named["value"], certainty["value"]);
    assert_eq!(named["unit"], "%");
    assert_eq!(report["library"], serde_json::json!([source_ref]));
    assert_eq!(
        report["evidence"],
        serde_json::json!([attr(tags::SOP_INSTANCE_UID)])
    );
}

#[test]
fn an_adults_pneumonia_report_says_outside_intended_use_not_flagged_not_urgent() {
    pneumonia_model();
    let manifest = shipped("chest-xray-pneumonia");
    let tmp = tempfile::tempdir().unwrap();
    let adult = aged_copy(&chest_cr(), "045Y", tmp.path());
    let study = tramy::dicom::attributes::text(
        &dicom_object::open_file(&adult).unwrap(),
        tags::STUDY_INSTANCE_UID,
    );
    let server = TramyServer::start();
    server.store_files(&[&adult], "storescu of the adult chest CR");
    let file = fetch_report(&server, &study, &manifest.name, tmp.path());

    dsrdump_clean(&file);
    let dump = Command::new("dsrdump")
        .arg("+Pl")
        .arg(&file)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    let reason = "outside intended use: age 45 years, model population 0-17 years";
    assert!(
        dump.contains(&format!(
            "\"Outside {}. Not flagged, not urgent.\"",
            &reason[8..]
        )),
        "a text item says so: {dump}"
    );
    assert!(
        dump.contains(&format!(
            "\"not flagged, not urgent ({reason}): probability"
        )),
        "the verdict says not flagged, not urgent: {dump}"
    );
    assert!(!dump.contains("FLAGGED"), "{dump}");
    // The one warning is the source's own Referring Physician's Name ("ward"), copied as is.
    dciodvfy_clean(&file, &["Retired Person Name form"]);
    assert_groups_are_trackable(&summary(&file), &manifest);
}

#[test]
fn a_per_frame_report_has_one_trackable_group_per_frame_naming_its_frame() {
    let manifest = shipped("endoscopy-synthetic-demo");
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("clip.dcm");
    let made = Command::new(python())
        .arg(repo_root().join("models/endoscopy-synthetic-demo/build.py"))
        .args(["clip", &clip.display().to_string(), "4", "3"])
        .output()
        .unwrap();
    assert_success(&made, "build.py clip");
    let source = dicom_object::open_file(&clip).unwrap();
    let study = tramy::dicom::attributes::text(&source, tags::STUDY_INSTANCE_UID);

    let server = TramyServer::start();
    server.store_files(&[&clip], "storescu of the clip");
    let file = fetch_report(&server, &study, &manifest.name, tmp.path());
    dsrdump_clean(&file);
    // Two warnings the data asks for: dciodvfy knows only registered coding schemes, and the
    // demo's label has no standard code, so it is private (a `99` designator identified in the
    // Coding Scheme Identification Sequence, PS3.16 8.2); and the generated clip's study has no
    // Study ID, which the report copies rather than invents (needed only for a DICOMDIR).
    dciodvfy_clean(
        &file,
        &[
            "Unrecognized defined term <99TRAMY>",
            "needed to build DICOMDIR - Study ID",
        ],
    );

    let report = summary(&file);
    assert_groups_are_trackable(&report, &manifest);
    let all = report["groups"].as_array().unwrap();
    let is_clip = |g: &&serde_json::Value| g["tracking_id"][0] == "polyp (clip)";
    let groups: Vec<&serde_json::Value> = all.iter().filter(|g| !is_clip(g)).collect();
    // The clip's finding (the manifest's [clip]): its region on the frame where the smoothed
    // probability peaks, its Source of Measurement the frames where it fired (or the peak).
    let clip: Vec<&serde_json::Value> = all.iter().filter(is_clip).collect();
    assert_eq!(clip.len(), 1, "one clip group: {report}");
    let peak = &clip[0]["certainty"][0]["images"][0];
    assert_eq!(clip[0]["regions"][0]["from"][0][1], *peak, "{}", clip[0]);
    let evidence = clip[0]["images"][0]["frames"].as_array().unwrap();
    assert!(
        !evidence.is_empty()
            && evidence
                .iter()
                .all(|f| (1..=4).contains(&f.as_i64().unwrap())),
        "{}",
        clip[0]
    );
    let mut frames: Vec<i64> = groups
        .iter()
        .map(|g| {
            assert_eq!(
                g["images"][0]["frames"],
                g["certainty"][0]["images"][0]["frames"]
            );
            // Each frame's region is selected from that frame.
            assert_eq!(g["regions"][0]["from"][0][1], g["images"][0], "{g}");
            g["images"][0]["frames"][0]
                .as_i64()
                .expect("a frame number")
        })
        .collect();
    frames.sort();
    assert_eq!(frames, vec![1, 2, 3, 4], "one group per frame, 1-based");
    // The demo's label names no code: the private scheme, and only then.
    assert_eq!(
        groups[0]["finding"],
        serde_json::json!([{ "value": "polyp", "scheme": "99TRAMY", "meaning": "polyp" }])
    );
}

/// The share of a `columns` × `rows` image a closed POLYLINE's `[x0, y0, x1, y1, ...]` covers
/// (shoelace formula), after checking it is closed and inside the image.
fn polygon_share(data: &serde_json::Value, columns: f64, rows: f64) -> f64 {
    let v: Vec<f64> = data
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let points: Vec<(f64, f64)> = v.chunks(2).map(|p| (p[0], p[1])).collect();
    assert!(points.len() >= 4, "a polygon: {data}");
    assert_eq!(points.first(), points.last(), "closed: {data}");
    for &(x, y) in &points {
        assert!(
            (0.0..=columns).contains(&x) && (0.0..=rows).contains(&y),
            "inside: {data}"
        );
    }
    let twice: f64 = points
        .windows(2)
        .map(|w| w[0].0 * w[1].1 - w[1].0 * w[0].1)
        .sum();
    twice.abs() / 2.0 / (columns * rows)
}
