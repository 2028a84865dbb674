use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::{Error, Field};

/// An email address in its one canonical form, so that one mailbox has one spelling and a look-alike spelling of a
/// taken address is taken too: trimmed; the domain mapped by IDNA (UTS 46, which folds fullwidth and other
/// compatibility forms to ASCII and lower-cases) and stored in its ASCII form (`xn--` labels, as DNS and SMTP use
/// it); the local part in NFC and lower-cased. Control characters and invisible ones (Unicode category Cf: zero-width
/// spaces and joiners, soft hyphens, byte-order marks, bidi controls) are refused anywhere in the address, because
/// they make two addresses that read the same.
///
/// The check is for a plausible form (one `@`, a local part, a dotted domain of valid labels, no spaces); whether
/// the mailbox exists is only known by writing to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// RFC 5321's limit on a forward path.
    pub const MAX_LEN: usize = 254;

    pub fn parse(input: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::invalid(Field::Email, format!("not a plausible email address: {why}"));
        // Bounds the normalising work before it starts; the canonical form is checked against the limit below.
        if input.len() > 4 * Self::MAX_LEN {
            return Err(invalid("too long"));
        }
        if input.chars().any(|c| c.is_control() || c.general_category() == GeneralCategory::Format) {
            return Err(invalid("it has control or invisible characters"));
        }
        let input = input.trim();
        if input.chars().any(char::is_whitespace) {
            return Err(invalid("it has spaces"));
        }
        let (local, domain) = input.split_once('@').ok_or_else(|| invalid("no @"))?;
        if local.is_empty() || local.contains('@') {
            return Err(invalid("one @ after a local part"));
        }
        let domain = idna::domain_to_ascii_strict(domain).map_err(|_| invalid("the domain is not a valid name"))?;
        if !domain.contains('.') {
            return Err(invalid("the domain needs a dot"));
        }
        let email = format!("{}@{domain}", local.nfc().collect::<String>().to_lowercase());
        if email.len() > Self::MAX_LEN {
            return Err(invalid("too long"));
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

    fn canonical(input: &str) -> Option<String> {
        Email::parse(input).map(|e| e.0).ok()
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_a_parsed_address_is_canonical(input in any::<String>()) {
            if let Ok(email) = Email::parse(&input) {
                prop_assert_eq!(email.0.matches('@').count(), 1);
                prop_assert_eq!(email.0.trim(), email.0.as_str());
                prop_assert_eq!(email.0.to_lowercase(), email.0.clone());
                prop_assert!(email.0.split_once('@').is_some_and(|(_, domain)| domain.is_ascii()));
                prop_assert_eq!(Email::parse(&email.0).ok(), Some(email), "normalising twice changes nothing");
            }
        }

        #[test]
        fn plausible_addresses_parse_in_any_case(local in "[A-Za-z0-9._+-]{1,30}", domain in "[A-Za-z0-9]{1,20}\\.[A-Za-z]{2,6}") {
            let email = Email::parse(&format!(" {local}@{domain} ")).map(|e| e.0);
            prop_assert_eq!(email.ok(), Some(format!("{local}@{domain}").to_lowercase()));
        }

        #[test]
        fn an_invisible_or_control_character_anywhere_is_refused(
            at in 0usize..17,
            c in prop_oneof![
                proptest::char::range('\u{0}', '\u{1f}'),
                proptest::char::range('\u{7f}', '\u{9f}'),
                prop::sample::select(vec!['\u{ad}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{202e}', '\u{2060}', '\u{2066}', '\u{feff}']),
            ],
        ) {
            let mut address: Vec<char> = "alice@example.com".chars().collect();
            address.insert(at, c);
            let address: String = address.into_iter().collect();
            prop_assert!(Email::parse(&address).is_err(), "{:?}", address);
        }
    }

    #[test]
    fn normalises_case_and_surrounding_space() {
        assert_eq!(canonical("  Alice@Example.COM "), Some("alice@example.com".into()));
    }

    #[test]
    fn fullwidth_and_other_compatibility_letters_in_the_domain_fold_to_ascii() {
        assert_eq!(canonical("alice@\u{ff45}xample.com"), Some("alice@example.com".into()));
        assert_eq!(
            canonical("alice@\u{ff25}\u{ff38}\u{ff21}\u{ff2d}\u{ff30}\u{ff2c}\u{ff25}.\u{ff43}\u{ff4f}\u{ff4d}"),
            Some("alice@example.com".into())
        );
        // The ideographic full stop is a dot to IDNA.
        assert_eq!(canonical("alice@example\u{3002}com"), Some("alice@example.com".into()));
    }

    #[test]
    fn an_international_domain_is_kept_in_its_ascii_form_however_it_was_written() {
        let ascii = canonical("jo@xn--bcher-kva.de");
        assert_eq!(ascii, Some("jo@xn--bcher-kva.de".into()));
        assert_eq!(canonical("jo@bücher.de"), ascii);
        assert_eq!(canonical("jo@BÜCHER.DE"), ascii);
        assert_eq!(canonical("jo@bu\u{308}cher.de"), ascii, "a decomposed ü is the same name");
    }

    #[test]
    fn the_local_part_is_composed_so_one_spelling_of_a_letter_is_one_address() {
        assert_eq!(canonical("Zoe\u{308}@example.com"), canonical("zo\u{eb}@example.com"));
        assert_eq!(canonical("zo\u{eb}@example.com"), Some("zo\u{eb}@example.com".into()));
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
            "a@exa_mple.com",
            "a@-example.com",
            "a@example.com\u{0}",
            "a\u{200b}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_overlong_addresses() {
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(100_000))).is_err());
    }
}
