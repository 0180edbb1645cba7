//! `acmekeep check`'s verdict: the Nagios/Icinga plugin conventions (0 OK, 1 WARNING,
//! 2 CRITICAL, 3 UNKNOWN) over the [`facts`](super::facts).
//!
//! Pure: each target is judged from its state, its certificate's validity and its failures,
//! at a `now` passed in, against thresholds that are a fraction of each certificate's
//! lifetime (so a 90-day and a 6-day certificate are judged alike) or a fixed time left.
//! The defaults sit below where renewal is due (a third of the lifetime left, half under ten
//! days, or the CA's renewal window): a certificate reaches them only when renewing it has
//! failed for a while, so a check that is not OK always means a person has work to do.

use std::fmt;

use time::{Duration, OffsetDateTime};

use super::facts::TargetState;

/// A plugin's result, in the order of severity Nagios gives them (UNKNOWN aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Someone should look soon.
    Warning,
    /// Someone should look now.
    Critical,
    /// The check could not tell (the state directory cannot be read).
    Unknown,
}

impl Level {
    /// The word in the status line.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }

    /// The plugin's exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }

    /// The worse of two results (UNKNOWN outranks CRITICAL: the check itself is broken).
    pub fn worst(self, other: Level) -> Level {
        self.max(other)
    }
}

/// How much time left makes a certificate a warning or critical.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// Less than this fraction of the certificate's lifetime left.
    Fraction(f64),
    /// Less than this much time left.
    Left(Duration),
}

impl Threshold {
    /// The default warning: a quarter of the lifetime left (renewal was due at a third).
    pub const WARNING: Threshold = Threshold::Fraction(0.25);
    /// The default critical: a sixth left, where a run itself starts saying so on stderr.
    pub const CRITICAL: Threshold = Threshold::Fraction(1.0 / 6.0);

    /// Whether a certificate valid from `not_before` to `not_after` has crossed this
    /// threshold at `now`.
    fn crossed(
        self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> bool {
        let left = not_after - now;
        match self {
            Threshold::Fraction(f) => {
                let lifetime = (not_after - not_before).as_seconds_f64();
                left.as_seconds_f64() < lifetime * f
            }
            Threshold::Left(d) => left < d,
        }
    }

    /// Parses `1/4`, `0.25`, `25%` (fractions of the lifetime) or a time left (`20d`, `36h`,
    /// `90m`, `1d12h`).
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let t = text.trim();
        let bad = || {
            format!(
                "{text:?} is not a threshold: give a fraction of the lifetime (1/4, 0.25, 25%) or a time left (20d, 36h)"
            )
        };
        let fraction = if let Some(p) = t.strip_suffix('%') {
            p.trim().parse::<f64>().ok().map(|p| p / 100.0)
        } else if let Some((n, d)) = t.split_once('/') {
            match (n.trim().parse::<f64>(), d.trim().parse::<f64>()) {
                (Ok(n), Ok(d)) if d > 0.0 => Some(n / d),
                _ => return Err(bad()),
            }
        } else if t.contains('.') || t == "0" || t == "1" {
            t.parse::<f64>().ok()
        } else {
            None
        };
        if let Some(f) = fraction {
            return if f.is_finite() && (0.0..=1.0).contains(&f) {
                Ok(Threshold::Fraction(f))
            } else {
                Err(format!(
                    "{text:?}: a fraction of the lifetime is between 0 and 1"
                ))
            };
        }
        parse_time_left(t).map(Threshold::Left).ok_or_else(bad)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Fraction(x) => write!(f, "{:.0}% of the lifetime", x * 100.0),
            Threshold::Left(d) => write!(f, "{}", human(*d)),
        }
    }
}

/// `20d`, `36h`, `90m`, `1d12h`: days, hours and minutes, each at most once, in that order.
fn parse_time_left(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    let mut units = ['d', 'h', 'm'].into_iter();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: i64 = rest.get(..digits)?.parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let per = loop {
            match units.next()? {
                u if u == unit => break u,
                _ => continue,
            }
        };
        let d = match per {
            'd' => Duration::days(n.min(100_000)),
            'h' => Duration::hours(n.min(2_400_000)),
            _ => Duration::minutes(n.min(144_000_000)),
        };
        total += d;
        rest = &rest[digits + 1..];
    }
    Some(total)
}

/// The thresholds of one check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Below this a certificate is a warning.
    pub warning: Threshold,
    /// Below this it is critical.
    pub critical: Threshold,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            warning: Threshold::WARNING,
            critical: Threshold::CRITICAL,
        }
    }
}

/// How long a target may fail while its certificate is still far from its end before the
/// check warns: runs come twice a day and back off up to a day, so one failed run (a CA
/// outage, a network blip) that the next run mends is no one's problem.
pub const FAILING_GRACE: Duration = Duration::days(1);

/// How long without a recorded run before the check warns (runs come twice a day).
pub const NO_RUN_GRACE: Duration = Duration::hours(26);

/// What the check needs to know of one target.
#[derive(Clone, Copy, Debug)]
pub struct Subject {
    /// Where it stands.
    pub state: TargetState,
    /// The validity of the certificate it uses, if any.
    pub validity: Option<(OffsetDateTime, OffsetDateTime)>,
    /// When its current run of failures began.
    pub failing_since: Option<OffsetDateTime>,
    /// Not tried again before this time.
    pub next_attempt: Option<OffsetDateTime>,
}

/// The verdict on one target: its level and why, in a few words.
pub fn judge(s: &Subject, now: OffsetDateTime, th: &Thresholds) -> (Level, String) {
    let failing = s.state == TargetState::Failing;
    let since = |what: &str| match s.failing_since {
        Some(t) => format!("{what} for {}", human(now - t)),
        None => what.to_owned(),
    };
    let Some((not_before, not_after)) = s.validity else {
        return match s.state {
            TargetState::Invalid => (
                Level::Warning,
                "its file under desired/ cannot be used".to_owned(),
            ),
            TargetState::Failing => (Level::Critical, since("no certificate, failing")),
            TargetState::Deferred => (
                Level::Warning,
                match s.next_attempt {
                    Some(t) if t > now => format!(
                        "no certificate yet, the CA asked to wait {}",
                        human(t - now)
                    ),
                    _ => "no certificate yet, the CA asked to wait".to_owned(),
                },
            ),
            _ => (Level::Warning, "no certificate yet".to_owned()),
        };
    };
    let left = not_after - now;
    let trouble = match s.state {
        TargetState::Failing => format!(", {}", since("renewal failing")),
        TargetState::Deferred => ", renewal deferred by the CA".to_owned(),
        _ => String::new(),
    };
    if left <= Duration::ZERO {
        return (
            Level::Critical,
            format!("expired {} ago{trouble}", human(-left)),
        );
    }
    let lifetime = (not_after - not_before).as_seconds_f64();
    let share = if lifetime > 0.0 {
        left.as_seconds_f64() / lifetime * 100.0
    } else {
        0.0
    };
    let expires = format!(
        "expires in {} ({share:.0}% of its lifetime left){trouble}",
        human(left)
    );
    if th.critical.crossed(not_before, not_after, now) {
        (Level::Critical, expires)
    } else if th.warning.crossed(not_before, not_after, now) {
        (Level::Warning, expires)
    } else if failing && s.failing_since.is_some_and(|t| now - t > FAILING_GRACE) {
        (
            Level::Warning,
            format!("{}, expires in {}", since("renewal failing"), human(left)),
        )
    } else {
        (Level::Ok, format!("expires in {}", human(left)))
    }
}

/// The verdict on the runs: a warning when none was recorded for [`NO_RUN_GRACE`].
pub fn judge_last_run(started_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Option<String> {
    let at = started_at?;
    (now - at > NO_RUN_GRACE).then(|| {
        format!(
            "no run for {} (is the timer or cron job running?)",
            human(now - at)
        )
    })
}

/// `3d`, `5h`, `12m`: the largest unit that is at least one, rounded down.
pub fn human(d: Duration) -> String {
    if d.whole_days() >= 2 {
        format!("{}d", d.whole_days())
    } else if d.whole_hours() >= 1 {
        format!("{}h", d.whole_hours())
    } else {
        format!("{}m", d.whole_minutes().max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: f64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
            + Duration::seconds_f64(days * 86_400.0)
    }

    #[test]
    fn each_state_has_its_exit_code() {
        use TargetState::*;
        let th = Thresholds::default();
        // A 90-day certificate from day 0; (state, its validity, failing since (days), now
        // (days), expected level).
        let cert = Some((at(0.0), at(90.0)));
        type Row = (
            TargetState,
            Option<(OffsetDateTime, OffsetDateTime)>,
            Option<f64>,
            f64,
            Level,
        );
        let table: &[Row] = &[
            (Valid, cert, None, 10.0, Level::Ok),
            // Renewal due at a third left (day 60): not a warning yet.
            (Due, cert, None, 61.0, Level::Ok),
            // A failure the next run may mend is no one's problem yet.
            (Failing, cert, Some(60.5), 61.0, Level::Ok),
            (Failing, cert, Some(60.0), 61.5, Level::Warning),
            // Under a quarter left (day 67.5), under a sixth (day 75), expired.
            (Due, cert, None, 68.0, Level::Warning),
            (Failing, cert, Some(67.9), 68.0, Level::Warning),
            (Deferred, cert, Some(60.0), 76.0, Level::Critical),
            (Failing, cert, Some(60.0), 91.0, Level::Critical),
            // No certificate at all.
            (Missing, None, None, 0.0, Level::Warning),
            (Deferred, None, Some(0.0), 0.1, Level::Warning),
            (Failing, None, Some(0.0), 0.1, Level::Critical),
            (Invalid, None, None, 0.0, Level::Warning),
        ];
        for &(state, validity, since, now, want) in table {
            let s = Subject {
                state,
                validity,
                failing_since: since.map(at),
                next_attempt: None,
            };
            let (level, why) = judge(&s, at(now), &th);
            assert_eq!(level, want, "{state:?} at day {now}: {why}");
            assert_eq!(level.exit_code(), want as u8, "{state:?}");
        }
    }

    #[test]
    fn thresholds_follow_the_lifetime_unless_given_as_time_left() {
        // A 6-day certificate is judged like a 90-day one, by its share of life left.
        let short = Subject {
            state: TargetState::Due,
            validity: Some((at(0.0), at(6.0))),
            failing_since: None,
            next_attempt: None,
        };
        let th = Thresholds::default();
        assert_eq!(judge(&short, at(4.0), &th).0, Level::Ok); // a third left
        assert_eq!(judge(&short, at(4.6), &th).0, Level::Warning); // under a quarter
        assert_eq!(judge(&short, at(5.1), &th).0, Level::Critical); // under a sixth
        let th = Thresholds {
            warning: Threshold::parse("3d").expect("3d"),
            critical: Threshold::parse("1d").expect("1d"),
        };
        assert_eq!(judge(&short, at(3.5), &th).0, Level::Warning);
        assert_eq!(judge(&short, at(5.5), &th).0, Level::Critical);
    }

    #[test]
    fn thresholds_parse() {
        let f = |t: &str| Threshold::parse(t);
        assert_eq!(f("1/4"), Ok(Threshold::Fraction(0.25)));
        assert_eq!(f("0.25"), Ok(Threshold::Fraction(0.25)));
        assert_eq!(f("25%"), Ok(Threshold::Fraction(0.25)));
        assert_eq!(f("20d"), Ok(Threshold::Left(Duration::days(20))));
        assert_eq!(f("1d12h"), Ok(Threshold::Left(Duration::hours(36))));
        assert_eq!(f("90m"), Ok(Threshold::Left(Duration::minutes(90))));
        for bad in [
            "", "x", "2", "150%", "1/0", "-1d", "12h1d", "5s", "d", "1.5/x",
        ] {
            assert!(f(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_missed_run_is_a_warning() {
        assert_eq!(judge_last_run(None, at(0.0)), None);
        assert_eq!(judge_last_run(Some(at(0.0)), at(1.0)), None);
        assert!(judge_last_run(Some(at(0.0)), at(1.2)).is_some());
    }
}
