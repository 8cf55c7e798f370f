//! UTC calendar time without a time-zone database (DICOM dates, log and
//! weights timestamps).

/// Seconds since 1970-01-01T00:00:00Z, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// [year, month, day, hour, minute, second] of a Unix time, UTC
/// (days to civil date by H. Hinnant's algorithm).
pub fn utc_parts(secs: i64) -> [i64; 6] {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    [y, m, d, tod / 3600, tod % 3600 / 60, tod % 60]
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::utc_parts(0), [1970, 1, 1, 0, 0, 0]);
        // 2000-02-29T12:34:56Z
        assert_eq!(super::utc_parts(951_827_696), [2000, 2, 29, 12, 34, 56]);
        assert_eq!(super::utc_parts(-1), [1969, 12, 31, 23, 59, 59]);
    }
}
