use std::fmt;

use crate::{Error, Field};

/// A new password: 12–128 characters, none of them control characters. Its `Debug` never shows it, so it cannot leak into a log.
///
/// Length is what makes a password strong (NIST SP 800-63B); the upper bound keeps hashing cost bounded.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 12;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(input: &str) -> Result<Self, Error> {
        let chars = input.chars().count();
        if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&chars) {
            return Err(Error::invalid(
                Field::Password,
                format!("a password has {}–{} characters", Self::MIN_CHARS, Self::MAX_CHARS),
            ));
        }
        // A NUL or a line break is a copy-and-paste accident or an attack on something downstream, never a choice.
        if input.chars().any(char::is_control) {
            return Err(Error::invalid(Field::Password, "a password has no control characters"));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_twelve_to_128_characters() {
        assert!(Password::parse("short pass!").is_err());
        assert!(Password::parse("long enough!").is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn has_no_control_characters_but_any_other_unicode() {
        assert!(Password::parse("correct horse\u{0}battery").is_err());
        assert!(Password::parse("correct horse\nbattery").is_err());
        assert!(Password::parse("correct horse\u{85}battery").is_err());
        assert!(Password::parse("cörrect hörse bättery 🐎").is_ok());
    }

    #[test]
    fn never_shows_itself_in_debug_output() {
        let password = Password::parse("correct horse battery").ok();
        assert_eq!(format!("{password:?}"), "Some(Password(***))");
    }
}
