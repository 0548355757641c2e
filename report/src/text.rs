//! How findings word times, parts and ids; public so that a renderer of
//! the same inventory words them the same way.

use std::time::Duration;

/// A span as Docker words it: `about an hour`, `5 weeks`, `3 months`
/// (hours rounded to the nearest one).
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let minutes = secs / 60;
    // Docker rounds hours to the nearest one.
    let hours = secs.saturating_add(1800) / 3600;
    match () {
        () if secs < 1 => "less than a second".into(),
        () if secs == 1 => "1 second".into(),
        () if secs < 60 => format!("{secs} seconds"),
        () if minutes == 1 => "about a minute".into(),
        () if minutes < 60 => format!("{minutes} minutes"),
        () if hours == 1 => "about an hour".into(),
        () if hours < 48 => format!("{hours} hours"),
        () if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        () if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        () if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        () => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// A fraction as a whole percentage, clamped to 0-100: `17 %`.
pub fn percent(fraction: f64) -> String {
    format!("{:.0} %", (fraction * 100.0).clamp(0.0, 100.0))
}

/// The first 12 characters of a node or cluster id, as Docker shows ids.
pub fn short_id(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(end, _)| &id[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_worded_as_docker_does() {
        let d = |secs| human_duration(Duration::from_secs(secs));
        assert_eq!(d(0), "less than a second");
        assert_eq!(d(90 * 60), "2 hours");
        assert_eq!(d(40 * 86_400), "5 weeks");
        assert_eq!(d(100 * 86_400), "3 months");
        assert_eq!(d(u64::MAX), "584942417355 years");
    }

    #[test]
    fn percentages_are_whole_and_clamped() {
        assert_eq!(percent(0.1666), "17 %");
        assert_eq!(percent(-3.0), "0 %");
        assert_eq!(percent(f64::INFINITY), "100 %");
    }

    #[test]
    fn short_ids_cut_at_characters_not_bytes() {
        assert_eq!(short_id("k3q0h7m2p9r4t6v8"), "k3q0h7m2p9r4");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(&"é".repeat(40)), "é".repeat(12));
    }
}
