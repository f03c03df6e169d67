//! The rows behind accent-insensitive person-name matching and link suggestions (issue #12):
//! each patient's folded name words (`patient_name_words`), the sorted words as one key
//! (`patients.name_key`) and the other IDs (`patient_other_ids`), written with the patient's
//! row; the search condition a name query becomes; the provisional patients that may be an
//! identified one. What a folded word is lives in `dicom/person_name.rs`.

use std::collections::BTreeMap;

use serde::Serialize;

use dicom_object::InMemDicomObject;

use super::db::{params, Connection, Engine, OptionalExtension, Value as SqlValue};
use super::sharing::PROVISIONAL_KEY_PREFIX;
use super::visibility::{patient_filter, study_filter};
use crate::access::Visibility;
use crate::dicom::attributes::other_patient_ids;
use crate::dicom::person_name::{name_key, name_words, query_words};
use crate::dicom::PatientAttributes;

/// Files the name words and other IDs of the new patient row `patient_fk` (inserted with its
/// `name_key`).
pub(super) fn file_patient(
    conn: &Connection,
    patient_fk: i64,
    p: &PatientAttributes,
) -> super::db::Result<()> {
    file_words(conn, patient_fk, &p.patient_name)?;
    file_other_ids(conn, patient_fk, &p.other_patient_ids)
}

fn file_other_ids(conn: &Connection, patient_fk: i64, ids: &[String]) -> super::db::Result<()> {
    for id in ids {
        conn.prepare_cached(
            "INSERT INTO patient_other_ids (other_id, patient_fk) VALUES (?1, ?2) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![id, patient_fk])?;
    }
    Ok(())
}

/// Files the words of `name` and sets the patient's `name_key` (the backfill's part).
fn file_name(conn: &Connection, patient_fk: i64, name: &str) -> super::db::Result<()> {
    file_words(conn, patient_fk, name)?;
    conn.prepare_cached("UPDATE patients SET name_key = ?1 WHERE id = ?2")?
        .execute(params![name_key(name), patient_fk])?;
    Ok(())
}

fn file_words(conn: &Connection, patient_fk: i64, name: &str) -> super::db::Result<()> {
    let key = name_key(name);
    for word in name_words(name) {
        // ON CONFLICT: a backfill that two nodes run at once files the same words.
        conn.prepare_cached(
            "INSERT INTO patient_name_words (word, patient_fk, name_key) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![word, patient_fk, key])?;
    }
    Ok(())
}

/// Patients per backfill transaction: short enough that a start-up on a large index shows
/// progress and a second node's writes are not held up long.
const BACKFILL_BATCH: i64 = 2000;

/// Files the name words, key and other IDs of the patients filed before migration 10 (their
/// `name_key` is NULL); returns how many. The other IDs come from the stored DICOM JSON of one
/// of the patient's instances (the index kept no column for them).
pub(super) fn backfill(conn: &Connection) -> super::db::Result<u64> {
    let mut done = 0u64;
    loop {
        let batch: Vec<(i64, String)> = conn
            .prepare_cached(
                "SELECT id, patient_name FROM patients WHERE name_key IS NULL ORDER BY id LIMIT ?1",
            )?
            .query_map([BACKFILL_BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if batch.is_empty() {
            return Ok(done);
        }
        conn.execute_batch("BEGIN")?;
        let filed = batch.iter().try_for_each(|(id, name)| {
            file_name(conn, *id, name)?;
            file_other_ids_from_metadata(conn, *id)
        });
        conn.execute_batch(if filed.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
        filed?;
        done += batch.len() as u64;
    }
}

/// Files the other IDs that the metadata of one of the patient's instances holds.
fn file_other_ids_from_metadata(conn: &Connection, patient_fk: i64) -> super::db::Result<()> {
    let json: Option<String> = conn
        .prepare_cached(
            "SELECT i.metadata_json FROM studies st JOIN series se ON se.study_fk = st.id \
             JOIN instances i ON i.series_fk = se.id WHERE st.patient_fk = ?1 LIMIT 1",
        )?
        .query_row([patient_fk], |r| r.get(0))
        .optional()?;
    // Metadata that does not parse has no other IDs to offer; the name words are filed anyway.
    let Some(obj) = json.and_then(|j| dicom_json::from_str::<InMemDicomObject>(&j).ok()) else {
        return Ok(());
    };
    file_other_ids(conn, patient_fk, &other_patient_ids(&obj))
}

/// The condition that the patient with row id `patient` (an SQL expression) has a name whose
/// folded words begin with each folded word of `value`, in any order and component: `van an`
/// and `Văn*` find `Nguyễn^Văn An` and `NGUYEN^VAN AN`. `None` when `value` has no word.
pub(super) fn name_words_condition(
    conn: &Connection,
    patient: &str,
    value: &str,
) -> super::db::Result<Option<(String, Vec<SqlValue>)>> {
    Ok(name_words_select(conn, value)?
        .map(|(select, params)| (format!("{patient} IN ({select})"), params)))
}

/// A `SELECT` of the ids of the patients whose name has each folded word of `value` as a word
/// prefix, with its parameters; `None` when `value` has no word.
///
/// The search starts from one word's index range, the word with the fewest patients (`an`
/// before `nguyen`, which 38% of Vietnamese are called), and checks the others in the name key
/// each word row carries: one range read, never a set per word nor a patient row.
pub(super) fn name_words_select(
    conn: &Connection,
    value: &str,
) -> super::db::Result<Option<(String, Vec<SqlValue>)>> {
    let words = query_words(value);
    if words.is_empty() {
        return Ok(None);
    }
    let engine = conn.engine();
    let start = if words.len() == 1 {
        0
    } else {
        most_selective(conn, &words)?
    };
    let (check, mut params) = word_check(engine, &words[start]);
    let mut sql = format!("SELECT w.patient_fk FROM patient_name_words w WHERE {check}");
    for (_, word) in words.iter().enumerate().filter(|(i, _)| *i != start) {
        // `name_key` is the sorted words joined by spaces: a word begins after a space.
        let pattern = format!("* {}", with_trailing_star(word));
        let (check, p) = super::query::wildcard_condition(engine, "(' ' || w.name_key)", &pattern);
        sql.push_str(" AND ");
        sql.push_str(&check);
        params.push(p);
    }
    Ok(Some((sql, params)))
}

fn with_trailing_star(word: &str) -> String {
    if word.ends_with('*') {
        word.to_string()
    } else {
        format!("{word}*")
    }
}

/// The characters of `word` before its first wildcard.
fn literal_prefix(word: &str) -> String {
    word.chars()
        .take_while(|c| *c != '*' && *c != '?')
        .collect()
}

/// `w.word` begins with `word`: an index range on its literal prefix (a range, not LIKE, so
/// PostgreSQL's generic plans use the index too), then the wildcard match when it has one inside.
fn word_check(engine: Engine, word: &str) -> (String, Vec<SqlValue>) {
    let literal = literal_prefix(word);
    let mut checks = Vec::new();
    let mut params = Vec::new();
    if !literal.is_empty() {
        checks.push("w.word >= ? AND w.word < ?".to_string());
        // Every word beginning with `literal` sorts below `literal` + the last code point,
        // bytewise (SQLite's BINARY, PostgreSQL's "C" collation of the column).
        params.push(SqlValue::Text(literal.clone()));
        params.push(SqlValue::Text(format!("{literal}\u{10FFFF}")));
    }
    // Trailing `*`s say no more than the range does.
    if literal.is_empty() || literal.len() < word.trim_end_matches('*').len() {
        let (check, p) =
            super::query::wildcard_condition(engine, "w.word", &with_trailing_star(word));
        checks.push(check);
        params.push(p);
    }
    (checks.join(" AND "), params)
}

/// Index entries counted per word when choosing where a search starts: choosing costs at most
/// this many a word, and past it a word is common enough that which one hardly matters.
const SELECTIVITY_PROBE: i64 = 2000;

/// The index of the word of `words` that begins the fewest names (a word that starts with a
/// wildcard has no range to read and comes last).
fn most_selective(conn: &Connection, words: &[String]) -> super::db::Result<usize> {
    let mut best = (i64::MAX, 0);
    for (i, word) in words.iter().enumerate() {
        let literal = literal_prefix(word);
        if literal.is_empty() {
            continue;
        }
        let n: i64 = conn
            .prepare_cached(&format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM patient_name_words w \
                 WHERE w.word >= ?1 AND w.word < ?2 LIMIT {SELECTIVITY_PROBE}) AS probe"
            ))?
            .query_row(params![literal, format!("{literal}\u{10FFFF}")], |r| {
                r.get(0)
            })?;
        if n < best.0 {
            best = (n, i);
        }
    }
    Ok(best.1)
}

/// Why a provisional patient may be an identified one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
pub enum Evidence {
    /// The same name, once accents, case and component order are set aside.
    PatientName,
    /// The same Patient's Birth Date.
    PatientBirthDate,
    /// The same Patient's Sex.
    PatientSex,
    /// One of the provisional patient's Other Patient IDs (e.g. a national citizen ID) is the
    /// patient's ID or one of their other IDs.
    OtherPatientIDs,
}

/// A provisional patient (arrived without an ID) who may be the patient asked about: link it with
/// `POST /api/v1/patients/{patient}/links` and one of its studies, once a person has checked.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkSuggestion {
    /// The provisional patient's studies the caller may see, oldest first.
    pub study_instance_uids: Vec<String>,
    /// Patient's Name as the provisional record has it.
    pub patient_name: String,
    /// Patient's Birth Date as the provisional record has it.
    pub birth_date: String,
    /// Patient's Sex as the provisional record has it.
    pub sex: String,
    /// What matched.
    pub evidence: Vec<Evidence>,
}

/// At most this many suggestions per patient: a common name without a birth date never matches
/// (both must be present), so more would mean bad data, not candidates.
const MAX_SUGGESTIONS: usize = 50;

/// The unlinked provisional patients `v` shows that match the patient with row id `patient_fk`
/// by folded name, birth date and sex together, or by an other ID.
pub(super) fn link_suggestions(
    conn: &Connection,
    v: &Visibility,
    patient_fk: i64,
) -> super::db::Result<Vec<LinkSuggestion>> {
    let (key, birth_date, sex, patient_id): (Option<String>, String, String, String) = conn
        .prepare_cached("SELECT name_key, birth_date, sex, patient_id FROM patients WHERE id = ?1")?
        .query_row([patient_fk], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    let mut found: BTreeMap<i64, Vec<Evidence>> = BTreeMap::new();
    let key = key.unwrap_or_default();
    if !key.is_empty() && !birth_date.is_empty() {
        let by_name = candidates(
            conn,
            v,
            "p.name_key = ? AND p.birth_date = ? AND p.sex = ?",
            vec![
                SqlValue::Text(key),
                SqlValue::Text(birth_date),
                SqlValue::Text(sex),
            ],
        )?;
        for id in by_name {
            found.entry(id).or_default().extend([
                Evidence::PatientName,
                Evidence::PatientBirthDate,
                Evidence::PatientSex,
            ]);
        }
    }
    let by_id = candidates(
        conn,
        v,
        "p.id IN (SELECT o.patient_fk FROM patient_other_ids o WHERE o.other_id = ? \
         OR o.other_id IN (SELECT mine.other_id FROM patient_other_ids mine WHERE mine.patient_fk = ?))",
        vec![SqlValue::Text(patient_id), SqlValue::Integer(patient_fk)],
    )?;
    for id in by_id {
        found.entry(id).or_default().push(Evidence::OtherPatientIDs);
    }
    found
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(id, evidence)| suggestion(conn, v, id, evidence))
        .filter_map(Result::transpose)
        .collect()
}

/// The unlinked provisional patients `v` shows that meet `condition` (on `p`).
fn candidates(
    conn: &Connection,
    v: &Visibility,
    condition: &str,
    mut params: Vec<SqlValue>,
) -> super::db::Result<Vec<i64>> {
    let visible = patient_filter(v);
    params.push(SqlValue::Text(format!("{PROVISIONAL_KEY_PREFIX}%")));
    params.extend(visible.params);
    conn.prepare_cached(&format!(
        "SELECT p.id FROM patients p WHERE {condition} AND p.patient_key LIKE ? \
         AND NOT EXISTS (SELECT 1 FROM patient_links l WHERE l.provisional_fk = p.id \
         AND l.unlinked_at IS NULL) AND {} ORDER BY p.id LIMIT {}",
        visible.sql,
        MAX_SUGGESTIONS + 1
    ))?
    .query_map(super::db::params_from_iter(params), |r| r.get(0))?
    .collect()
}

/// The suggestion of provisional patient `id`; `None` when `v` shows none of its studies.
fn suggestion(
    conn: &Connection,
    v: &Visibility,
    id: i64,
    mut evidence: Vec<Evidence>,
) -> super::db::Result<Option<LinkSuggestion>> {
    evidence.sort();
    evidence.dedup();
    let visible = study_filter(v, "st.id", None);
    let params = std::iter::once(SqlValue::Integer(id)).chain(visible.params);
    let studies: Vec<String> = conn
        .prepare_cached(&format!(
            "SELECT st.study_instance_uid FROM studies st WHERE st.patient_fk = ? AND {} ORDER BY st.id",
            visible.sql
        ))?
        .query_map(super::db::params_from_iter(params), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if studies.is_empty() {
        return Ok(None);
    }
    let (patient_name, birth_date, sex) = conn
        .prepare_cached("SELECT patient_name, birth_date, sex FROM patients WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(Some(LinkSuggestion {
        study_instance_uids: studies,
        patient_name,
        birth_date,
        sex,
        evidence,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(words: &[(&str, i64)]) -> Connection {
        let conn = Connection::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        conn.execute_batch(
            "CREATE TABLE patient_name_words (word TEXT, patient_fk INTEGER, name_key TEXT)",
        )
        .unwrap();
        for (word, patient) in words {
            conn.execute(
                "INSERT INTO patient_name_words VALUES (?1, ?2, '')",
                params![word, patient],
            )
            .unwrap();
        }
        conn
    }

    #[test]
    fn a_search_starts_from_its_rarest_word_and_checks_the_others_in_the_key() {
        let conn = index_with(&[("nguyen", 1), ("nguyen", 2), ("van", 1), ("an", 1)]);
        let (sql, params) = name_words_select(&conn, "Nguyễn Văn An").unwrap().unwrap();
        assert_eq!(sql.matches("w.word >=").count(), 1, "{sql}");
        assert_eq!(params[0], SqlValue::Text("van".into()), "{sql}");
        assert_eq!(params[2], SqlValue::Text("* nguyen*".into()));
        assert_eq!(params[3], SqlValue::Text("* an*".into()));
    }

    #[test]
    fn a_wildcard_inside_a_word_is_matched_after_the_range() {
        let conn = index_with(&[]);
        let (sql, params) = name_words_select(&conn, "ng?yen").unwrap().unwrap();
        assert!(sql.contains("GLOB"), "{sql}");
        assert_eq!(params.len(), 3);
        assert_eq!(params[2], SqlValue::Text("ng?yen*".into()));
    }

    #[test]
    fn a_trailing_star_is_the_range_alone() {
        let (sql, params) = name_words_select(&index_with(&[]), "Nguyễn*")
            .unwrap()
            .unwrap();
        assert!(!sql.contains("GLOB"), "{sql}");
        assert_eq!(params.len(), 2);
    }

    #[test]
    fn a_value_without_words_adds_no_condition() {
        assert!(name_words_select(&index_with(&[]), "*^ ")
            .unwrap()
            .is_none());
    }
}
