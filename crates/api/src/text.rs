//! Text a person will read (names, descriptions, URLs) must not carry what a terminal, a
//! log or a browser would act on: control characters (C0, DEL, C1), bidirectional
//! overrides and isolates, zero-width characters. Every string of a request body is
//! checked; a refusal names the field.

use crate::error::ApiError;
use flatstack_kernel::Fault;
use serde_json::{Map, Value};

/// The first character of `text` no field may hold, if any.
pub fn hostile_char(text: &str) -> Option<char> {
    text.chars().find(|&c| is_hostile(c))
}

/// Whether `c` is a control, bidirectional or zero-width character.
pub fn is_hostile(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{FEFF}' // zero-width no-break space
            | '\u{061C}' // Arabic letter mark
        )
}

/// `text` with every hostile character written as `\u{XXXX}`: what a terminal may be
/// shown of text that came from elsewhere.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if hostile_char(text).is_none() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_hostile(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Refuses a body with a hostile character in any string, naming the field (`a.b[2]`).
pub(crate) fn check_body(body: &Map<String, Value>) -> Result<(), ApiError> {
    for (key, value) in body {
        check_value(key, value)?;
    }
    Ok(())
}

fn check_value(path: &str, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::String(text) => match hostile_char(text) {
            Some(c) => Err(ApiError(Fault::invalid(
                path,
                format!(
                    "`{path}` holds the character U+{:04X}; control, bidirectional and \
                     zero-width characters are refused",
                    c as u32
                ),
            ))),
            None => Ok(()),
        },
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_value(&format!("{path}[{i}]"), item)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check_value(&format!("{path}.{k}"), v)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{escape, hostile_char};

    #[test]
    fn escaping_leaves_nothing_a_terminal_acts_on() {
        let shown = escape("x\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}y");
        assert_eq!(hostile_char(&shown), None, "{shown}");
        assert_eq!(shown, "x\\u{001b}]0;pwned\\u{0007}\\u{001b}[2J\\u{202e}y");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn refuses_controls_bidi_and_zero_width_and_keeps_the_rest() {
        for bad in [
            "a\0b",
            "a\nb",
            "\u{1b}[2J",
            "\u{1b}]0;x\u{7}",
            "\u{9b}",
            "a\u{7f}",
            "\u{202e}gnp.exe",
            "a\u{200b}b",
            "\u{2066}x",
            "\u{feff}",
            "tab\there",
        ] {
            assert!(hostile_char(bad).is_some(), "{bad:?} accepted");
        }
        for good in [
            "web-1",
            "Zürich 東京",
            "emoji 🚀",
            "a b",
            "http://x.invalid/a?b=c",
        ] {
            assert_eq!(hostile_char(good), None, "{good:?} refused");
        }
    }
}
