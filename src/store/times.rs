//! How the index stores times: RFC 3339 UTC with milliseconds (`2026-11-30T04:00:00.000Z`), one
//! fixed width, so text order is time order and SQL compares times as text.

use chrono::{DateTime, SecondsFormat, Utc};

/// `at` as the index stores it.
pub(super) fn text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, as the index stores it.
pub(super) fn now() -> String {
    text(Utc::now())
}
