//! JSON objects ⇄ rows, on either backend. Column names come from code, never from users,
//! but they are still checked, since they are spliced into SQL.

use crate::{ColumnType, StoreError};
use crate::{Db, Repr};
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use serde_json::{Map, Number, Value};
use sqlx::any::{AnyArguments, AnyRow, AnyTypeInfoKind};
use sqlx::query::Query;
use sqlx::{Any, Column, Row, TypeInfo};
use std::borrow::Cow;

pub(crate) fn check_ident(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::identifier(name))
    }
}

/// A value bound to a statement's parameter, whichever the backend.
#[derive(Debug)]
pub(crate) enum Param<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Text(Cow<'a, str>),
}

impl<'a> Param<'a> {
    /// The parameter for JSON `value` of `column`: numbers as integers when they fit,
    /// arrays and objects as their JSON text.
    pub(crate) fn of(column: &str, value: &'a Value) -> Result<Param<'a>, StoreError> {
        Ok(match value {
            Value::Null => Param::Null,
            Value::Bool(b) => Param::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Param::Int(i),
                (None, Some(f)) => Param::Real(f),
                _ => {
                    return Err(StoreError::from(Repr::Value {
                        column: column.to_owned(),
                        reason: format!("{n} does not fit a 64-bit integer"),
                    }))
                }
            },
            Value::String(s) => Param::Text(Cow::Borrowed(s)),
            other => Param::Text(Cow::Owned(other.to_string())),
        })
    }

    /// The parameter for `value` in `column` of type `ty` (if known), converted as SQLite's
    /// column affinity converts it, so that both backends store and compare it alike
    /// (PostgreSQL refuses `bigint = text`): a number's text in a numeric column is the
    /// number — a list filter from a query string, say — and a number in a TEXT column is
    /// its text.
    pub(crate) fn for_column(
        column: &str,
        value: &'a Value,
        ty: Option<ColumnType>,
    ) -> Result<Param<'a>, StoreError> {
        let param = Param::of(column, value)?;
        Ok(match (ty, param) {
            (Some(ColumnType::Integer), Param::Text(s)) => match s.parse::<i64>() {
                Ok(i) => Param::Int(i),
                Err(_) => Param::Text(s),
            },
            // Only what an integer holds exactly (2^63 as f64 is out of range).
            (Some(ColumnType::Integer), Param::Real(f))
                if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) =>
            {
                Param::Int(f as i64)
            }
            (Some(ColumnType::Real), Param::Text(s)) => match s.parse::<f64>() {
                Ok(f) if f.is_finite() => Param::Real(f),
                _ => Param::Text(s),
            },
            (Some(ColumnType::Text), Param::Int(i)) => Param::Text(i.to_string().into()),
            (Some(ColumnType::Text), Param::Real(f)) => Param::Text(f.to_string().into()),
            (_, param) => param,
        })
    }

    /// Whether no value of a column of type `ty` can equal it: text that is no number, in
    /// a numeric column. SQLite compares and finds nothing; PostgreSQL refuses to compare.
    pub(crate) fn never_equals(&self, ty: Option<ColumnType>) -> bool {
        matches!(
            (ty, self),
            (Some(ColumnType::Integer | ColumnType::Real), Param::Text(_))
        )
    }

    pub(crate) fn text(s: &'a str) -> Param<'a> {
        Param::Text(Cow::Borrowed(s))
    }

    /// Binds it to a sqlx query (PostgreSQL). NULL and booleans never get here: see
    /// [`postgres_statement`].
    pub(crate) fn bind<'q>(
        &self,
        query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        match self {
            Param::Null => query.bind(None::<String>),
            Param::Bool(b) => query.bind(i64::from(*b)),
            Param::Int(i) => query.bind(*i),
            Param::Real(f) => query.bind(*f),
            Param::Text(s) => query.bind(s.to_string()),
        }
    }

    /// The untyped SQL literal PostgreSQL is given instead of this parameter, if any.
    fn postgres_literal(&self) -> Option<&'static str> {
        match self {
            Param::Null => Some("NULL"),
            Param::Bool(true) => Some("'1'"),
            Param::Bool(false) => Some("'0'"),
            _ => None,
        }
    }
}

/// `sql` and `params` as PostgreSQL is sent them. sqlx's `Any` driver declares a type for
/// every parameter, and PostgreSQL refuses a declared type that does not fit: a NULL is
/// declared `text` (refused by a BIGINT column), a boolean `boolean` (refused by a BIGINT
/// one). So NULLs and booleans are written into the text as untyped literals (`NULL`,
/// `'1'`, `'0'`), which PostgreSQL types from where they stand, as SQLite takes any value
/// anywhere: NULL fits every column, and a boolean is 1/0 in a BIGINT column (as SQLite
/// stores it), true/false in a BOOLEAN one. The other parameters are renumbered in order.
///
/// The kinds of the bound parameters end the text as a comment: sqlx keeps one prepared
/// statement per text, with the parameter types of its first use, and would send a later
/// value of another type in that type's binary format. With the kinds in the text, each
/// combination is prepared, and type-checked by PostgreSQL, once.
pub(crate) fn postgres_statement<'p, 'a>(
    sql: &str,
    params: &'p [Param<'a>],
) -> (String, Vec<&'p Param<'a>>) {
    // The new number of each parameter that stays bound.
    let mut bound = Vec::with_capacity(params.len());
    let mut numbers = Vec::with_capacity(params.len());
    for param in params {
        if param.postgres_literal().is_some() {
            numbers.push(0);
        } else {
            bound.push(param);
            numbers.push(bound.len());
        }
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        match bytes[i] {
            // Literals, quoted identifiers and comments are copied whole: a `$1` in them
            // is not a parameter.
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |end| i + 2 + end + 2);
            }
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let n = sql[start + 1..i].parse::<usize>().unwrap_or(0);
                match n.checked_sub(1).and_then(|index| params.get(index)) {
                    Some(param) => match param.postgres_literal() {
                        Some(literal) => out.push_str(literal),
                        None => {
                            out.push('$');
                            out.push_str(&numbers[n - 1].to_string());
                        }
                    },
                    // Out of range: PostgreSQL says so.
                    None => out.push_str(&sql[start..i]),
                }
                continue;
            }
            // A dollar-quoted literal: `$$...$$` or `$tag$...$tag$`.
            b'$' => {
                let tag_end = sql[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map(|end| i + 1 + end);
                match tag_end.filter(|end| bytes[*end] == b'$') {
                    Some(end) => {
                        let tag = &sql[i..=end];
                        i = sql[end + 1..]
                            .find(tag)
                            .map_or(bytes.len(), |close| end + 1 + close + tag.len());
                    }
                    None => i += 1,
                }
            }
            _ => {
                // Up to the next byte that may start something above; always at a char
                // boundary, since those bytes are ASCII.
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'\'' | b'"' | b'-' | b'/' | b'$') {
                    i += 1;
                }
            }
        }
        out.push_str(&sql[start..i]);
    }
    if !bound.is_empty() {
        out.push_str(" /* ");
        out.extend(bound.iter().map(|param| match param {
            Param::Int(_) => 'i',
            Param::Real(_) => 'r',
            _ => 't',
        }));
        out.push_str(" */");
    }
    (out, bound)
}

/// Bound to a rusqlite statement (SQLite): booleans as 0/1, as sqlx stores them.
impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Param::Null => ValueRef::Null,
            Param::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Param::Int(i) => ValueRef::Integer(*i),
            Param::Real(f) => ValueRef::Real(*f),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

/// A sqlx row (PostgreSQL) as a JSON object: integers, reals, text and nulls as such, and
/// booleans as 1/0, as SQLite gives them back.
pub(crate) fn to_json(row: &AnyRow) -> Result<Map<String, Value>, StoreError> {
    let mut out = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let value = match column.type_info().kind() {
            AnyTypeInfoKind::Null => Value::Null,
            AnyTypeInfoKind::Bool => row
                .try_get::<Option<bool>, _>(i)
                .db()?
                .map_or(Value::Null, |b| Value::Number(i64::from(b).into())),
            AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => row
                .try_get::<Option<i64>, _>(i)
                .db()?
                .map_or(Value::Null, |n| Value::Number(n.into())),
            // PostgreSQL's REAL is 4 bytes (SQLite's 8, as DOUBLE PRECISION is).
            AnyTypeInfoKind::Real => row
                .try_get::<Option<f32>, _>(i)
                .db()?
                .and_then(|f| Number::from_f64(f64::from(f)))
                .map_or(Value::Null, Value::Number),
            AnyTypeInfoKind::Double => row
                .try_get::<Option<f64>, _>(i)
                .db()?
                .and_then(Number::from_f64)
                .map_or(Value::Null, Value::Number),
            AnyTypeInfoKind::Text => row
                .try_get::<Option<String>, _>(i)
                .db()?
                .map_or(Value::Null, Value::String),
            AnyTypeInfoKind::Blob => {
                return Err(StoreError::from(Repr::Value {
                    column: column.name().to_owned(),
                    reason: format!(
                        "{} columns are not mapped to JSON",
                        column.type_info().name()
                    ),
                }))
            }
        };
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
}

/// A rusqlite row (SQLite) as a JSON object, by the storage class of each value, as sqlx
/// decodes SQLite's values.
pub(crate) fn sqlite_to_json(
    row: &rusqlite::Row<'_>,
    names: &[String],
) -> Result<Map<String, Value>, StoreError> {
    let mut out = Map::new();
    for (i, name) in names.iter().enumerate() {
        let value = match row.get_ref(i).db()? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Number(n.into()),
            ValueRef::Real(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) => Value::String(s.to_owned()),
                Err(e) => {
                    return Err(StoreError::from(Repr::Value {
                        column: name.clone(),
                        reason: format!("not UTF-8 text: {e}"),
                    }))
                }
            },
            ValueRef::Blob(_) => {
                return Err(StoreError::from(Repr::Value {
                    column: name.clone(),
                    reason: "BLOB columns are not mapped to JSON".into(),
                }))
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{postgres_statement, Param};

    fn statement(sql: &str, params: &[Param<'_>]) -> (String, Vec<String>) {
        let (sql, bound) = postgres_statement(sql, params);
        (sql, bound.iter().map(|p| format!("{p:?}")).collect())
    }

    #[test]
    fn nulls_and_booleans_become_untyped_literals_and_the_rest_is_renumbered() {
        let params = [
            Param::text("a"),
            Param::Null,
            Param::Bool(true),
            Param::Int(7),
            Param::Bool(false),
            Param::Real(1.5),
        ];
        let (sql, bound) = statement(
            "INSERT INTO t (a, b, c, d, e, f) VALUES ($1, $2, $3, $4, $5, $6) -- $2",
            &params,
        );
        assert_eq!(
            sql,
            "INSERT INTO t (a, b, c, d, e, f) VALUES ($1, NULL, '1', $2, '0', $3) -- $2 /* tir */"
        );
        assert_eq!(bound, ["Text(\"a\")", "Int(7)", "Real(1.5)"]);
    }

    #[test]
    fn placeholders_in_literals_identifiers_and_comments_stay_and_repeats_follow() {
        let params = [Param::Null, Param::Int(1)];
        let (sql, bound) = statement(
            "SELECT '$1', \"$1\", $$ $1 $$, $q$ $2 $q$ /* $2 */ FROM t WHERE a = $2 OR b = $1 OR c = $2 OR d = $3",
            &params,
        );
        assert_eq!(
            sql,
            "SELECT '$1', \"$1\", $$ $1 $$, $q$ $2 $q$ /* $2 */ FROM t WHERE a = $1 OR b = NULL OR c = $1 OR d = $3 /* i */"
        );
        assert_eq!(bound.len(), 1);
        // Nothing bound, no comment; text that is not ASCII goes through whole.
        let (sql, bound) = statement("SELECT 'é' || $1 - 2 / 1", &[Param::Null]);
        assert_eq!(sql, "SELECT 'é' || NULL - 2 / 1");
        assert!(bound.is_empty());
    }
}
