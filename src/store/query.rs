//! Attribute matching over the index, shared by C-FIND (PS3.4 C.2.2.2) and, later, QIDO-RS
//! (PS3.18 8.3.4): single value, universal (empty), wildcard (`*`, `?`), UID list (`\`- or, in QIDO-RS, `,`-separated),
//! date/time range (`a-b`, `-b`, `a-`) and case-insensitive person-name matching.

use std::collections::HashMap;
use std::ops::ControlFlow;

use super::db::{Connection, Engine, Value as SqlValue};
use dicom_core::Tag;
use dicom_dictionary_std::tags;

use super::index::{stored_instance_from_row, IndexError, StoredInstance, STORED_INSTANCE_SELECT};
use super::visibility::{patient_condition, study_condition};
use crate::access::{Action, Principal, Visibility};
use crate::dicom::person_name::{query_words, MAX_QUERY_WORDS};
use crate::store::index::{normalise_person_name, Index};

/// A caller's read-only view of the index, on a blocking thread that holds one connection (one
/// consistent snapshot) for as long as the closure given to [`Index::query`] runs: C-FIND,
/// QIDO-RS, C-GET, C-MOVE and WADO resolve their queries here. Results are streamed row by row
/// with [`QueryScope::for_each_match`]. The caller travels with it, so scoping by facility and
/// grants (issue #9) narrows every query in this one place.
pub struct QueryScope<'a> {
    conn: &'a Connection,
    /// What the caller may see for the action it was admitted for.
    visibility: Visibility,
}

impl QueryScope<'_> {
    /// The matching entities with every indexed attribute of their level and the levels above.
    pub fn find(&self, query: &AttributeQuery) -> Result<Vec<QueryMatch>, QueryError> {
        find(self.conn, query, &self.visibility)
    }

    /// Hands each matching entity to `f` as it is read, so a large result is never held whole;
    /// stops at the first error `f` returns.
    pub fn for_each_match<E: From<QueryError>>(
        &self,
        query: &AttributeQuery,
        f: impl FnMut(QueryMatch) -> Result<(), E>,
    ) -> Result<(), E> {
        for_each_match(self.conn, query, &self.visibility, f)
    }

    /// Whether `query` matches more than `n` entities after its offset (its limit ignored).
    pub fn matches_more_than(&self, query: &AttributeQuery, n: u64) -> Result<bool, QueryError> {
        matches_more_than(self.conn, query, &self.visibility, n)
    }

    /// The filed instances under the entities `query` matches (C-GET, C-MOVE, WADO).
    pub fn instances(&self, query: &AttributeQuery) -> Result<Vec<StoredInstance>, QueryError> {
        instances(self.conn, query, &self.visibility)
    }

    /// The stored DICOM JSON metadata of the instances `query` matches, in instance order.
    pub fn metadata(&self, query: &AttributeQuery) -> Result<Vec<InstanceMetadata>, QueryError> {
        metadata(self.conn, query, &self.visibility)
    }
}

impl Index {
    /// Runs `f` with `who`'s [`QueryScope`] for a search (C-FIND, QIDO-RS) on a read-only
    /// connection in the blocking pool.
    pub async fn query<T, F>(&self, who: &Principal, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&QueryScope<'_>) -> T + Send + 'static,
    {
        self.query_as(who, Action::Query, f).await
    }

    /// [`Index::query`] admitted as `action` (C-GET and C-MOVE retrieve: [`Action::Retrieve`]),
    /// which decides what the scope shows: a grant may open a study's metadata but not its images.
    pub async fn query_as<T, F>(
        &self,
        who: &Principal,
        action: Action,
        f: F,
    ) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&QueryScope<'_>) -> T + Send + 'static,
    {
        self.admit(who, action)?;
        let visibility = who.visibility(action);
        self.read(move |conn| Ok(f(&QueryScope { conn, visibility })))
            .await
    }

    /// The filed instances under the entities `query` matches, to retrieve them.
    pub async fn instances(
        &self,
        who: &Principal,
        query: AttributeQuery,
    ) -> Result<Result<Vec<StoredInstance>, QueryError>, IndexError> {
        self.query_as(who, Action::Retrieve, move |scope| scope.instances(&query))
            .await
    }

    /// The stored DICOM JSON metadata of the instances `query` matches.
    pub async fn metadata(
        &self,
        who: &Principal,
        query: AttributeQuery,
    ) -> Result<Result<Vec<InstanceMetadata>, QueryError>, IndexError> {
        self.query_as(who, Action::ReadMetadata, move |scope| {
            scope.metadata(&query)
        })
        .await
    }
}

/// The level of the information model a query works at (QueryRetrieveLevel, PS3.4 C.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueryLevel {
    /// PATIENT
    Patient,
    /// STUDY
    Study,
    /// SERIES
    Series,
    /// IMAGE (instance)
    Image,
}

impl QueryLevel {
    /// Parses the value of QueryRetrieveLevel (0008,0052).
    pub fn from_keyword(value: &str) -> Option<QueryLevel> {
        match value
            .trim_matches(['\0', ' '])
            .to_ascii_uppercase()
            .as_str()
        {
            "PATIENT" => Some(QueryLevel::Patient),
            "STUDY" => Some(QueryLevel::Study),
            "SERIES" => Some(QueryLevel::Series),
            "IMAGE" | "INSTANCE" => Some(QueryLevel::Image),
            _ => None,
        }
    }

    /// The keyword for QueryRetrieveLevel.
    pub fn keyword(self) -> &'static str {
        match self {
            QueryLevel::Patient => "PATIENT",
            QueryLevel::Study => "STUDY",
            QueryLevel::Series => "SERIES",
            QueryLevel::Image => "IMAGE",
        }
    }

    /// The FROM clause for rows of this level joined with every level above it.
    fn tables(self) -> &'static str {
        match self {
            QueryLevel::Patient => "patients p",
            QueryLevel::Study => "studies st JOIN patients p ON st.patient_fk = p.id",
            QueryLevel::Series => {
                "series se JOIN studies st ON se.study_fk = st.id JOIN patients p ON st.patient_fk = p.id"
            }
            QueryLevel::Image => {
                "instances i JOIN series se ON i.series_fk = se.id JOIN studies st ON se.study_fk = st.id \
                 JOIN patients p ON st.patient_fk = p.id"
            }
        }
    }

    fn order_clause(self) -> &'static str {
        match self {
            QueryLevel::Patient => "p.id",
            QueryLevel::Study => "st.id",
            QueryLevel::Series => "st.id, se.series_number, se.id",
            QueryLevel::Image => "se.id, i.instance_number, i.id",
        }
    }
}

/// How an attribute is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matching {
    /// UID list matching.
    Uid,
    /// Case-sensitive single value / wildcard.
    Text,
    /// Case-insensitive single value / wildcard on the normalised column.
    PersonName(&'static str),
    /// DA: single value or range.
    Date,
    /// TM: single value or range.
    Time,
    /// IS/US: single value.
    Integer,
    /// ModalitiesInStudy: any listed modality present in the study.
    Modalities,
    /// Return key only (counts).
    ReturnOnly,
}

/// An attribute the index can match on or return.
#[derive(Debug, Clone, Copy)]
pub struct IndexedAttribute {
    /// The tag.
    pub tag: Tag,
    /// The level it belongs to.
    pub level: QueryLevel,
    column: &'static str,
    matching: Matching,
}

impl IndexedAttribute {
    /// How the attribute is matched, in PS3.4 C.2.2.2 terms, for the conformance statement.
    pub fn matching(&self) -> &'static str {
        match self.matching {
            Matching::Uid => "single value, UID list",
            Matching::Text => "single value, wildcard",
            Matching::PersonName(_) => {
                "single value, wildcard, case-insensitive; fuzzy: per word, accent-insensitive"
            }
            Matching::Date => "single value, range",
            Matching::Time => "single value, range",
            Matching::Integer => "single value",
            Matching::Modalities => "any of the listed values",
            Matching::ReturnOnly => "return key only",
        }
    }
}

const fn attr(
    tag: Tag,
    level: QueryLevel,
    column: &'static str,
    matching: Matching,
) -> IndexedAttribute {
    IndexedAttribute {
        tag,
        level,
        column,
        matching,
    }
}

use Matching as M;
use QueryLevel as L;

/// Every attribute the index holds, by level (PS3.4 C.6.1.1 and C.6.2.1 keys, PS3.18 10.6.3.3).
pub const INDEXED_ATTRIBUTES: &[IndexedAttribute] = &[
    attr(
        tags::PATIENT_NAME,
        L::Patient,
        "p.patient_name",
        M::PersonName("p.patient_name_norm"),
    ),
    attr(tags::PATIENT_ID, L::Patient, "p.patient_id", M::Text),
    attr(
        tags::ISSUER_OF_PATIENT_ID,
        L::Patient,
        "p.issuer_of_patient_id",
        M::Text,
    ),
    attr(
        tags::PATIENT_BIRTH_DATE,
        L::Patient,
        "p.birth_date",
        M::Date,
    ),
    attr(tags::PATIENT_SEX, L::Patient, "p.sex", M::Text),
    attr(
        tags::NUMBER_OF_PATIENT_RELATED_STUDIES,
        L::Patient,
        "p.num_studies",
        M::ReturnOnly,
    ),
    attr(
        tags::NUMBER_OF_PATIENT_RELATED_SERIES,
        L::Patient,
        "p.num_series",
        M::ReturnOnly,
    ),
    attr(
        tags::NUMBER_OF_PATIENT_RELATED_INSTANCES,
        L::Patient,
        "p.num_instances",
        M::ReturnOnly,
    ),
    attr(
        tags::STUDY_INSTANCE_UID,
        L::Study,
        "st.study_instance_uid",
        M::Uid,
    ),
    attr(tags::STUDY_DATE, L::Study, "st.study_date", M::Date),
    attr(tags::STUDY_TIME, L::Study, "st.study_time", M::Time),
    attr(
        tags::ACCESSION_NUMBER,
        L::Study,
        "st.accession_number",
        M::Text,
    ),
    attr(tags::STUDY_ID, L::Study, "st.study_id", M::Text),
    attr(
        tags::REFERRING_PHYSICIAN_NAME,
        L::Study,
        "st.referring_physician_name",
        M::PersonName("st.referring_physician_name_norm"),
    ),
    attr(
        tags::STUDY_DESCRIPTION,
        L::Study,
        "st.study_description",
        M::Text,
    ),
    attr(
        tags::MODALITIES_IN_STUDY,
        L::Study,
        "st.modalities_in_study",
        M::Modalities,
    ),
    attr(
        tags::NUMBER_OF_STUDY_RELATED_SERIES,
        L::Study,
        "st.num_series",
        M::ReturnOnly,
    ),
    attr(
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        L::Study,
        "st.num_instances",
        M::ReturnOnly,
    ),
    attr(
        tags::SERIES_INSTANCE_UID,
        L::Series,
        "se.series_instance_uid",
        M::Uid,
    ),
    attr(tags::MODALITY, L::Series, "se.modality", M::Text),
    attr(
        tags::SERIES_NUMBER,
        L::Series,
        "se.series_number",
        M::Integer,
    ),
    attr(
        tags::SERIES_DESCRIPTION,
        L::Series,
        "se.series_description",
        M::Text,
    ),
    attr(
        tags::BODY_PART_EXAMINED,
        L::Series,
        "se.body_part_examined",
        M::Text,
    ),
    attr(tags::SERIES_DATE, L::Series, "se.series_date", M::Date),
    attr(tags::SERIES_TIME, L::Series, "se.series_time", M::Time),
    attr(
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        L::Series,
        "se.num_instances",
        M::ReturnOnly,
    ),
    attr(
        tags::SOP_INSTANCE_UID,
        L::Image,
        "i.sop_instance_uid",
        M::Uid,
    ),
    attr(tags::SOP_CLASS_UID, L::Image, "i.sop_class_uid", M::Uid),
    attr(
        tags::INSTANCE_NUMBER,
        L::Image,
        "i.instance_number",
        M::Integer,
    ),
    attr(tags::ROWS, L::Image, "i.rows", M::Integer),
    attr(tags::COLUMNS, L::Image, "i.columns", M::Integer),
    attr(
        tags::NUMBER_OF_FRAMES,
        L::Image,
        "i.number_of_frames",
        M::Integer,
    ),
    attr(
        tags::AVAILABLE_TRANSFER_SYNTAX_UID,
        L::Image,
        "i.transfer_syntax_uid",
        M::Uid,
    ),
];

/// Looks up an indexed attribute by tag.
pub fn indexed_attribute(tag: Tag) -> Option<&'static IndexedAttribute> {
    INDEXED_ATTRIBUTES.iter().find(|a| a.tag == tag)
}

/// A query: the level, the matching keys with their values, paging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeQuery {
    /// Level of the returned entities.
    pub level: QueryLevel,
    /// Matching keys (tag, value as text). Empty values mean universal matching.
    pub conditions: Vec<(Tag, String)>,
    /// Most rows to return.
    pub limit: Option<u64>,
    /// Rows to skip.
    pub offset: u64,
    /// Person names match word by word, whatever the accents and case (QIDO-RS
    /// `fuzzymatching=true`, C-FIND with `dimse.fuzzy_person_names`): for Patient's Name each
    /// word of the value begins a word of the name (`van an` finds `Nguyễn^Văn An`, and
    /// `nguyen` finds `TRAN^NGUYEN`); for other PN keys a component or word begins with the value.
    pub fuzzy_person_names: bool,
}

/// One matching entity: the indexed attributes at its level and above, as text (empty when the
/// index holds no value), plus the DICOM JSON metadata for instances.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryMatch {
    /// Attribute values by tag.
    pub values: HashMap<Tag, String>,
    /// DICOM JSON metadata, at IMAGE level only.
    pub metadata_json: Option<String>,
}

/// Why a query cannot run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A value does not fit its attribute's matching rules.
    #[error("invalid matching value {value:?} for ({group:04X},{element:04X}): {reason}")]
    InvalidValue {
        /// Tag group.
        group: u16,
        /// Tag element.
        element: u16,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl From<super::db::DbError> for QueryError {
    fn from(e: super::db::DbError) -> Self {
        QueryError::Index(IndexError::Database(e))
    }
}

/// A condition that `column` matches `pattern`, whose `*` and `?` are DICOM's wildcards (PS3.4
/// C.2.2.2.4) and every other character literal, case-sensitively: SQLite's GLOB, PostgreSQL's
/// LIKE (SQLite's LIKE ignores case).
pub(super) fn wildcard_condition(
    engine: Engine,
    column: &str,
    pattern: &str,
) -> (String, SqlValue) {
    match engine {
        Engine::Sqlite => (
            format!("{column} GLOB ?"),
            SqlValue::Text(glob_pattern(pattern)),
        ),
        Engine::Postgres => (
            format!("{column} LIKE ? ESCAPE '\\'"),
            SqlValue::Text(like_pattern(pattern)),
        ),
    }
}

/// Turns DICOM wildcards into a LIKE pattern with `\` as its escape.
fn like_pattern(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            other => out.push(other),
        }
    }
    out
}

/// Turns DICOM wildcards into a SQLite GLOB pattern (`[` and `]` are literal in DICOM).
fn glob_pattern(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '[' => out.push_str("[[]"),
            ']' => out.push_str("[]]"),
            other => out.push(other),
        }
    }
    out
}

/// The parameters of an `IN (…)` list of `n` values; `NULL` for none, which matches nothing
/// (`IN ()` is SQLite's alone).
fn in_list(n: usize) -> String {
    if n == 0 {
        "NULL".into()
    } else {
        vec!["?"; n].join(", ")
    }
}

fn has_wildcard(v: &str) -> bool {
    v.contains('*') || v.contains('?')
}

struct WhereClause {
    sql: Vec<String>,
    params: Vec<SqlValue>,
}

impl WhereClause {
    /// Narrows the clause to what `v` shows at `level` (see `visibility.rs`).
    fn restrict_to(&mut self, v: &Visibility, level: QueryLevel) {
        let condition = match level {
            QueryLevel::Patient => patient_condition(v),
            QueryLevel::Study | QueryLevel::Series => study_condition(v, "st.id", None),
            QueryLevel::Image => study_condition(v, "st.id", Some("i.facility")),
        };
        if let Some(c) = condition {
            self.push(c.sql, c.params);
        }
    }

    /// Makes the conditions pushed since (`sql_from`, `params_from`), all on patient columns,
    /// also match a provisional patient linked to a patient they match (issue #9 item 8):
    /// linked patients answer queries together.
    fn or_through_patient_links(&mut self, sql_from: usize, params_from: usize) {
        if self.sql.len() == sql_from {
            return;
        }
        let own = self.sql.split_off(sql_from).join(" AND ");
        let params = self.params.split_off(params_from);
        // One uncorrelated row-id set, evaluated once with the patient indexes, the patients
        // then looked up by row id (a correlated EXISTS would scan every patient). One set, not
        // two joined by OR: PostgreSQL turns `IN (…) OR IN (…)` into a filter over every study
        // (29 ms at a million instances against 0.09 ms, benches/index_scale.sh).
        let (matched, linked) = (
            with_patient_alias(&own, "mp"),
            with_patient_alias(&own, "lp"),
        );
        self.sql.push(format!(
            "p.id IN (SELECT mp.id FROM patients mp WHERE {matched} \
             UNION SELECT l.provisional_fk FROM patient_links l \
             JOIN patients lp ON lp.id = l.patient_fk WHERE l.unlinked_at IS NULL AND {linked})"
        ));
        self.params.extend(params.iter().cloned());
        self.params.extend(params);
    }

    fn push(&mut self, sql: String, params: impl IntoIterator<Item = SqlValue>) {
        self.sql.push(sql);
        self.params.extend(params);
    }
}

fn build_where(query: &AttributeQuery, conn: &Connection) -> Result<WhereClause, QueryError> {
    let engine = conn.engine();
    let mut w = WhereClause {
        sql: Vec::new(),
        params: Vec::new(),
    };
    for (tag, raw) in &query.conditions {
        let value = raw.trim_matches(['\0', ' ']);
        // Universal matching: an empty value or a lone '*' matches everything.
        if value.is_empty() || value == "*" {
            continue;
        }
        let Some(a) = indexed_attribute(*tag) else {
            // Keys the index does not hold cannot restrict the result (PS3.4 C.2.2.1.2 allows an SCP
            // to match on a subset); they are still returned, empty.
            continue;
        };
        if a.level > query.level {
            continue;
        }
        let invalid = |reason| QueryError::InvalidValue {
            group: tag.group(),
            element: tag.element(),
            value: value.to_string(),
            reason,
        };
        let (sql_before, params_before) = (w.sql.len(), w.params.len());
        match a.matching {
            M::ReturnOnly => {}
            M::Uid => {
                // QIDO-RS writes a UID list with commas (PS3.18 8.3.4.1), C-FIND with
                // backslashes; a UID holds neither, so both separate.
                let uids: Vec<&str> = value
                    .split(['\\', ','])
                    .map(|u| u.trim())
                    .filter(|u| !u.is_empty())
                    .collect();
                if uids.iter().any(|u| has_wildcard(u)) {
                    return Err(invalid(
                        "UIDs cannot be matched with wildcards (PS3.4 C.2.2.2.2)",
                    ));
                }
                let marks = in_list(uids.len());
                w.push(
                    format!("{} IN ({marks})", a.column),
                    uids.into_iter().map(|u| SqlValue::Text(u.to_string())),
                );
            }
            M::Text => {
                if has_wildcard(value) {
                    let (sql, pattern) = wildcard_condition(engine, a.column, value);
                    w.push(sql, [pattern]);
                } else {
                    w.push(
                        format!("{} = ?", a.column),
                        [SqlValue::Text(value.to_string())],
                    );
                }
            }
            M::PersonName(_) if query.fuzzy_person_names && *tag == tags::PATIENT_NAME => {
                if query_words(value).len() > MAX_QUERY_WORDS {
                    return Err(invalid("a person name is matched by at most 16 words"));
                }
                let Some((select, params)) = super::names::name_words_select(conn, value)? else {
                    continue;
                };
                if has_wildcard(value) {
                    // A wildcard may span words (`DOE*N`): the standard's match still counts.
                    let (standard, pattern) = wildcard_condition(
                        engine,
                        "p.patient_name_norm",
                        &normalise_person_name(value),
                    );
                    w.push(
                        format!("({standard} OR p.id IN ({select}))"),
                        std::iter::once(pattern).chain(params),
                    );
                } else {
                    // Provisional patients linked to a match answer too, as
                    // `or_through_patient_links` makes them, but straight from the word index:
                    // its general form would look each matching patient up again first.
                    w.push(
                        format!(
                            "p.id IN ({select} UNION SELECT l.provisional_fk FROM patient_links l \
                             WHERE l.unlinked_at IS NULL AND l.patient_fk IN ({select}))"
                        ),
                        params.iter().cloned().chain(params.clone()),
                    );
                    continue;
                }
            }
            M::PersonName(norm_column) if query.fuzzy_person_names && !has_wildcard(value) => {
                // A component, or a word within one, starting with the value.
                let v = normalise_person_name(value);
                let (first, p1) = wildcard_condition(engine, norm_column, &format!("{v}*"));
                let (second, p2) = wildcard_condition(engine, norm_column, &format!("*^{v}*"));
                let (third, p3) = wildcard_condition(engine, norm_column, &format!("* {v}*"));
                w.push(format!("({first} OR {second} OR {third})"), [p1, p2, p3]);
            }
            M::PersonName(norm_column) => {
                let v = normalise_person_name(value);
                if has_wildcard(&v) {
                    let (sql, pattern) = wildcard_condition(engine, norm_column, &v);
                    w.push(sql, [pattern]);
                } else {
                    w.push(format!("{norm_column} = ?"), [SqlValue::Text(v)]);
                }
            }
            M::Date | M::Time => {
                let is_date = a.matching == M::Date;
                let valid_char =
                    |c: char| c.is_ascii_digit() || (!is_date && (c == ':' || c == '.'));
                let (lo, hi) = match value.split_once('-') {
                    Some((lo, hi)) => (lo.trim(), hi.trim()),
                    None => (value, value),
                };
                if !lo.chars().all(valid_char)
                    || !hi.chars().all(valid_char)
                    || (lo.is_empty() && hi.is_empty())
                {
                    return Err(invalid(if is_date {
                        "dates are YYYYMMDD, optionally as a range a-b, -b or a-"
                    } else {
                        "times are HHMMSS.FFFFFF, optionally as a range a-b, -b or a-"
                    }));
                }
                let lo = lo.replace(':', "");
                let hi = hi.replace(':', "");
                if value.contains('-') {
                    w.push(format!("{} <> ''", a.column), []);
                    if !lo.is_empty() {
                        w.push(format!("{} >= ?", a.column), [SqlValue::Text(lo)]);
                    }
                    if !hi.is_empty() {
                        // Compare at the precision given: "-1200" includes 12:00:30.
                        w.push(
                            format!("substr({}, 1, ?) <= ?", a.column),
                            [SqlValue::Integer(hi.len() as i64), SqlValue::Text(hi)],
                        );
                    }
                } else if is_date {
                    w.push(format!("{} = ?", a.column), [SqlValue::Text(lo)]);
                } else {
                    w.push(
                        format!("substr({}, 1, ?) = ?", a.column),
                        [SqlValue::Integer(lo.len() as i64), SqlValue::Text(lo)],
                    );
                }
            }
            M::Integer => {
                let n: i64 = value.parse().map_err(|_| invalid("expected an integer"))?;
                w.push(format!("{} = ?", a.column), [SqlValue::Integer(n)]);
            }
            M::Modalities => {
                let mods: Vec<String> = value
                    .split('\\')
                    .map(|m| m.trim().to_string())
                    .filter(|m| !m.is_empty())
                    .collect();
                let marks = in_list(mods.len());
                // `ms.modality || ''`: an expression, so no engine walks the modality index
                // (every series of that modality, for each study: 1.5 s on SQLite at a million
                // instances) instead of the study's few series (0.4 ms, benches/index_scale.sh).
                w.push(
                    format!(
                        "EXISTS (SELECT 1 FROM series ms WHERE ms.study_fk = st.id \
                         AND ms.modality || '' IN ({marks}))"
                    ),
                    mods.into_iter().map(SqlValue::Text),
                );
            }
        }
        if a.level == L::Patient {
            w.or_through_patient_links(sql_before, params_before);
        }
    }
    Ok(w)
}

/// `sql` with the patient table's alias `p.` renamed to `alias.` (other aliases untouched).
fn with_patient_alias(sql: &str, alias: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut prev: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let starts_alias = c == 'p'
            && chars.peek() == Some(&'.')
            && !prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == '_');
        if starts_alias {
            out.push_str(alias);
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    out
}

/// The conditions of a search (C-FIND, QIDO-RS): those of `query`, and at the instance level
/// no instance whose object failed verification (`store::damage`): it cannot be retrieved, so
/// it is not offered. Retrieval by UID still finds it, to say why it cannot be served.
fn search_where(
    query: &AttributeQuery,
    v: &Visibility,
    conn: &Connection,
) -> Result<WhereClause, QueryError> {
    let mut w = build_where(query, conn)?;
    w.restrict_to(v, query.level);
    if query.level == QueryLevel::Image {
        w.push(
            "NOT EXISTS (SELECT 1 FROM instance_damage d WHERE d.sop_instance_uid = i.sop_instance_uid)".into(),
            [],
        );
    }
    Ok(w)
}

fn paging(query: &AttributeQuery) -> String {
    match query.limit {
        Some(limit) => format!(" LIMIT {limit} OFFSET {}", query.offset),
        None if query.offset > 0 => format!(" LIMIT -1 OFFSET {}", query.offset),
        None => String::new(),
    }
}

/// Runs `query` and returns the matching entities with every indexed attribute of their level
/// and the levels above.
fn find(
    conn: &Connection,
    query: &AttributeQuery,
    v: &Visibility,
) -> Result<Vec<QueryMatch>, QueryError> {
    let mut out = Vec::new();
    for_each_match(conn, query, v, |m| {
        out.push(m);
        Ok::<_, QueryError>(())
    })?;
    Ok(out)
}

/// Runs `query` and hands each matching entity to `f` as it is read, so a large result is never
/// held whole; stops at the first error `f` returns.
fn for_each_match<E: From<QueryError>>(
    conn: &Connection,
    query: &AttributeQuery,
    v: &Visibility,
    mut f: impl FnMut(QueryMatch) -> Result<(), E>,
) -> Result<(), E> {
    let w = search_where(query, v, conn)?;
    let columns: Vec<&IndexedAttribute> = INDEXED_ATTRIBUTES
        .iter()
        .filter(|a| a.level <= query.level)
        .collect();
    let mut select: Vec<String> = columns.iter().map(|a| a.column.to_string()).collect();
    if query.level == QueryLevel::Image {
        select.push("i.metadata_json".into());
    }
    let sql = format!(
        "SELECT {} FROM {}{}{} ORDER BY {}{}",
        select.join(", "),
        query.level.tables(),
        if w.sql.is_empty() { "" } else { " WHERE " },
        w.sql.join(" AND "),
        query.level.order_clause(),
        paging(query),
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(QueryError::from)?;
    // The caller's error stops the reading and is returned as it is.
    let stopped = stmt
        .for_each(super::db::params_from_iter(w.params.iter()), |r| {
            Ok(match f(query_match(r, &columns, query.level)?) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(e),
            })
        })
        .map_err(|e| E::from(QueryError::from(e)))?;
    stopped.map_or(Ok(()), Err)
}

fn query_match(
    r: &super::db::Row<'_>,
    columns: &[&IndexedAttribute],
    level: QueryLevel,
) -> super::db::Result<QueryMatch> {
    let mut m = QueryMatch::default();
    for (i, a) in columns.iter().enumerate() {
        let v: SqlValue = r.get(i)?;
        let text = match v {
            SqlValue::Null => String::new(),
            SqlValue::Integer(n) => n.to_string(),
            SqlValue::Real(f) => f.to_string(),
            SqlValue::Text(s) => s,
            SqlValue::Blob(_) => String::new(),
        };
        m.values.insert(a.tag, text);
    }
    if level == QueryLevel::Image {
        m.metadata_json = r.get(columns.len())?;
    }
    Ok(m)
}

/// Whether `query` matches more than `n` entities after its offset (its own limit ignored):
/// one index probe, for the "more results exist" warning of a capped response.
fn matches_more_than(
    conn: &Connection,
    query: &AttributeQuery,
    v: &Visibility,
    n: u64,
) -> Result<bool, QueryError> {
    let w = search_where(query, v, conn)?;
    let sql = format!(
        "SELECT 1 FROM {}{}{} LIMIT 1 OFFSET {}",
        query.level.tables(),
        if w.sql.is_empty() { "" } else { " WHERE " },
        w.sql.join(" AND "),
        query.offset.saturating_add(n),
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.exists(super::db::params_from_iter(w.params.iter()))?)
}

/// The filed instances under the entities `query` matches (for C-GET, C-MOVE and WADO).
fn instances(
    conn: &Connection,
    query: &AttributeQuery,
    v: &Visibility,
) -> Result<Vec<StoredInstance>, QueryError> {
    let image_query = AttributeQuery {
        level: QueryLevel::Image,
        ..query.clone()
    };
    let mut w = build_where(&image_query, conn)?;
    w.restrict_to(v, QueryLevel::Image);
    let sql = format!(
        "{STORED_INSTANCE_SELECT} JOIN patients p ON st.patient_fk = p.id{}{} ORDER BY {}{}",
        if w.sql.is_empty() { "" } else { " WHERE " },
        w.sql.join(" AND "),
        QueryLevel::Image.order_clause(),
        paging(query)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        super::db::params_from_iter(w.params.iter()),
        stored_instance_from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An instance's UIDs and its stored DICOM JSON metadata.
#[derive(Debug, Clone)]
pub struct InstanceMetadata {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// DICOM JSON, with bulk data as placeholder BulkDataURIs.
    pub json: String,
}

/// The stored DICOM JSON metadata of the instances `query` matches, in instance order.
fn metadata(
    conn: &Connection,
    query: &AttributeQuery,
    v: &Visibility,
) -> Result<Vec<InstanceMetadata>, QueryError> {
    let image_query = AttributeQuery {
        level: QueryLevel::Image,
        ..query.clone()
    };
    let mut w = build_where(&image_query, conn)?;
    w.restrict_to(v, QueryLevel::Image);
    let sql = format!(
        "SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, i.metadata_json \
         FROM {}{}{} ORDER BY {}{}",
        QueryLevel::Image.tables(),
        if w.sql.is_empty() { "" } else { " WHERE " },
        w.sql.join(" AND "),
        QueryLevel::Image.order_clause(),
        paging(query)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(super::db::params_from_iter(w.params.iter()), |r| {
        Ok(InstanceMetadata {
            study_instance_uid: r.get(0)?,
            series_instance_uid: r.get(1)?,
            sop_instance_uid: r.get(2)?,
            json: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection for the clauses' engine (no query here reads a table).
    fn sqlite() -> Connection {
        Connection::sqlite(rusqlite::Connection::open_in_memory().unwrap())
    }

    fn q(conditions: Vec<(Tag, &str)>) -> AttributeQuery {
        AttributeQuery {
            level: QueryLevel::Study,
            conditions: conditions
                .into_iter()
                .map(|(t, v)| (t, v.to_string()))
                .collect(),
            limit: None,
            offset: 0,
            fuzzy_person_names: false,
        }
    }

    #[test]
    fn the_patient_alias_is_renamed_and_no_other() {
        assert_eq!(
            with_patient_alias("p.patient_id = ? AND sp.x = p.sex AND (p.birth_date)", "lp"),
            "lp.patient_id = ? AND sp.x = lp.sex AND (lp.birth_date)"
        );
    }

    #[test]
    fn patient_conditions_also_match_through_links() {
        let w = build_where(&q(vec![(tags::PATIENT_ID, "123")]), &sqlite()).unwrap();
        assert_eq!(w.sql.len(), 1);
        assert!(w.sql[0].contains("patient_links"), "{}", w.sql[0]);
        assert_eq!(w.params.len(), 2);
    }

    #[test]
    fn wildcards_become_glob_with_literal_brackets() {
        assert_eq!(glob_pattern("DOE^[J]*"), "DOE^[[]J[]]*");
    }

    #[test]
    fn wildcards_become_like_with_literal_percent_and_underscore() {
        assert_eq!(like_pattern("DOE_^50%*?"), "DOE\\_^50\\%%_");
    }

    #[test]
    fn date_range_uses_precision_of_bound() {
        let w = build_where(&q(vec![(tags::STUDY_DATE, "20200101-20201231")]), &sqlite()).unwrap();
        assert_eq!(w.sql.len(), 3);
    }

    #[test]
    fn bad_date_is_refused() {
        assert!(build_where(&q(vec![(tags::STUDY_DATE, "yesterday")]), &sqlite()).is_err());
    }

    #[test]
    fn uid_with_wildcard_is_refused() {
        assert!(build_where(&q(vec![(tags::STUDY_INSTANCE_UID, "1.2.*")]), &sqlite()).is_err());
    }

    #[test]
    fn universal_matching_adds_no_condition() {
        let w = build_where(
            &q(vec![(tags::PATIENT_NAME, ""), (tags::PATIENT_ID, "*")]),
            &sqlite(),
        )
        .unwrap();
        assert!(w.sql.is_empty());
    }

    #[test]
    fn a_uid_list_is_separated_by_backslashes_or_commas() {
        for list in ["1.2.3\\1.2.4", "1.2.3,1.2.4"] {
            let w = build_where(&q(vec![(tags::STUDY_INSTANCE_UID, list)]), &sqlite()).unwrap();
            assert_eq!(w.params.len(), 2, "{list}");
        }
    }
}
