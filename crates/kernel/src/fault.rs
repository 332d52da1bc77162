//! `Fault`: the one error vocabulary that crosses message, extension and flow boundaries.
//!
//! It is serialisable so a reply can carry it over any transport, and its `code` is what an
//! HTTP layer maps to a status. Start-up errors are a different type ([`crate::KernelError`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// What kind of failure a [`Fault`] is; transports map it (e.g. to an HTTP status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultCode {
    /// The input is malformed or invalid (names the field in `details.field`).
    InvalidArgument,
    /// The addressed resource or service does not exist.
    NotFound,
    /// The request conflicts with the current state.
    Conflict,
    /// An extension refused the operation (names plugin and point in `details`).
    Vetoed,
    /// The target is not ready or not reachable.
    Unavailable,
    /// The operation did not finish in time.
    Timeout,
    /// A bug: a panic, a broken invariant.
    Internal,
    /// No valid credential came with the request.
    Unauthenticated,
    /// The caller is known but may not do this.
    Forbidden,
    /// Too many requests of this kind (failed logins); try again later.
    TooManyRequests,
}

impl FaultCode {
    /// A refusal of the request as it stands (bad input, no such thing, a conflict with
    /// the current state, a veto), as opposed to something that went wrong.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            FaultCode::InvalidArgument
                | FaultCode::NotFound
                | FaultCode::Conflict
                | FaultCode::Vetoed
                | FaultCode::Unauthenticated
                | FaultCode::Forbidden
                | FaultCode::TooManyRequests
        )
    }

    /// A failure that may pass if the same thing is tried again (the target not ready or
    /// not reachable, the database busy), as opposed to a refusal or a bug: releases and
    /// undos retry these rather than leave something held.
    pub fn is_transient(self) -> bool {
        self == FaultCode::Unavailable
    }

    /// The stable snake_case spelling used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultCode::InvalidArgument => "invalid_argument",
            FaultCode::NotFound => "not_found",
            FaultCode::Conflict => "conflict",
            FaultCode::Vetoed => "vetoed",
            FaultCode::Unavailable => "unavailable",
            FaultCode::Timeout => "timeout",
            FaultCode::Internal => "internal",
            FaultCode::Unauthenticated => "unauthenticated",
            FaultCode::Forbidden => "forbidden",
            FaultCode::TooManyRequests => "too_many_requests",
        }
    }
}

/// An error that a message handler, an extension or a flow step returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub struct Fault {
    /// What kind of failure: an API client gets its HTTP status from it.
    pub code: FaultCode,
    /// One sentence for a person, shown to API clients: name the thing and the value,
    /// never SQL or file paths.
    pub message: String,
    /// Machine-readable facts, a JSON object or null: `field` for an invalid argument,
    /// `plugin` and `point` for a veto, `users` for a refused delete...
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl Fault {
    /// A fault of `code`, without details.
    pub fn new(code: FaultCode, message: impl Into<String>) -> Self {
        Fault {
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// Adds `key: value` to `details` (turning it into an object if needed).
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        if !self.details.is_object() {
            self.details = Value::Object(Default::default());
        }
        if let Value::Object(map) = &mut self.details {
            map.insert(key.to_owned(), value.into());
        }
        self
    }

    /// `invalid_argument` (400) about request field `field` (`details.field`), e.g.
    /// `Fault::invalid("cpu_num", "cpu_num must be from 1 to 1024")`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Fault::new(FaultCode::InvalidArgument, message).with_detail("field", field)
    }
    /// `not_found` (404): the addressed resource or service does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Fault::new(FaultCode::NotFound, message)
    }
    /// `unauthenticated` (401): no valid credential.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Fault::new(FaultCode::Unauthenticated, message)
    }

    /// `forbidden` (403): a known caller without the permission.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Fault::new(FaultCode::Forbidden, message)
    }

    /// `too_many_requests` (429): refused for a while (too many failed logins).
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Fault::new(FaultCode::TooManyRequests, message)
    }

    /// `conflict` (409): the request cannot be done in the current state (in use, taken,
    /// the wrong state).
    pub fn conflict(message: impl Into<String>) -> Self {
        Fault::new(FaultCode::Conflict, message)
    }
    /// `internal` (500): a bug or an unexpected failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Fault::new(FaultCode::Internal, message)
    }
    /// `timeout` (504): something did not finish in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Fault::new(FaultCode::Timeout, message)
    }
    /// `unavailable` (503): not ready or not reachable; trying again later may work
    /// ([`FaultCode::is_transient`]).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Fault::new(FaultCode::Unavailable, message)
    }

    /// The `details` entry `key` as a string, if present.
    pub fn detail_str(&self, key: &str) -> Option<&str> {
        self.details.get(key).and_then(Value::as_str)
    }

    /// Records that giving back what was done before this fault failed too, so something
    /// may be left held: `details.rollback` becomes `"incomplete"`, `undo` is appended to
    /// `details.undo_failed` as `{step?, plugin?, point?, code, message}` (`step` names
    /// the flow step whose undo it was, if given; `plugin` and `point` the extension, if
    /// `undo` names them), and `details.rollback_failed` lists the steps (or, without one,
    /// the points) whose undo failed, once each. An `undo` that carries undo failures of
    /// its own (from [`crate::Extensions::undo`], say) is flattened into them.
    pub fn with_undo_failure(mut self, step: Option<&str>, undo: Fault) -> Self {
        let mut entries = match undo.details.get(UNDO_FAILED) {
            Some(Value::Array(entries)) if !entries.is_empty() => entries.clone(),
            _ => {
                let mut entry = serde_json::Map::new();
                for key in ["plugin", "point"] {
                    if let Some(value) = undo.detail_str(key) {
                        entry.insert(key.to_owned(), value.into());
                    }
                }
                entry.insert("code".into(), undo.code.as_str().into());
                entry.insert("message".into(), undo.message.into());
                vec![Value::Object(entry)]
            }
        };
        if let Some(step) = step {
            name_entries(&mut entries, &[("step", step)]);
        }
        let mut all = match self.details.get_mut(UNDO_FAILED).map(Value::take) {
            Some(Value::Array(all)) => all,
            _ => Vec::new(),
        };
        all.extend(entries);
        self.with_undo_failures(all)
    }

    /// Whether giving back what was done before this fault failed
    /// ([`Fault::with_undo_failure`]): something may be left held.
    pub fn rollback_incomplete(&self) -> bool {
        self.detail_str("rollback") == Some(ROLLBACK_INCOMPLETE)
    }

    /// The undo failures attached by [`Fault::with_undo_failure`], oldest first.
    pub fn undo_failures(&self) -> &[Value] {
        match self.details.get(UNDO_FAILED) {
            Some(Value::Array(entries)) => entries,
            _ => &[],
        }
    }

    /// Names where its undo failures happened, in each that does not say (`"step"`, or
    /// `"plugin"` and `"point"`): those of a step's, or an implementor's, own run.
    pub(crate) fn undo_failures_in(mut self, keys: &[(&str, &str)]) -> Self {
        match self.details.get_mut(UNDO_FAILED).map(Value::take) {
            Some(Value::Array(mut entries)) => {
                name_entries(&mut entries, keys);
                self.with_undo_failures(entries)
            }
            _ => self,
        }
    }

    fn with_undo_failures(self, entries: Vec<Value>) -> Self {
        let mut steps: Vec<Value> = Vec::new();
        for entry in &entries {
            let name = entry.get("step").or_else(|| entry.get("point"));
            if let Some(name) = name.filter(|n| !steps.contains(n)) {
                steps.push(name.clone());
            }
        }
        self.with_detail("rollback", ROLLBACK_INCOMPLETE)
            .with_detail("rollback_failed", steps)
            .with_detail(UNDO_FAILED, entries)
    }
}

const UNDO_FAILED: &str = "undo_failed";
const ROLLBACK_INCOMPLETE: &str = "incomplete";

/// Sets each of `keys` in each entry that has none of them.
fn name_entries(entries: &mut [Value], keys: &[(&str, &str)]) {
    for entry in entries {
        if let Value::Object(map) = entry {
            if keys.iter().all(|(key, _)| !map.contains_key(*key)) {
                for (key, value) in keys {
                    map.insert((*key).to_owned(), (*value).into());
                }
            }
        }
    }
}

/// Renders a caught panic payload as text.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::FaultCode;

    #[test]
    fn refusals_are_the_callers_and_the_rest_are_failures() {
        let refusals: Vec<FaultCode> = [
            FaultCode::InvalidArgument,
            FaultCode::NotFound,
            FaultCode::Conflict,
            FaultCode::Vetoed,
            FaultCode::Unavailable,
            FaultCode::Timeout,
            FaultCode::Internal,
        ]
        .into_iter()
        .filter(|code| code.is_refusal())
        .collect();
        assert_eq!(
            refusals,
            [
                FaultCode::InvalidArgument,
                FaultCode::NotFound,
                FaultCode::Conflict,
                FaultCode::Vetoed
            ]
        );
    }
}
