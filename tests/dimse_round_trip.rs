//! Every sample in dicom-samples/ goes in over DIMSE and comes back out byte for byte, driven by
//! real third-party clients: pynetdicom's command-line apps (always) and dcmtk (when installed;
//! CI installs it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use dicom_dictionary_std::tags;
use dicom_object::open_file;

/// What a sample is, read from the file itself.
struct Sample {
    path: PathBuf,
    patient_id: String,
    study: String,
    series: String,
    sop_instance: String,
    sop_class: String,
    transfer_syntax: String,
}

fn read_samples() -> Vec<Sample> {
    samples()
        .into_iter()
        .map(|path| {
            let obj = open_file(&path).expect("sample parses");
            let text = |tag| tramy::dicom::attributes::text(&obj, tag);
            Sample {
                patient_id: text(tags::PATIENT_ID),
                study: text(tags::STUDY_INSTANCE_UID),
                series: text(tags::SERIES_INSTANCE_UID),
                sop_instance: text(tags::SOP_INSTANCE_UID),
                sop_class: text(tags::SOP_CLASS_UID),
                transfer_syntax: obj.meta().transfer_syntax().to_string(),
                path,
            }
        })
        .collect()
}

fn pending_responses(out: &std::process::Output) -> usize {
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    log.matches("0xFF00 (Pending)").count()
}

fn store_all_with_pynetdicom(server: &TramyServer, samples: &[Sample]) {
    let paths: Vec<&Path> = samples.iter().map(|s| s.path.as_path()).collect();
    server.store_files(&paths, "pynetdicom storescu");
}

fn assert_get_exact_round_trip(server: &TramyServer, samples: &[Sample]) {
    let out_dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "get-exact".to_string(),
        "--out".into(),
        out_dir.path().display().to_string(),
    ];
    for study in samples.iter().map(|s| &s.study).collect::<BTreeSet<_>>() {
        args.extend(["--study".into(), study.clone()]);
    }
    for class in samples
        .iter()
        .map(|s| &s.sop_class)
        .collect::<BTreeSet<_>>()
    {
        args.extend(["--sop-class".into(), class.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = dimse_client(server.dimse_port, &args);
    for sample in samples {
        let got = out_dir.path().join(format!("{}.raw", sample.sop_instance));
        let got = std::fs::read(&got)
            .unwrap_or_else(|_| panic!("{} was not retrieved: {result}", sample.path.display()));
        assert!(
            got == dataset_bytes(&sample.path),
            "{} came back different from what was sent",
            sample.path.display()
        );
        assert_eq!(
            result["received"][&sample.sop_instance],
            sample.transfer_syntax.as_str()
        );
    }
}

#[test]
fn every_sample_round_trips_through_pynetdicom_store_find_get() {
    let server = TramyServer::start();
    let port = server.port();
    let samples = read_samples();
    assert!(
        samples.len() >= 9,
        "dicom-samples/ holds the committed samples"
    );

    let echo = pynetdicom("echoscu", &["-aec", "TRAMY", "127.0.0.1", &port]);
    assert_success(&echo, "echoscu");

    store_all_with_pynetdicom(&server, &samples);
    assert_eq!(server.indexed_instances(), samples.len() as i64);

    // C-FIND at every level of both models.
    let patients: BTreeSet<_> = samples.iter().map(|s| &s.patient_id).collect();
    let studies: BTreeSet<_> = samples.iter().map(|s| &s.study).collect();
    let find = |args: &[&str]| {
        let mut all = vec!["-aec", "TRAMY", "127.0.0.1", &port];
        all.extend_from_slice(args);
        let out = pynetdicom("findscu", &all);
        assert_success(&out, "findscu");
        pending_responses(&out)
    };
    assert_eq!(
        find(&[
            "-P",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=*"
        ]),
        patients.len()
    );
    assert_eq!(
        find(&[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID="
        ]),
        studies.len()
    );

    let mr_study = &samples
        .iter()
        .find(|s| s.path.ends_with("mr_small_rle.dcm"))
        .unwrap()
        .study;
    let mr: Vec<&Sample> = samples.iter().filter(|s| &s.study == mr_study).collect();
    let q_study = format!("StudyInstanceUID={mr_study}");
    assert_eq!(
        find(&[
            "-S",
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            &q_study,
            "-k",
            "Modality="
        ]),
        mr.len()
    );
    assert_eq!(
        find(&[
            "-S",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            &q_study,
            "-k",
            "SOPInstanceUID="
        ]),
        mr.len()
    );
    let q_series = format!("SeriesInstanceUID={}", mr[0].series);
    assert_eq!(
        find(&[
            "-P",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            &q_study,
            "-k",
            &q_series
        ]),
        1
    );
    // Person names match case-insensitively, with wildcards.
    assert_eq!(
        find(&[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=compressedsamples^mr*"
        ]),
        1
    );
    // Date ranges and modality lists.
    assert_eq!(
        find(&[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyDate=19000101-20401231",
            "-k",
            "ModalitiesInStudy=MR\\CT"
        ]),
        2
    );
    assert_eq!(
        find(&[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyDate=20500101-"
        ]),
        0
    );

    // Stock getscu proposes the native syntaxes only: instances stored in Explicit VR Little
    // Endian come back byte for byte; other native ones are re-encoded; compressed ones need a
    // requestor that proposes their syntax (below).
    let out_dir = tempfile::tempdir().unwrap();
    for study in &studies {
        let q = format!("StudyInstanceUID={study}");
        let od = out_dir.path().display().to_string();
        let out = pynetdicom(
            "getscu",
            &[
                "-aec",
                "TRAMY",
                "-S",
                "-od",
                &od,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &q,
                "127.0.0.1",
                &port,
            ],
        );
        assert_success(&out, "getscu");
    }
    let retrieved = by_sop_instance(out_dir.path());
    for sample in &samples {
        match sample.transfer_syntax.as_str() {
            "1.2.840.10008.1.2.1" => {
                let got = &retrieved[&sample.sop_instance];
                assert!(
                    dataset_bytes(got) == dataset_bytes(&sample.path),
                    "{} differs after getscu",
                    sample.path.display()
                );
            }
            "1.2.840.10008.1.2" | "1.2.840.10008.1.2.2" => {
                let got = open_file(&retrieved[&sample.sop_instance]).unwrap();
                let orig = open_file(&sample.path).unwrap();
                assert_eq!(
                    got.element(tags::PIXEL_DATA)
                        .unwrap()
                        .to_multi_int::<u16>()
                        .unwrap(),
                    orig.element(tags::PIXEL_DATA)
                        .unwrap()
                        .to_multi_int::<u16>()
                        .unwrap(),
                    "pixel values of {} changed in re-encoding",
                    sample.path.display()
                );
            }
            _ => {}
        }
    }

    assert_get_exact_round_trip(&server, &samples);
}

#[test]
fn resending_the_same_instances_is_harmless() {
    let server = TramyServer::start();
    let samples = read_samples();
    store_all_with_pynetdicom(&server, &samples);
    let objects_before: Vec<_> = server.object_files();
    store_all_with_pynetdicom(&server, &samples);
    assert_eq!(server.indexed_instances(), samples.len() as i64);
    assert_eq!(server.object_files().len(), objects_before.len());
}

#[test]
fn c_move_delivers_every_sample_byte_identical_to_a_configured_destination() {
    let dest_port = free_port();
    let dest_dir = tempfile::tempdir().unwrap();
    let mut storescp = Command::new(python())
        .args(["-m", "pynetdicom", "storescp", "-aet", "DEST", "-od"])
        .arg(dest_dir.path())
        .arg(dest_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("storescp starts");
    let server = TramyServer::start_with_config(&format!(
        "[dimse.move_destinations]\nDEST = \"127.0.0.1:{dest_port}\"\n"
    ));
    let port = server.port();
    let samples = read_samples();
    store_all_with_pynetdicom(&server, &samples);
    for study in samples.iter().map(|s| &s.study).collect::<BTreeSet<_>>() {
        let q = format!("StudyInstanceUID={study}");
        let out = pynetdicom(
            "movescu",
            &[
                "-aec",
                "TRAMY",
                "-aem",
                "DEST",
                "-S",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &q,
                "127.0.0.1",
                &port,
            ],
        );
        assert_success(&out, "movescu");
    }
    let unknown = pynetdicom(
        "movescu",
        &[
            "-aec",
            "TRAMY",
            "-aem",
            "NOWHERE",
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID=1.2.3",
            "127.0.0.1",
            &port,
        ],
    );
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("0xA801"),
        "unknown destination is refused with 0xA801"
    );
    let _ = storescp.kill();
    let _ = storescp.wait();
    let received = by_sop_instance(dest_dir.path());
    for sample in &samples {
        let got = received
            .get(&sample.sop_instance)
            .unwrap_or_else(|| panic!("{} was not moved", sample.path.display()));
        assert!(
            dataset_bytes(got) == dataset_bytes(&sample.path),
            "{} differs after C-MOVE",
            sample.path.display()
        );
    }
}

/// The files under `dir` by their SOP Instance UID.
fn by_sop_instance(dir: &Path) -> BTreeMap<String, PathBuf> {
    walk(dir)
        .into_iter()
        .map(|p| {
            (
                tramy::dicom::attributes::text(&open_file(&p).unwrap(), tags::SOP_INSTANCE_UID),
                p,
            )
        })
        .collect()
}

/// An instance's content: its attributes as DICOM JSON and its pixel values, less the encoding
/// details a re-encoder may legitimately change (group lengths, trailing padding).
fn content(path: &Path) -> (serde_json::Value, Vec<u16>) {
    let obj = open_file(path).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&tramy::dicom::json::metadata_json(&obj).unwrap()).unwrap();
    if let Some(map) = json.as_object_mut() {
        map.retain(|tag, _| tag != "FFFCFFFC" && !tag.ends_with("0000"));
    }
    let pixels = obj
        .element(tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.to_multi_int::<u16>().ok())
        .unwrap_or_default();
    (json, pixels)
}

#[test]
fn dcmtk_clients_round_trip_every_sample() {
    if !dcmtk_available() {
        eprintln!("dcmtk is not installed (apt-get install dcmtk); .ci/run installs it. Skipping.");
        return;
    }
    let server = TramyServer::start();
    let port = server.port();
    // dcmtk's storescu proposes uncompressed syntaxes unless told one compressed syntax per run;
    // the compressed samples are covered by the pynetdicom tests.
    let samples: Vec<Sample> = read_samples()
        .into_iter()
        .filter(|s| tramy::dicom::transcode::is_native(&s.transfer_syntax))
        .collect();
    assert_success(
        &dcmtk("echoscu", &["-aec", "TRAMY", "127.0.0.1", &port], None),
        "dcmtk echoscu",
    );
    // -R: propose only the contexts the files need, in their own transfer syntax.
    let mut args = vec!["-aec", "TRAMY", "-R", "127.0.0.1", &port];
    let paths: Vec<String> = samples
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    args.extend(paths.iter().map(String::as_str));
    assert_success(&dcmtk("storescu", &args, None), "dcmtk storescu");
    assert_eq!(server.indexed_instances(), samples.len() as i64);

    let out = dcmtk(
        "findscu",
        &[
            "-S",
            "-aec",
            "TRAMY",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            &port,
        ],
        None,
    );
    assert_success(&out, "dcmtk findscu");
    let studies: BTreeSet<_> = samples.iter().map(|s| &s.study).collect();
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        log.matches("(0020,000d) UI [").count(),
        studies.len(),
        "findscu output:\n{log}"
    );

    let out_dir = tempfile::tempdir().unwrap();
    for study in &studies {
        let q = format!("StudyInstanceUID={study}");
        let od = out_dir.path().display().to_string();
        let out = dcmtk(
            "getscu",
            &[
                "-S",
                "-aec",
                "TRAMY",
                "-od",
                &od,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &q,
                "127.0.0.1",
                &port,
            ],
            None,
        );
        assert_success(&out, "dcmtk getscu");
    }
    let retrieved = by_sop_instance(out_dir.path());
    // dcmtk re-encodes data sets when it sends and when it writes files (it drops group lengths
    // and writes sequences with undefined length), so its round trip is checked on content: every
    // attribute value and the pixel values.
    for sample in &samples {
        let got = retrieved
            .get(&sample.sop_instance)
            .unwrap_or_else(|| panic!("{} not retrieved by dcmtk getscu", sample.path.display()));
        assert_eq!(
            content(got),
            content(&sample.path),
            "{} differs after dcmtk getscu",
            sample.path.display()
        );
    }
}

#[test]
fn a_real_seven_megabyte_chest_cr_round_trips_over_many_pdus() {
    let fetch = Command::new(repo_root().join("dicom-samples/fetch-chest-cr.sh"))
        .output()
        .expect("fetch-chest-cr.sh runs");
    assert_success(&fetch, "dicom-samples/fetch-chest-cr.sh");
    let cr = repo_root().join("dicom-samples/fetched/chest_cr_rg1_explicit_le.dcm");
    let server = TramyServer::start();
    server.store_files(&[&cr], "storescu of the chest CR");
    let obj = open_file(&cr).unwrap();
    let sample = Sample {
        patient_id: tramy::dicom::attributes::text(&obj, tags::PATIENT_ID),
        study: tramy::dicom::attributes::text(&obj, tags::STUDY_INSTANCE_UID),
        series: tramy::dicom::attributes::text(&obj, tags::SERIES_INSTANCE_UID),
        sop_instance: tramy::dicom::attributes::text(&obj, tags::SOP_INSTANCE_UID),
        sop_class: tramy::dicom::attributes::text(&obj, tags::SOP_CLASS_UID),
        transfer_syntax: obj.meta().transfer_syntax().to_string(),
        path: cr,
    };
    assert_get_exact_round_trip(&server, &[sample]);
}
