use crate::Error;

/// An email address, normalised: trimmed and lower-cased, so one mailbox has one spelling.
///
/// The check is for a plausible form (one `@`, a local part, a dotted domain, no spaces); whether the mailbox
/// exists is only known by writing to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// RFC 5321's limit on a forward path.
    pub const MAX_LEN: usize = 254;

    pub fn parse(input: &str) -> Result<Self, Error> {
        let email = input.trim().to_lowercase();
        let invalid = || Error::invalid("email", "not a plausible email address");
        if email.len() > Self::MAX_LEN || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let domain_ok =
            !domain.contains('@') && domain.contains('.') && domain.split('.').all(|label| !label.is_empty());
        if local.is_empty() || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(email))
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
        fn parsing_never_panics_and_a_parsed_address_is_normal(input in any::<String>()) {
            if let Ok(email) = Email::parse(&input) {
                prop_assert_eq!(email.0.matches('@').count(), 1);
                prop_assert_eq!(email.0.trim(), email.0.as_str());
                prop_assert_eq!(email.0.to_lowercase(), email.0.clone());
                prop_assert_eq!(Email::parse(&email.0).ok(), Some(email), "normalising twice changes nothing");
            }
        }

        #[test]
        fn plausible_addresses_parse_in_any_case(local in "[A-Za-z0-9._+-]{1,30}", domain in "[A-Za-z0-9-]{1,20}\\.[A-Za-z]{2,6}") {
            let email = Email::parse(&format!(" {local}@{domain} ")).map(|e| e.0);
            prop_assert_eq!(email.ok(), Some(format!("{local}@{domain}").to_lowercase()));
        }
    }

    #[test]
    fn normalises_case_and_surrounding_space() {
        assert_eq!(Email::parse("  Alice@Example.COM ").map(|e| e.0).ok(), Some("alice@example.com".into()));
    }

    #[test]
    fn rejects_implausible_addresses() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a b@example.com",
            "a@b@c.com",
            "a@.com",
            "a@b..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_overlong_addresses() {
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }
}
