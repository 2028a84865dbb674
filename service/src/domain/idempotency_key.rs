use crate::{Error, Field};

/// A client's name for one transfer request: 1–255 characters, none of them control characters.
///
/// Kept exactly as sent (not trimmed or normalised): two keys that differ in any way name two requests. Control
/// characters are refused because they are never part of a deliberate key and PostgreSQL refuses NUL in text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(input: &str) -> Result<Self, Error> {
        if input.is_empty() || input.chars().count() > Self::MAX_CHARS {
            return Err(Error::invalid(
                Field::IdempotencyKey,
                format!("an idempotency key has 1–{} characters", Self::MAX_CHARS),
            ));
        }
        if input.chars().any(char::is_control) {
            return Err(Error::invalid(Field::IdempotencyKey, "an idempotency key has no control characters"));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_key_is_accepted_exactly_when_it_has_1_to_255_characters_and_no_control_character(key in any::<String>()) {
            let valid = (1..=255).contains(&key.chars().count()) && !key.chars().any(char::is_control);
            prop_assert_eq!(IdempotencyKey::parse(&key).map(|k| k.0).ok(), valid.then_some(key));
        }
    }

    #[test]
    fn keys_are_kept_exactly_as_sent() {
        assert_eq!(IdempotencyKey::parse(" order-42 ").map(|k| k.0).ok(), Some(" order-42 ".into()));
    }

    #[test]
    fn the_limit_counts_characters_not_bytes() {
        assert!(IdempotencyKey::parse(&"é".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"x".repeat(256)).is_err());
    }

    #[test]
    fn empty_keys_and_control_characters_are_refused_naming_the_field() {
        for key in ["", "a\u{0}b", "tab\there", "new\nline", "del\u{7f}"] {
            let err = IdempotencyKey::parse(key).expect_err(key);
            assert!(matches!(err, Error::InvalidInput { field: Field::IdempotencyKey, .. }), "{key:?}: {err:?}");
        }
    }
}
