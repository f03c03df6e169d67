//! `GET /ui/events`: server-sent events (HTML Living Standard 9.2) that tell an open worklist
//! page its table changed, so it re-fetches the table without a reload.
//!
//! Bounded by design: one stream per session (a new one ends the older), at most
//! [`MAX_STREAMS`] in all, each at most [`MAX_LIFETIME`] long (the browser reconnects by
//! itself), and ended at the next poll after its session signs out. Each stream polls the
//! index's cheap [`ChangeMarker`](crate::store::changes::ChangeMarker) every [`POLL`]; only when
//! that moved does it re-read the caller's own worklist, and it tells the page only when what
//! the caller sees changed: another facility's activity is never announced.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::access::Principal;
use crate::store::changes::ChangeMarker;
use crate::web::auth::{Caller, SESSION_COOKIE};
use crate::web::error::HttpError;
use crate::web::AppState;

/// How often a stream looks at the index.
pub const POLL: Duration = Duration::from_secs(1);
/// The longest a stream stays open.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// The most streams open at once, whoever holds them.
pub const MAX_STREAMS: usize = 256;
/// How many worklist entries a stream compares (as many as a page reads).
const COMPARED: i64 = 1000;

/// The open streams: each session's key (a hash of its credential, never the credential) with
/// the generation of its current stream.
#[derive(Clone, Default)]
pub struct Streams {
    open: Arc<Mutex<HashMap<[u8; 32], u64>>>,
    next: Arc<AtomicU64>,
}

impl Streams {
    /// Opens the stream of session `key`, ending any older one of it; `None` when
    /// [`MAX_STREAMS`] other sessions hold one.
    fn open(&self, key: [u8; 32]) -> Option<StreamGuard> {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if !open.contains_key(&key) && open.len() >= MAX_STREAMS {
            return None;
        }
        open.insert(key, generation);
        Some(StreamGuard {
            streams: self.clone(),
            key,
            generation,
        })
    }

    /// Ends the stream of the session whose credential is `credential` (at its next poll).
    pub fn end(&self, credential: &str) {
        let key = session_key(credential);
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    fn is_current(&self, key: &[u8; 32], generation: u64) -> bool {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).get(key) == Some(&generation)
    }
}

/// A stream's place in [`Streams`], given up when the stream is dropped (the browser left).
struct StreamGuard {
    streams: Streams,
    key: [u8; 32],
    generation: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.get(&self.key) == Some(&self.generation) {
            open.remove(&self.key);
        }
    }
}

fn session_key(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

/// The request's credential: the session cookie, else the `Authorization` header.
fn credential(headers: &HeaderMap) -> Option<String> {
    super::i18n::cookie(headers, SESSION_COOKIE)
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
}

/// What a stream carries from one poll to the next.
struct Watch {
    state: AppState,
    who: Principal,
    guard: StreamGuard,
    marker: ChangeMarker,
    seen: u64,
    ends_at: Instant,
    /// The stream has said its last word.
    over: bool,
}

/// `GET /ui/events` (`Accept: text/event-stream`): an event `worklist` each time the caller's
/// worklist changes. 406 for a client that does not accept an event stream, 503 when
/// [`MAX_STREAMS`] are open.
pub async fn worklist_events(
    State(state): State<AppState>,
    Caller(who): Caller,
    headers: HeaderMap,
) -> Response {
    // Admission first: a role that may not read findings learns nothing else here.
    let marker = match state.archive.index().worklist_marker(&who).await {
        Ok(marker) => marker,
        Err(e) => return HttpError::from(e).into_response(),
    };
    if !accepts_event_stream(&headers) {
        return HttpError::new(
            StatusCode::NOT_ACCEPTABLE,
            "this resource is an event stream: send Accept: text/event-stream",
        )
        .into_response();
    }
    let Some(key) = credential(&headers).map(|c| session_key(&c)) else {
        return HttpError::new(StatusCode::UNAUTHORIZED, "no session").into_response();
    };
    let Some(guard) = state.ui.streams.open(key) else {
        let mut response = HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many pages are following the worklist; it still works with reloads",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(60));
        return response;
    };
    let seen = match fingerprint(&state, &who).await {
        Ok(seen) => seen,
        Err(e) => return HttpError::from(e).into_response(),
    };
    let watch = Watch {
        state,
        who,
        guard,
        marker,
        seen,
        ends_at: Instant::now() + MAX_LIFETIME,
        over: false,
    };
    let stream = futures::stream::unfold(watch, next_change);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| m.split(';').next().unwrap_or_default().trim() == "text/event-stream")
}

/// Waits for the next change the caller can see; `None` ends the stream (too old, or the index
/// failing). A stream replaced by a newer one of its session, or whose session signed out, says
/// `closed` last: the page then stops following (two tabs of one session do not take the
/// stream from each other in turn; the one in front takes it back when shown).
async fn next_change(mut w: Watch) -> Option<(Result<Event, Infallible>, Watch)> {
    if w.over {
        return None;
    }
    loop {
        tokio::time::sleep(POLL).await;
        let current = w
            .state
            .ui
            .streams
            .is_current(&w.guard.key, w.guard.generation);
        if !current {
            w.over = true;
            return Some((Ok(Event::default().event("closed").data("closed")), w));
        }
        if Instant::now() >= w.ends_at {
            return None;
        }
        let index = w.state.archive.index();
        let marker = match index.worklist_marker(&w.who).await {
            Ok(marker) => marker,
            Err(e) => {
                tracing::warn!(error = %e, "worklist events: the index did not answer");
                return None;
            }
        };
        if marker == w.marker {
            continue;
        }
        w.marker = marker;
        let seen = fingerprint(&w.state, &w.who).await.ok()?;
        if seen != w.seen {
            w.seen = seen;
            let event = Event::default().event("worklist").data("changed");
            return Some((Ok(event), w));
        }
    }
}

/// A hash of the caller's worklist as the page shows it.
async fn fingerprint(state: &AppState, who: &Principal) -> Result<u64, crate::store::IndexError> {
    let list = state
        .archive
        .index()
        .worklist(who, COMPARED, 0, String::new())
        .await?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for e in &list {
        (
            &e.study_instance_uid,
            &e.modalities,
            &e.urgency,
            &e.flags,
            &e.outside_intended_use,
        )
            .hash(&mut hasher);
        (e.pending_jobs, e.failed_jobs, e.skipped_jobs).hash(&mut hasher);
        e.skipped_reasons.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_has_one_stream_and_signing_out_ends_it() {
        let streams = Streams::default();
        let first = streams.open(session_key("t")).unwrap();
        let second = streams.open(session_key("t")).unwrap();
        assert!(!streams.is_current(&first.key, first.generation));
        assert!(streams.is_current(&second.key, second.generation));
        drop(first); // the older stream's end does not end the newer one
        assert!(streams.is_current(&second.key, second.generation));
        streams.end("t");
        assert!(!streams.is_current(&second.key, second.generation));
    }

    #[test]
    fn no_more_than_max_streams_are_open() {
        let streams = Streams::default();
        let held: Vec<_> = (0..MAX_STREAMS)
            .map(|i| streams.open(session_key(&i.to_string())).unwrap())
            .collect();
        assert!(streams.open(session_key("one more")).is_none());
        drop(held);
        assert!(streams.open(session_key("one more")).is_some());
    }
}
