//! JSON objects ⇄ rows, on either backend. Column names come from code, never from users,
//! but they are still checked, since they are spliced into SQL.

use crate::StoreError;
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
        Err(StoreError::Identifier(name.to_owned()))
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
                    return Err(StoreError::Value {
                        column: column.to_owned(),
                        reason: format!("{n} does not fit a 64-bit integer"),
                    })
                }
            },
            Value::String(s) => Param::Text(Cow::Borrowed(s)),
            other => Param::Text(Cow::Owned(other.to_string())),
        })
    }

    pub(crate) fn text(s: &'a str) -> Param<'a> {
        Param::Text(Cow::Borrowed(s))
    }

    /// Binds it to a sqlx query (PostgreSQL).
    pub(crate) fn bind<'q>(
        &self,
        query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        match self {
            Param::Null => query.bind(None::<String>),
            Param::Bool(b) => query.bind(*b),
            Param::Int(i) => query.bind(*i),
            Param::Real(f) => query.bind(*f),
            Param::Text(s) => query.bind(s.to_string()),
        }
    }
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

/// A sqlx row (PostgreSQL) as a JSON object: integers, reals, text and nulls as such.
pub(crate) fn to_json(row: &AnyRow) -> Result<Map<String, Value>, StoreError> {
    let mut out = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let value = match column.type_info().kind() {
            AnyTypeInfoKind::Null => Value::Null,
            AnyTypeInfoKind::Bool => row
                .try_get::<Option<bool>, _>(i)?
                .map_or(Value::Null, Value::Bool),
            AnyTypeInfoKind::SmallInt | AnyTypeInfoKind::Integer | AnyTypeInfoKind::BigInt => row
                .try_get::<Option<i64>, _>(i)?
                .map_or(Value::Null, |n| Value::Number(n.into())),
            AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => row
                .try_get::<Option<f64>, _>(i)?
                .and_then(Number::from_f64)
                .map_or(Value::Null, Value::Number),
            AnyTypeInfoKind::Text => row
                .try_get::<Option<String>, _>(i)?
                .map_or(Value::Null, Value::String),
            AnyTypeInfoKind::Blob => {
                return Err(StoreError::Value {
                    column: column.name().to_owned(),
                    reason: format!(
                        "{} columns are not mapped to JSON",
                        column.type_info().name()
                    ),
                })
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
        let value = match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Number(n.into()),
            ValueRef::Real(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) => Value::String(s.to_owned()),
                Err(e) => {
                    return Err(StoreError::Value {
                        column: name.clone(),
                        reason: format!("not UTF-8 text: {e}"),
                    })
                }
            },
            ValueRef::Blob(_) => {
                return Err(StoreError::Value {
                    column: name.clone(),
                    reason: "BLOB columns are not mapped to JSON".into(),
                })
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}
