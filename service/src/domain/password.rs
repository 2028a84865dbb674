use std::fmt;

use crate::Error;

/// A new password: 12–128 characters. Its `Debug` never shows it, so it cannot leak into a log.
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
                "password",
                format!("a password has {}–{} characters", Self::MIN_CHARS, Self::MAX_CHARS),
            ));
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
    fn never_shows_itself_in_debug_output() {
        let password = Password::parse("correct horse battery").ok();
        assert_eq!(format!("{password:?}"), "Some(Password(***))");
    }
}
