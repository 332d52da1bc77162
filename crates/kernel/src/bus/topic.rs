//! AMQP-style topic patterns: words separated by `.`, `*` matches exactly one word, `#`
//! matches zero or more. The same rules RabbitMQ's topic exchanges apply, so a pattern
//! means the same in process and on the broker.

/// Whether `topic` matches `pattern`.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let topic: Vec<&str> = topic.split('.').collect();
    match_words(&pattern, &topic)
}

fn match_words(pattern: &[&str], topic: &[&str]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        Some((&"#", rest)) => (0..=topic.len()).any(|skip| match_words(rest, &topic[skip..])),
        Some((&word, rest)) => match topic.split_first() {
            Some((&t, topic_rest)) => (word == "*" || word == t) && match_words(rest, topic_rest),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn amqp_topic_rules() {
        assert!(matches("vm.created", "vm.created"));
        assert!(!matches("vm.created", "vm.deleted"));
        assert!(matches("vm.*", "vm.created"));
        assert!(!matches("vm.*", "vm.state.changed"));
        assert!(matches("vm.#", "vm.state.changed"));
        assert!(matches("vm.#", "vm"));
        assert!(matches("#", "anything.at.all"));
        assert!(matches("*.created", "volume.created"));
        assert!(!matches("*.created", "created"));
        assert!(matches("#.changed", "vm.state.changed"));
        assert!(!matches("vm.*.changed", "vm.changed"));
    }
}
