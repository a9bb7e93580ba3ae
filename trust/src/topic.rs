//! Topic names: the one grammar every manifest, module and pipeline topic
//! follows, and the names the host keeps for itself.
//!
//! Invariant: a topic that passes [`check`] is 1 to [`MAX_TOPIC_BYTES`]
//! bytes of `[a-z0-9._-]`, starts with a letter or digit, and is none of
//! [`RESERVED`]. It has no `:`, `$`, space or upper case, so it can be put
//! into a Redis key, a log line or a file name without quoting, and a topic
//! stream (`{prefix}:t:{topic}`) can never be a control key.

/// Longest topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 64;

/// Names the host uses for its own keys and streams: no module may
/// subscribe or publish to them.
pub const RESERVED: &[&str] = &[
    "leader",
    "decisions",
    "daemon",
    "daemons",
    "dead",
    "snapshot",
    "system",
    "control",
    "t",
];

/// Why a topic name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The name is empty.
    #[error("a topic name is empty; name it with lower-case letters, digits, `.`, `_` or `-`")]
    Empty,
    /// The name is too long.
    #[error(
        "topic `{shown}` is {len} bytes long, above the {MAX_TOPIC_BYTES}-byte limit; shorten it"
    )]
    TooLong {
        /// The start of the name.
        shown: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside the grammar.
    #[error(
        "topic {name:?} has {found:?}; topics are lower-case letters, digits, `.`, `_` and `-`, starting with a letter or digit"
    )]
    BadChar {
        /// The name, as given.
        name: String,
        /// The first character refused.
        found: char,
    },
    /// A name the host keeps for itself.
    #[error("topic `{0}` is reserved for the host's own keys; choose another name")]
    Reserved(String),
}

/// Check `name` against the topic grammar and the reserved names.
pub fn check(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong {
            shown: name.chars().take(16).collect::<String>() + "…",
            len: name.len(),
        });
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    for (i, c) in name.chars().enumerate() {
        let ok = allowed(c) || (i > 0 && matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(TopicError::BadChar {
                name: name.chars().take(MAX_TOPIC_BYTES).collect(),
                found: c,
            });
        }
    }
    if RESERVED.contains(&name) {
        return Err(TopicError::Reserved(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_and_the_reserved_names() {
        for good in ["bar", "plan", "fitness", "a.b_c-d", "0x", &"a".repeat(64)] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        let cases: &[(&str, &str)] = &[
            ("", "Empty"),
            ("$system", "BadChar"),
            ("daemon:d1", "BadChar"),
            ("Bar", "BadChar"),
            ("-x", "BadChar"),
            ("a b", "BadChar"),
            ("caf\u{e9}", "BadChar"),
            ("leader", "Reserved"),
            ("decisions", "Reserved"),
        ];
        for (name, kind) in cases {
            let error = check(name).expect_err(name);
            let got = match error {
                TopicError::Empty => "Empty",
                TopicError::TooLong { .. } => "TooLong",
                TopicError::BadChar { .. } => "BadChar",
                TopicError::Reserved(_) => "Reserved",
            };
            assert_eq!(got, *kind, "{name}: {error}");
        }
        assert!(matches!(
            check(&"a".repeat(65)),
            Err(TopicError::TooLong { len: 65, .. })
        ));
    }
}
