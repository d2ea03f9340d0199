//! Cursor pages, as every list of the API has them: the cursor is the id of the previous
//! page's last item, so a page is "the next `limit` items after it" whatever was added since.

use crate::Problem;

/// The id to read after: 0 (from the start) without a cursor.
pub(crate) fn after(cursor: Option<&str>) -> Result<i64, Problem> {
    match cursor {
        None => Ok(0),
        Some(cursor) => cursor
            .parse::<i64>()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| Problem::invalid_field("cursor", "not one this API gave")),
    }
}

/// The page size asked for, `default` when none, refused outside 1..=`max`.
pub(crate) fn size(limit: Option<u64>, default: u64, max: u64) -> Result<u64, Problem> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::invalid_field("limit", format_args!("1 to {max}")))
    }
}

/// `rows`, read with one row more than `limit`, cut to a page, with the cursor of the next
/// page if that extra row was there.
pub(crate) fn cut<T>(
    mut rows: Vec<T>,
    limit: u64,
    id: impl Fn(&T) -> i64,
) -> (Vec<T>, Option<String>) {
    if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        let next = rows.last().map(|row| id(row).to_string());
        (rows, next)
    } else {
        (rows, None)
    }
}

/// [`cut`] for lists whose cursor counts the items already listed (`after`): for lists in an
/// order where new items sort last, so that a page already read does not shift.
pub(crate) fn counted<T>(mut rows: Vec<T>, limit: u64, after: i64) -> (Vec<T>, Option<String>) {
    if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        let next = (after + rows.len() as i64).to_string();
        (rows, Some(next))
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_sizes_and_cuts() {
        assert_eq!(after(None).ok(), Some(0));
        assert_eq!(after(Some("42")).ok(), Some(42));
        for bad in ["", "-1", "x", "99999999999999999999"] {
            assert!(after(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(size(None, 50, 200).ok(), Some(50));
        assert!(size(Some(0), 50, 200).is_err());
        assert!(size(Some(201), 50, 200).is_err());
        assert_eq!(
            cut(vec![1, 2, 3], 2, |n| *n),
            (vec![1, 2], Some("2".to_owned()))
        );
        assert_eq!(cut(vec![1, 2], 2, |n| *n), (vec![1, 2], None));
        assert_eq!(
            counted(vec![7, 8, 9], 2, 10),
            (vec![7, 8], Some("12".to_owned()))
        );
        assert_eq!(counted(vec![7], 2, 10), (vec![7], None));
    }
}
