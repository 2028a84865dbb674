use crate::{Error, Field};

/// An amount of money to move: a positive number of minor units (cents). Zero and negative amounts are refused
/// here, before any transaction starts; the schema refuses them again (`transfers_amount_positive`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount(i64);

impl Amount {
    pub fn parse(minor_units: i64) -> Result<Self, Error> {
        if minor_units <= 0 {
            return Err(Error::invalid(Field::Amount, "an amount must be greater than zero"));
        }
        Ok(Self(minor_units))
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn an_amount_exists_exactly_when_it_is_positive(minor_units in any::<i64>()) {
            prop_assert_eq!(Amount::parse(minor_units).map(Amount::minor_units).ok(), (minor_units > 0).then_some(minor_units));
        }
    }

    #[test]
    fn only_positive_amounts_exist() {
        assert!(Amount::parse(1).is_ok());
        assert!(Amount::parse(i64::MAX).is_ok());
        assert!(Amount::parse(0).is_err());
        assert!(Amount::parse(-5).is_err());
        assert!(Amount::parse(i64::MIN).is_err());
    }
}
