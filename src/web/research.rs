//! `POST /api/v1/research/exports` (issue #15 item 6): a de-identified research set as a
//! streamed ZIP. Thin: who may export, which studies and how they are de-identified are in
//! `src/research/`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::Caller;
use super::error::HttpError;
use super::AppState;
use crate::research::{self, ExportRequest, Pseudonyms, ResearchError, ZipStream};

impl From<ResearchError> for HttpError {
    fn from(e: ResearchError) -> Self {
        match e {
            ResearchError::Forbidden => HttpError::forbidden(),
            ResearchError::NoSuchGrant(_) => HttpError::not_found(e.to_string()),
            ResearchError::TooManyStudies(_) | ResearchError::BadRequest(_) => {
                HttpError::bad_request(e.to_string())
            }
            ResearchError::Index(e) => e.into(),
            ResearchError::Secret(_) | ResearchError::Write(_) => HttpError::internal(e),
        }
    }
}

/// The thresholds of the loaded models' labels, for labels.csv.
fn thresholds(state: &AppState) -> research::export::Thresholds {
    state
        .models
        .iter()
        .flat_map(|m| {
            m.manifest
                .labels
                .iter()
                .map(|l| ((m.manifest.name.clone(), l.name.clone()), l.threshold))
        })
        .collect()
}

/// `POST /api/v1/research/exports` (researcher; superadmin): the studies the caller may see for
/// research (one research grant's, with `grant`), narrowed by modality and study dates,
/// de-identified per PS3.15 Annex E (Basic Profile, Retain Longitudinal Temporal Information
/// with Modified Dates Option) as a ZIP of `DICOM/…`, `labels.csv`, `manifest.json` and
/// `README.txt`, streamed. A researcher without a research grant gets an empty set.
#[utoipa::path(post, path = "/api/v1/research/exports", request_body = ExportRequest, responses(
    (status = 200, description = "the set, a ZIP streamed as it is written", content_type = "application/zip"),
    (status = 400, description = "a filter is malformed, or more studies match than one export may hold", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 403, description = "not a researcher", body = super::api::Problem, content_type = "application/problem+json"),
    (status = 404, description = "no such research grant to the caller's facility", body = super::api::Problem, content_type = "application/problem+json")
))]
pub async fn export(
    State(state): State<AppState>,
    Caller(who): Caller,
    body: Result<Json<ExportRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, HttpError> {
    if !research::may_export(&who) {
        return Err(HttpError::forbidden());
    }
    let request = body?.0;
    let max = state.config.research.max_studies_per_export;
    let studies = research::select_studies(&state.archive, &who, &request, max).await?;
    let keys = Pseudonyms::load_or_create(&state.config.data_dir)?;
    let thresholds = thresholds(&state);
    // A few files in flight: a slow client slows the export, memory stays bounded.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut zip = ZipStream::new(tx.clone());
        let grant = request.grant.as_deref();
        let written = research::export_set(
            &state.archive,
            &who,
            &studies,
            grant,
            &keys,
            &thresholds,
            &mut zip,
        )
        .await;
        let done = match written {
            Ok(_) => zip.finish().await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            tracing::warn!("research export cut short: {e}");
            // The client sees a broken transfer, never a set that looks whole.
            let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/zip"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"research-set.zip\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
