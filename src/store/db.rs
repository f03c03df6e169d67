//! One connection to the index database, on either engine: embedded SQLite (the default) or
//! PostgreSQL (`TRAMY_INDEX_URL=postgres://…`, for several nodes on one index).
//!
//! The store's modules write their SQL once, in the subset both engines share, with SQLite's
//! numbered (`?1`) or bare (`?`) parameters; on PostgreSQL they are rewritten to `$n` here. The
//! few constructs without a common spelling ask [`Connection::engine`] (`string_agg`, `GLOB`).
//!
//! The API follows rusqlite's names (`query_row`, `prepare_cached`, `query_map`, `optional`) so
//! that a query reads the same whichever engine runs it. Rows come back as [`Value`]s: SQLite's
//! five storage classes, to which PostgreSQL's column types are mapped (integers and booleans to
//! `Integer`, `numeric` to `Integer` or `Real`, text, `bytea`).
//!
//! Written here rather than taken from `sqlx`'s `Any` driver because the index runs on blocking
//! threads with one writer doing group commits (see `index.rs`), which an async pool does not
//! fit, and because `Any` neither rewrites parameters nor maps types.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::ops::ControlFlow;

use postgres::types::{FromSql, IsNull, ToSql, Type};

/// Which engine a connection runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite (WAL), one file in the data folder.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Errors from the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    /// A query expected to return a row returned none.
    #[error("the query returned no rows")]
    NoRows,
    /// A column holds a value of another type than the caller reads.
    #[error("column {column}: cannot read {found} as {wanted}")]
    Type {
        /// Column index.
        column: usize,
        /// What the column held.
        found: &'static str,
        /// What the caller asked for.
        wanted: &'static str,
    },
    /// A column's value failed the caller's own conversion (an enum's text form).
    #[error("column {column}: {source}")]
    Conversion {
        /// Column index.
        column: usize,
        /// Why.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// No column with this index or name.
    #[error("no column {0}")]
    NoColumn(String),
    /// Something the store itself found wrong (an invariant of its rows).
    #[error("{0}")]
    Invalid(String),
}

impl DbError {
    /// A unique or primary-key constraint refused the write (another writer got there first).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            DbError::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }

    /// The engine gave up on a write to break a deadlock or a serialization conflict with
    /// another node's writer: trying again succeeds.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Postgres(e) => matches!(
                e.code(),
                Some(c) if *c == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                    || *c == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
            ),
            _ => false,
        }
    }
}

/// Results of the database layer.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// A value as the index stores it (SQLite's storage classes).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (also booleans, as 0 and 1).
    Integer(i64),
    /// A double.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

/// What can be bound as a parameter.
pub trait ToValue {
    /// The value bound.
    fn to_value(&self) -> Value;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for f32 {
    fn to_value(&self) -> Value {
        Value::Real(f64::from(*self))
    }
}
macro_rules! integer_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Integer(*self as i64)
            }
        }
    )*};
}
integer_to_value!(i64, i32, i16, i8, u32, u16, u8, usize, u64);

/// What a column can be read as.
pub trait FromValue: Sized {
    /// Reads `value` from column `column`.
    fn from_value(value: &Value, column: usize) -> Result<Self>;
}

fn wrong_type<T>(value: &Value, column: usize, wanted: &'static str) -> Result<T> {
    Err(DbError::Type {
        column,
        found: value.kind(),
        wanted,
    })
}

impl FromValue for Value {
    fn from_value(value: &Value, _: usize) -> Result<Self> {
        Ok(value.clone())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v, column).map(Some),
        }
    }
}
impl FromValue for String {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            v => wrong_type(v, column, "text"),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            v => wrong_type(v, column, "blob"),
        }
    }
}
impl FromValue for f64 {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        match value {
            Value::Real(r) => Ok(*r),
            Value::Integer(i) => Ok(*i as f64),
            v => wrong_type(v, column, "real"),
        }
    }
}
impl FromValue for f32 {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        f64::from_value(value, column).map(|r| r as f32)
    }
}
impl FromValue for bool {
    fn from_value(value: &Value, column: usize) -> Result<Self> {
        match value {
            Value::Integer(i) => Ok(*i != 0),
            v => wrong_type(v, column, "boolean"),
        }
    }
}
macro_rules! integer_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value, column: usize) -> Result<Self> {
                match value {
                    Value::Integer(i) => <$t>::try_from(*i).map_err(|e| DbError::Conversion {
                        column,
                        source: e.into(),
                    }),
                    v => wrong_type(v, column, stringify!($t)),
                }
            }
        }
    )*};
}
integer_from_value!(i64, i32, i16, u32, u16, u8, usize, u64);

/// Parameters of a statement, in order.
pub trait Params {
    /// The values bound.
    fn into_values(self) -> Vec<Value>;
}

impl Params for [&dyn ToValue; 0] {
    fn into_values(self) -> Vec<Value> {
        Vec::new()
    }
}
impl Params for &[&dyn ToValue] {
    fn into_values(self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}
impl Params for Vec<Value> {
    fn into_values(self) -> Vec<Value> {
        self
    }
}
macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToValue> Params for [T; $n] {
            fn into_values(self) -> Vec<Value> {
                self.iter().map(ToValue::to_value).collect()
            }
        }
        impl<T: ToValue> Params for &[T; $n] {
            fn into_values(self) -> Vec<Value> {
                self.iter().map(ToValue::to_value).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);

/// Parameters from an iterator (a query built at run time).
pub struct ParamsFromIter<I>(I);

/// The parameters `iter` yields, in order.
pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToValue,
{
    ParamsFromIter(iter)
}

impl<I> Params for ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToValue,
{
    fn into_values(self) -> Vec<Value> {
        self.0.into_iter().map(|v| v.to_value()).collect()
    }
}

/// `params![a, b, c]`: parameters of different types, in order.
macro_rules! params {
    () => { [] as [&dyn $crate::store::db::ToValue; 0] };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::db::ToValue),+] as &[&dyn $crate::store::db::ToValue]
    };
}
pub(crate) use params;

/// One row of a result.
pub struct Row<'a> {
    values: &'a [Value],
    names: &'a [String],
}

/// How a column is named: by index or by name.
pub trait RowIndex {
    /// The column's index in `names`.
    fn index(&self, names: &[String]) -> Result<usize>;
}
impl RowIndex for usize {
    fn index(&self, names: &[String]) -> Result<usize> {
        if *self < names.len() {
            Ok(*self)
        } else {
            Err(DbError::NoColumn(self.to_string()))
        }
    }
}
impl RowIndex for &str {
    fn index(&self, names: &[String]) -> Result<usize> {
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(self))
            .ok_or_else(|| DbError::NoColumn((*self).to_owned()))
    }
}

impl Row<'_> {
    /// The value of column `idx` as `T`.
    pub fn get<I: RowIndex, T: FromValue>(&self, idx: I) -> Result<T> {
        let i = idx.index(self.names)?;
        T::from_value(&self.values[i], i)
    }
}

/// `.optional()` on a single-row result: no row is `None`, not an error.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for [`DbError::NoRows`].
    fn optional(self) -> Result<Option<T>>;
}
impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

struct PgConn {
    client: PgClient,
    statements: HashMap<String, postgres::Statement>,
}

/// A PostgreSQL client that may be dropped anywhere: the client owns a runtime of its own,
/// which tokio refuses to shut down on a thread driving async tasks (a reader connection let
/// go of by a request handler, the index dropped at shutdown); there it is dropped on a thread
/// of its own.
struct PgClient(Option<postgres::Client>);

impl std::ops::Deref for PgClient {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.0.as_ref().expect("a client until dropped")
    }
}

impl std::ops::DerefMut for PgClient {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.0.as_mut().expect("a client until dropped")
    }
}

impl Drop for PgClient {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::spawn(move || drop(client));
            }
        }
    }
}

enum Inner {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<PgConn>>),
}

/// A connection to the index database.
pub struct Connection {
    inner: Inner,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({:?})", self.engine())
    }
}

impl Connection {
    /// A SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Connection {
        Connection {
            inner: Inner::Sqlite(conn),
        }
    }

    /// A PostgreSQL connection.
    pub fn postgres(client: postgres::Client) -> Connection {
        Connection {
            inner: Inner::Postgres(Box::new(RefCell::new(PgConn {
                client: PgClient(Some(client)),
                statements: HashMap::new(),
            }))),
        }
    }

    /// The engine it runs on.
    pub fn engine(&self) -> Engine {
        match self.inner {
            Inner::Sqlite(_) => Engine::Sqlite,
            Inner::Postgres(_) => Engine::Postgres,
        }
    }

    /// Whether the server ended the connection (PostgreSQL restarted, the network failed).
    pub fn is_closed(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(_) => false,
            Inner::Postgres(pg) => pg
                .try_borrow()
                .map(|pg| pg.client.is_closed())
                .unwrap_or(false),
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, its migrations).
    pub fn as_sqlite(&mut self) -> Option<&mut rusqlite::Connection> {
        match &mut self.inner {
            Inner::Sqlite(c) => Some(c),
            Inner::Postgres(_) => None,
        }
    }

    /// Runs `sql` (one or more statements, no parameters).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(pg) => Ok(borrow(pg)?.client.batch_execute(sql)?),
        }
    }

    /// Runs one statement; returns the number of rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.run_execute(sql, params.into_values())
    }

    /// The first row of `sql`, read by `f`; [`DbError::NoRows`] when there is none.
    pub fn query_row<P, T, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        let (names, rows) = self.collect(sql, params.into_values(), Some(1))?;
        let first = rows.into_iter().next().ok_or(DbError::NoRows)?;
        f(&Row {
            values: &first,
            names: &names,
        })
    }

    /// Column names and the rows' values (at most `limit` rows), read whole before anyone looks
    /// at them: a row reader may then query the same connection (PostgreSQL runs one statement
    /// at a time on it; SQLite would allow it anyway).
    fn collect(
        &self,
        sql: &str,
        values: Vec<Value>,
        limit: Option<usize>,
    ) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
        let (mut names, mut rows) = (Vec::new(), Vec::new());
        self.stream(sql, values, |row| {
            if names.is_empty() {
                names = row.names.to_vec();
            }
            rows.push(row.values.to_vec());
            Ok(match limit {
                Some(l) if rows.len() >= l => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            })
        })?;
        Ok((names, rows))
    }

    /// A statement to run, parsed once per connection.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_owned(),
        })
    }

    /// A statement to run (also cached: every statement of the store is one of a few shapes).
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare_cached(sql)
    }

    fn run_execute(&self, sql: &str, values: Vec<Value>) -> Result<usize> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter().map(SqliteValue)))?)
            }
            Inner::Postgres(pg) => {
                let mut pg = borrow(pg)?;
                let stmt = pg.statement(sql)?;
                let refs = pg_params(&values);
                Ok(pg.client.execute(&stmt, &refs)? as usize)
            }
        }
    }

    /// Reads the rows of `sql` in order, each handed to `f` as it arrives (never the whole
    /// result held), until `f` breaks; returns what it broke with. `f` must not use this
    /// connection: one connection runs one statement at a time.
    fn stream<B>(
        &self,
        sql: &str,
        values: Vec<Value>,
        mut f: impl FnMut(&Row<'_>) -> Result<ControlFlow<B>>,
    ) -> Result<Option<B>> {
        let mut current = Vec::new();
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let names: Vec<String> =
                    stmt.column_names().iter().map(|n| n.to_string()).collect();
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(values.iter().map(SqliteValue)))?;
                while let Some(row) = rows.next()? {
                    current.clear();
                    for i in 0..names.len() {
                        current.push(from_sqlite(row.get_ref(i)?));
                    }
                    let row = Row {
                        values: &current,
                        names: &names,
                    };
                    if let ControlFlow::Break(b) = f(&row)? {
                        return Ok(Some(b));
                    }
                }
                Ok(None)
            }
            Inner::Postgres(pg) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut pg = borrow(pg)?;
                let stmt = pg.statement(sql)?;
                let names: Vec<String> =
                    stmt.columns().iter().map(|c| c.name().to_owned()).collect();
                let mut rows = pg.client.query_raw(&stmt, values.iter())?;
                while let Some(row) = rows.next()? {
                    current.clear();
                    for i in 0..row.len() {
                        current.push(row.try_get::<_, PgValue>(i)?.0);
                    }
                    let row = Row {
                        values: &current,
                        names: &names,
                    };
                    if let ControlFlow::Break(b) = f(&row)? {
                        return Ok(Some(b));
                    }
                }
                Ok(None)
            }
        }
    }
}

/// A statement of a connection.
pub struct Statement<'c> {
    conn: &'c Connection,
    sql: String,
}

impl Statement<'_> {
    /// Runs it; returns the number of rows changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        self.conn.run_execute(&self.sql, params.into_values())
    }

    /// Its first row, read by `f`.
    pub fn query_row<P, T, F>(&mut self, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        self.conn.query_row(&self.sql, params, f)
    }

    /// Every row, each read by `f`.
    pub fn query_map<P, T, F>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let (names, rows) = self.conn.collect(&self.sql, params.into_values(), None)?;
        let mapped: Vec<Result<T>> = rows
            .iter()
            .map(|values| {
                f(&Row {
                    values,
                    names: &names,
                })
            })
            .collect();
        Ok(mapped.into_iter())
    }

    /// Hands each row to `f` as it is read, never holding the whole result (searches, whose
    /// matches are not bounded; the audit chain), until `f` breaks; returns what it broke
    /// with. `f` must not use the same connection.
    pub fn for_each<P, B, F>(&mut self, params: P, f: F) -> Result<Option<B>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> Result<ControlFlow<B>>,
    {
        self.conn.stream(&self.sql, params.into_values(), f)
    }

    /// Whether it returns any row.
    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        let found = self.conn.stream(&self.sql, params.into_values(), |_| {
            Ok(ControlFlow::Break(()))
        })?;
        Ok(found.is_some())
    }
}

/// The PostgreSQL connection, or an error when a row callback (`for_each`) uses the connection
/// it is reading from: one connection runs one statement at a time.
fn borrow(pg: &RefCell<PgConn>) -> Result<std::cell::RefMut<'_, PgConn>> {
    pg.try_borrow_mut()
        .map_err(|_| DbError::Invalid("a query ran inside another's row callback".into()))
}

impl PgConn {
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(&postgres_sql(sql))?;
        // Queries built at run time (QIDO filters) come in many shapes: bound the cache.
        if self.statements.len() >= 512 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

/// `sql` with SQLite's parameters (`?NNN`, `?`) as PostgreSQL's `$n`, numbered as SQLite
/// numbers them: a bare `?` is one more than the largest number before it. String literals,
/// quoted names and comments are left alone.
pub fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut largest = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = digits.parse().unwrap_or(largest + 1);
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

struct SqliteValue<'a>(&'a Value);

impl rusqlite::ToSql for SqliteValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn pg_params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// Binds a value to whatever type PostgreSQL inferred for its parameter, as SQLite would take
/// it: integers into any integer, boolean, float or text column, text into text.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                _ => i.to_string().to_sql(&Type::TEXT, out),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                Type::FLOAT8 => r.to_sql(ty, out),
                _ => r.to_string().to_sql(&Type::TEXT, out),
            },
            Value::Text(s) => match *ty {
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                Type::INT4 => s.parse::<i32>()?.to_sql(ty, out),
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => s.as_str().to_sql(&Type::TEXT, out),
            },
            Value::Blob(b) => b.as_slice().to_sql(&Type::BYTEA, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A column read from PostgreSQL as a [`Value`].
struct PgValue(Value);

impl<'a> FromSql<'a> for PgValue {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(PgValue(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Integer(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Value::Blob(raw.to_vec()),
            _ => Value::Text(String::from_utf8(raw.to_vec())?),
        }))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(PgValue(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A `numeric` in PostgreSQL's binary form (what `SUM` of integers returns): an integer when it
/// has no fraction, else a double.
fn numeric(raw: &[u8]) -> std::result::Result<Value, Box<dyn StdError + Sync + Send>> {
    let word = |i: usize| -> std::result::Result<i16, Box<dyn StdError + Sync + Send>> {
        let b = raw.get(i * 2..i * 2 + 2).ok_or("short numeric")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let (ndigits, weight, sign, dscale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let mut value = 0f64;
    for i in 0..ndigits.max(0) as usize {
        let digit = f64::from(word(4 + i)?);
        value += digit * 10000f64.powi(i32::from(weight) - i as i32);
    }
    if sign == 0x4000 {
        value = -value;
    }
    if dscale == 0 && value.abs() < 9.0e15 {
        Ok(Value::Integer(value as i64))
    } else {
        Ok(Value::Real(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_as_sqlite_numbers_them() {
        assert_eq!(
            postgres_sql("SELECT a FROM t WHERE b = ?1 AND c = ?2 OR d = ?1"),
            "SELECT a FROM t WHERE b = $1 AND c = $2 OR d = $1"
        );
        assert_eq!(
            postgres_sql("WHERE a GLOB ? AND b = ? LIMIT ?"),
            "WHERE a GLOB $1 AND b = $2 LIMIT $3"
        );
        assert_eq!(
            postgres_sql("WHERE a = ?3 AND b = ?"),
            "WHERE a = $3 AND b = $4"
        );
    }

    #[test]
    fn question_marks_in_literals_and_comments_are_kept() {
        assert_eq!(
            postgres_sql("SELECT '?', \"a?\" -- what?\nFROM t WHERE x = ?"),
            "SELECT '?', \"a?\" -- what?\nFROM t WHERE x = $1"
        );
    }

    #[test]
    fn numeric_sums_read_as_integers() {
        // 12345678 = [1234, 5678], weight 1, positive, scale 0.
        let raw = [0, 2, 0, 1, 0, 0, 0, 0, 0x04, 0xD2, 0x16, 0x2E];
        assert_eq!(numeric(&raw).unwrap(), Value::Integer(12_345_678));
        assert_eq!(
            numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            Value::Integer(0)
        );
    }

    #[test]
    fn sqlite_rows_read_back_what_was_bound() {
        let conn = Connection::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        conn.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, c REAL, d BLOB)")
            .unwrap();
        let blob = vec![1u8, 2, 3];
        conn.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
            params![7i64, "x", 1.5f64, blob],
        )
        .unwrap();
        let (a, b, c, d): (i64, String, f64, Vec<u8>) = conn
            .query_row("SELECT a, b, c, d FROM t", [], |r| {
                Ok((r.get(0)?, r.get("b")?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!((a, b.as_str(), c, d), (7, "x", 1.5, vec![1, 2, 3]));
        let none = conn
            .query_row("SELECT a FROM t WHERE a = ?1", [8], |r| r.get::<_, i64>(0))
            .optional()
            .unwrap();
        assert_eq!(none, None);
    }
}
