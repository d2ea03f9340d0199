//! Filter values the lists share, checked the same way everywhere.

use chrono::{DateTime, Utc};

use crate::Problem;

/// A time filter (`since`, `until`) named `name`, in RFC 3339.
pub(crate) fn time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, Problem> {
    value
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| Problem::invalid_field(name, "not an RFC 3339 time"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_refused() {
        assert_eq!(time("since", None).ok(), Some(None));
        assert!(time("since", Some("2026-11-30T10:00:00+01:00")).is_ok_and(|t| t.is_some()));
        assert!(time("since", Some("yesterday")).is_err());
    }
}
