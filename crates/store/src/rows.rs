//! JSON objects ⇄ rows. Column names come from code, never from users, but they are
//! still checked, since they are spliced into SQL.

use crate::StoreError;
use serde_json::{Map, Number, Value};
use sqlx::any::{AnyArguments, AnyRow, AnyTypeInfoKind};
use sqlx::query::Query;
use sqlx::{Any, Column, Row, TypeInfo};

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

pub(crate) fn bind<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    column: &str,
    value: &Value,
) -> Result<Query<'q, Any, AnyArguments<'q>>, StoreError> {
    Ok(match value {
        Value::Null => query.bind(None::<String>),
        Value::Bool(b) => query.bind(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => query.bind(i),
            (None, Some(f)) => query.bind(f),
            _ => {
                return Err(StoreError::Value {
                    column: column.to_owned(),
                    reason: format!("{n} does not fit a 64-bit integer"),
                })
            }
        },
        Value::String(s) => query.bind(s.clone()),
        other => query.bind(other.to_string()),
    })
}

/// A row as a JSON object: integers, reals, text and nulls as such.
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
