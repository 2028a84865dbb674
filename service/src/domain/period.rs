use chrono::{DateTime, Utc};

use crate::{Error, Field};

/// A span of time `[since, until)`: from `since` (inclusive) to `until` (exclusive), either end open. Half-open, so
/// that consecutive periods (one month, then the next) share no instant and together miss none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Period {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Period {
    /// Every time there is.
    pub const ALL: Self = Self { since: None, until: None };

    pub fn parse(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Result<Self, Error> {
        if let (Some(since), Some(until)) = (since, until)
            && until < since
        {
            return Err(Error::invalid(Field::Until, "until comes before since"));
        }
        Ok(Self { since, until })
    }

    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.since
    }

    pub fn until(&self) -> Option<DateTime<Utc>> {
        self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_ending_before_it_starts_is_refused_and_an_empty_one_is_not() {
        let noon = "2026-12-01T12:00:00Z".parse::<DateTime<Utc>>().expect("a time");
        let one = "2026-12-01T13:00:00Z".parse::<DateTime<Utc>>().expect("a time");
        assert!(Period::parse(Some(one), Some(noon)).is_err());
        assert!(Period::parse(Some(noon), Some(noon)).is_ok());
        assert!(Period::parse(None, Some(noon)).is_ok());
    }
}
