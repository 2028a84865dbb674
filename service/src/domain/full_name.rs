use crate::{Error, Field};

/// A person's name as they write it: trimmed, 1–100 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(input: &str) -> Result<Self, Error> {
        let name = input.trim();
        if name.is_empty() || name.chars().count() > Self::MAX_CHARS {
            return Err(Error::invalid(Field::FullName, format!("a full name has 1–{} characters", Self::MAX_CHARS)));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::invalid(Field::FullName, "a full name has no control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unicode_and_trims() {
        assert_eq!(FullName::parse(" Zoë Ångström ").map(|n| n.0).ok(), Some("Zoë Ångström".into()));
    }

    #[test]
    fn rejects_empty_overlong_and_control_characters() {
        assert!(FullName::parse("   ").is_err());
        assert!(FullName::parse(&"x".repeat(101)).is_err());
        assert!(FullName::parse("a\u{0}b").is_err());
        assert!(FullName::parse("a\u{1b}[31mb").is_err());
        assert!(FullName::parse("a\u{9f}b").is_err());
    }
}
