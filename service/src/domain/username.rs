use crate::{Error, Field};

/// A username: 3–32 lower-case ASCII letters, digits and underscores.
///
/// Usernames appear in URLs, logs and foreign keys; the narrow alphabet keeps them unambiguous (no case or Unicode
/// look-alikes) and never in need of escaping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 32;

    pub fn parse(input: &str) -> Result<Self, Error> {
        let len = input.len();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(Error::invalid(
                Field::Username,
                format!("a username has {}–{} characters", Self::MIN_LEN, Self::MAX_LEN),
            ));
        }
        if !input.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(Error::invalid(
                Field::Username,
                "a username has only lower-case letters, digits and underscores",
            ));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn every_name_of_the_alphabet_and_length_parses_unchanged(name in "[a-z0-9_]{3,32}") {
            prop_assert_eq!(Username::parse(&name).map(|u| u.0).ok(), Some(name));
        }

        #[test]
        fn anything_else_is_refused_without_panicking(name in any::<String>()) {
            let valid = (3..=32).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            prop_assert_eq!(Username::parse(&name).is_ok(), valid);
        }
    }

    #[test]
    fn accepts_lower_case_letters_digits_and_underscores() {
        assert_eq!(Username::parse("alice_01").map(|u| u.0).ok(), Some("alice_01".into()));
    }

    #[test]
    fn rejects_wrong_lengths() {
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
        assert!(Username::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn rejects_upper_case_spaces_and_symbols() {
        for bad in ["Alice", "al ice", "al-ice", "al'ice", "ålice", "alice;--", "alice\u{0}", "ali\tce"] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }
}
