//! Retention rules (`prune`): which archives of one series to keep. Pure: archive times in,
//! a keep reason (or none) per archive out. Same semantics as borg 1.2's prune:
//!
//! - `--keep-within D` keeps every archive newer than now − D.
//! - then each of last (every archive its own period; borg counts seconds), minutely, hourly, daily, weekly (ISO year-week), monthly,
//!   yearly in that order: walking from the newest archive, the first archive of each new
//!   calendar period (in local time) is kept, unless an earlier rule already kept it, until the
//!   rule has kept N; a period whose first archive was kept by an earlier rule still counts as
//!   seen. If fewer than N were kept, the oldest archive is kept too (`[oldest]`).
//!
//! Protected archives (`archive protect`) are kept with the rule `protected` and take no part
//! in the rules: they neither fill a `--keep-last` slot nor mark a day as seen, so the rules
//! keep as many unprotected archives as they would without them (as PBS does).
//!
//! Series (`series_key`): each guest's archives (kind + vmid), each dataset's, each plain
//! source's, are pruned separately, so `--keep-daily 7` means seven days of *each*.

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub within: Option<jiff::SignedDuration>,
    pub last: Option<usize>,
    pub minutely: Option<usize>,
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
    pub monthly: Option<usize>,
    pub yearly: Option<usize>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self == &Rules::default()
    }
}

/// The calendar period an archive falls in, per rule (borg's strftime patterns).
fn period(rule: &str, t: &Zoned) -> String {
    let pattern = match rule {
        "minutely" => "%Y-%m-%d %H:%M",
        "hourly" => "%Y-%m-%d %H",
        "daily" => "%Y-%m-%d",
        "weekly" => "%G-%V",
        "monthly" => "%Y-%m",
        _ => "%Y",
    };
    t.strftime(pattern).to_string()
}

/// For each archive time (any order), why it is kept, or `None` to prune it.
pub fn decide(
    times: &[Timestamp],
    rules: &Rules,
    now: Timestamp,
    tz: &TimeZone,
) -> Vec<Option<String>> {
    let mut reason: Vec<Option<String>> = vec![None; times.len()];
    // Newest first; ties keep input order so results are deterministic.
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(a.cmp(&b)));

    if let Some(within) = rules.within {
        let cutoff = now.checked_sub(within).unwrap_or(Timestamp::MIN);
        let mut n = 0;
        for &i in &order {
            if times[i] > cutoff {
                n += 1;
                reason[i] = Some(format!("within #{n}"));
            }
        }
    }
    let steps = [
        ("last", rules.last),
        ("minutely", rules.minutely),
        ("hourly", rules.hourly),
        ("daily", rules.daily),
        ("weekly", rules.weekly),
        ("monthly", rules.monthly),
        ("yearly", rules.yearly),
    ];
    for (rule, n) in steps {
        let Some(n) = n else { continue };
        if n == 0 {
            continue;
        }
        let mut kept = 0;
        let mut last_period: Option<String> = None;
        let mut last_index = None;
        for &i in &order {
            last_index = Some(i);
            // `last` counts archives, not seconds: two backups in one second (small
            // sources are that fast) are two archives. borg's keep-last is keep-secondly.
            let p = if rule == "last" {
                i.to_string()
            } else {
                period(rule, &times[i].to_zoned(tz.clone()))
            };
            if last_period.as_ref() != Some(&p) {
                last_period = Some(p);
                if reason[i].is_none() {
                    kept += 1;
                    reason[i] = Some(format!("{rule} #{kept}"));
                    if kept == n {
                        break;
                    }
                }
            }
        }
        if let Some(i) = last_index {
            if kept < n && reason[i].is_none() {
                kept += 1;
                reason[i] = Some(format!("{rule}[oldest] #{kept}"));
            }
        }
    }
    reason
}

/// Parses borg's interval syntax: a number and a unit, `H` hours, `d` days, `w` weeks,
/// `m` months (31 days), `y` years (365 days).
pub fn parse_within(s: &str) -> Result<jiff::SignedDuration, String> {
    let bad =
        || format!("invalid interval {s:?}: expected NUMBER followed by H, d, w, m or y (e.g. 7d)");
    // The unit is the last character, which need not be one byte.
    let cut = s.char_indices().last().map(|(i, _)| i).ok_or_else(bad)?;
    let (num, unit) = s.split_at(cut);
    let n: i64 = num.parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    let hours = match unit {
        "H" => 1,
        "d" => 24,
        "w" => 24 * 7,
        "m" => 24 * 31,
        "y" => 24 * 365,
        _ => return Err(bad()),
    };
    let secs = n
        .checked_mul(hours)
        .and_then(|h| h.checked_mul(3600))
        .ok_or_else(|| format!("invalid interval {s:?}: too long"))?;
    Ok(jiff::SignedDuration::from_secs(secs))
}

/// The series an archive belongs to: the creator's `series` metadata (guests: `lxc-100`,
/// `qemu-200`; datasets: `dataset-<path>`), else the name without its trailing timestamp
/// (`etc-2026-11-23` → `etc`).
pub fn series_key(name: &str, metadata: &BTreeMap<String, serde_json::Value>) -> String {
    if let Some(s) = metadata.get("series").and_then(|v| v.as_str()) {
        return s.to_string();
    }
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit() || "-_:.T".contains(c));
    if trimmed.is_empty() {
        name.to_string()
    } else {
        trimmed.to_string()
    }
}

/// One archive's fate under `decide_archives`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Decision {
    pub name: String,
    pub series: String,
    pub start: String,
    pub keep: bool,
    /// The rule that kept it (`daily #3`, `within`, `[oldest]`).
    pub rule: Option<String>,
}

/// An archive whose start time cannot be read: it can be neither kept nor pruned safely.
#[derive(Debug, thiserror::Error)]
#[error("archive {name:?} has an unreadable start time {start:?}: {reason}")]
pub struct UnreadableTime {
    pub name: String,
    pub start: String,
    pub reason: String,
}

/// Decisions in the order of `archives`, the rules applied per series (or to all of them as
/// one series).
pub fn decide_archives(
    archives: &[&crate::repo::ArchiveEntry],
    rules: &Rules,
    one_series: bool,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<Vec<Decision>, UnreadableTime> {
    let mut series: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut out: Vec<Option<Decision>> = archives.iter().map(|_| None).collect();
    for (i, (_, m)) in archives.iter().enumerate() {
        if m.protected {
            out[i] = Some(Decision {
                name: m.name.clone(),
                series: series_key(&m.name, &m.metadata),
                start: m.start.clone(),
                keep: true,
                rule: Some("protected".into()),
            });
            continue;
        }
        let key = if one_series {
            String::new()
        } else {
            series_key(&m.name, &m.metadata)
        };
        series.entry(key).or_default().push(i);
    }
    for (key, members) in series {
        let times = members
            .iter()
            .map(|&i| {
                let m = &archives[i].1;
                m.start.parse::<Timestamp>().map_err(|e| UnreadableTime {
                    name: m.name.clone(),
                    start: m.start.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let reasons = decide(&times, rules, now, tz);
        for (&i, rule) in members.iter().zip(reasons) {
            let m = &archives[i].1;
            out[i] = Some(Decision {
                name: m.name.clone(),
                series: key.clone(),
                start: m.start.clone(),
                keep: rule.is_some(),
                rule,
            });
        }
    }
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn kept(times: &[&str], rules: &Rules, now: &str, tz: &str) -> Vec<String> {
        let t: Vec<Timestamp> = times.iter().map(|s| ts(s)).collect();
        let tz = TimeZone::get(tz).unwrap();
        let r = decide(&t, rules, ts(now), &tz);
        let mut out: Vec<String> = times
            .iter()
            .zip(r)
            .filter_map(|(s, r)| r.map(|r| format!("{s} {r}")))
            .collect();
        out.sort();
        out
    }

    /// One archive per day at 23:30 UTC for `days` days ending on `last` (inclusive).
    fn daily(last: &str, days: i64) -> Vec<String> {
        let end = ts(last);
        (0..days)
            .map(|d| (end - jiff::SignedDuration::from_hours(24 * d)).to_string())
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let times = [
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "2026-01-03T00:00:00Z",
        ];
        let r = Rules {
            last: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &r, "2026-02-01T00:00:00Z", "UTC"),
            [
                "2026-01-02T00:00:00Z last #2",
                "2026-01-03T00:00:00Z last #1"
            ]
        );
    }

    #[test]
    fn daily_takes_the_newest_of_each_day_in_local_time() {
        // 23:30 UTC is already the next day in Berlin: the local calendar decides.
        let times = [
            "2026-03-01T10:00:00Z",
            "2026-03-01T23:30:00Z", // Berlin: 2026-03-02 00:30
            "2026-03-02T08:00:00Z", // Berlin: 2026-03-02 09:00 (newest of 03-02)
        ];
        let r = Rules {
            daily: Some(5),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &r, "2026-03-03T00:00:00Z", "Europe/Berlin"),
            [
                "2026-03-01T10:00:00Z daily #2",
                "2026-03-02T08:00:00Z daily #1"
            ]
        );
        // Fewer days than asked for: the oldest archive is kept too, as borg does.
        assert_eq!(
            kept(&times, &r, "2026-03-03T00:00:00Z", "UTC"),
            [
                "2026-03-01T10:00:00Z daily[oldest] #3",
                "2026-03-01T23:30:00Z daily #2",
                "2026-03-02T08:00:00Z daily #1"
            ]
        );
    }

    #[test]
    fn dst_change_does_not_merge_or_split_days() {
        // Europe/Berlin springs forward on 2026-03-29 and falls back on 2026-10-25.
        for (a, b, c) in [
            (
                "2026-03-28T22:30:00Z",
                "2026-03-29T21:30:00Z",
                "2026-03-30T21:30:00Z",
            ),
            (
                "2026-10-24T21:30:00Z",
                "2026-10-25T22:30:00Z",
                "2026-10-26T22:30:00Z",
            ),
        ] {
            let r = Rules {
                daily: Some(3),
                ..Default::default()
            };
            assert_eq!(
                kept(&[a, b, c], &r, "2026-12-01T00:00:00Z", "Europe/Berlin").len(),
                3
            );
            // Hourly: the repeated 02:00-03:00 hour on fall-back day is two different UTC
            // hours but the same local "02" label: borg's strftime patterns merge them.
        }
        let fall = ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"]; // both 02:30 local
        let r = Rules {
            hourly: Some(5),
            ..Default::default()
        };
        let k = kept(&fall, &r, "2026-12-01T00:00:00Z", "Europe/Berlin");
        assert_eq!(
            k,
            [
                "2026-10-25T00:30:00Z hourly[oldest] #2",
                "2026-10-25T01:30:00Z hourly #1"
            ]
        );
    }

    #[test]
    fn weekly_uses_iso_weeks_across_year_boundaries_and_week_53() {
        // 2026 has ISO week 53 (Dec 28 2026 - Jan 3 2027).
        let times = [
            "2026-12-27T12:00:00Z", // 2026-W52 (Sunday)
            "2026-12-28T12:00:00Z", // 2026-W53
            "2027-01-03T12:00:00Z", // 2026-W53 (newest of W53)
            "2027-01-04T12:00:00Z", // 2027-W01
        ];
        let r = Rules {
            weekly: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &r, "2027-02-01T00:00:00Z", "UTC"),
            [
                "2026-12-27T12:00:00Z weekly #3",
                "2027-01-03T12:00:00Z weekly #2",
                "2027-01-04T12:00:00Z weekly #1"
            ]
        );
    }

    #[test]
    fn monthly_and_yearly_over_a_year_boundary() {
        let times = [
            "2025-11-15T00:00:00Z",
            "2025-12-31T23:00:00Z",
            "2026-01-01T01:00:00Z",
            "2026-01-20T00:00:00Z",
        ];
        let r = Rules {
            monthly: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &r, "2026-02-01T00:00:00Z", "UTC"),
            [
                "2025-12-31T23:00:00Z monthly #2",
                "2026-01-20T00:00:00Z monthly #1"
            ]
        );
        // yearly: the newest of 2026 and of 2025 are already kept by monthly (periods seen,
        // not counted), so the rule falls short and keeps the oldest as [oldest].
        let r = Rules {
            monthly: Some(2),
            yearly: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &r, "2026-02-01T00:00:00Z", "UTC"),
            [
                "2025-11-15T00:00:00Z yearly[oldest] #1",
                "2025-12-31T23:00:00Z monthly #2",
                "2026-01-20T00:00:00Z monthly #1"
            ]
        );
    }

    #[test]
    fn rules_combine_without_double_counting() {
        let days = daily("2026-06-30T23:30:00Z", 60);
        let times: Vec<&str> = days.iter().map(String::as_str).collect();
        let r = Rules {
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(3),
            ..Default::default()
        };
        let k = kept(&times, &r, "2026-07-01T00:00:00Z", "UTC");
        // 7 daily (06-24..06-30); weekly skips ISO weeks 27 and 26 (seen through archives
        // daily kept) and keeps the Sundays 06-21, 06-14, 06-07, 05-31; monthly finds June
        // and May already kept, falls short and keeps the oldest archive (05-02).
        assert_eq!(k.iter().filter(|s| s.contains("daily #")).count(), 7);
        let weekly: Vec<&String> = k.iter().filter(|s| s.contains("weekly #")).collect();
        assert_eq!(
            weekly,
            [
                "2026-05-31T23:30:00Z weekly #4",
                "2026-06-07T23:30:00Z weekly #3",
                "2026-06-14T23:30:00Z weekly #2",
                "2026-06-21T23:30:00Z weekly #1"
            ]
        );
        assert!(
            k.contains(&"2026-05-02T23:30:00Z monthly[oldest] #1".to_string()),
            "{k:?}"
        );
        assert_eq!(k.len(), 12);
    }

    #[test]
    fn keep_last_counts_archives_made_in_the_same_second() {
        let times = [
            "2026-01-01T00:00:00.1Z",
            "2026-01-01T00:00:00.5Z",
            "2026-01-01T00:00:00.9Z",
        ];
        let r = Rules {
            last: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &r, "2026-02-01T00:00:00Z", "UTC"),
            [
                "2026-01-01T00:00:00.5Z last #2",
                "2026-01-01T00:00:00.9Z last #1"
            ]
        );
    }

    #[test]
    fn within_rejects_multibyte_units_and_overflow() {
        assert!(parse_within("7\u{fffd}").is_err());
        assert!(parse_within("\u{fffd}").is_err());
        assert!(parse_within(&format!("{}y", i64::MAX)).is_err());
        assert!(parse_within("9999999999999999d").is_err());
        assert_eq!(
            parse_within("2H").unwrap(),
            jiff::SignedDuration::from_hours(2)
        );
    }

    #[test]
    fn keep_within_counts_from_now() {
        let times = [
            "2026-01-01T00:00:00Z",
            "2026-01-09T00:00:00Z",
            "2026-01-10T00:00:00Z",
        ];
        let r = Rules {
            within: Some(parse_within("2d").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &r, "2026-01-10T12:00:00Z", "UTC"),
            [
                "2026-01-09T00:00:00Z within #2",
                "2026-01-10T00:00:00Z within #1"
            ]
        );
        assert!(parse_within("7x").is_err());
        assert!(parse_within("d").is_err());
        assert_eq!(
            parse_within("3H").unwrap(),
            jiff::SignedDuration::from_hours(3)
        );
    }

    #[test]
    fn protected_archives_are_kept_and_do_not_count() {
        let entry = |name: &str, start: &str, protected: bool| {
            (
                crate::repo::ChunkId([0; 32]),
                crate::repo::Manifest {
                    name: name.into(),
                    start: start.into(),
                    end: start.into(),
                    hostname: String::new(),
                    tool_version: String::new(),
                    metadata: BTreeMap::new(),
                    item_stream: Vec::new(),
                    stats: Default::default(),
                    notes: String::new(),
                    protected,
                    revision: 1,
                },
            )
        };
        let all = [
            entry("etc-1", "2026-01-01T00:00:00Z", true),
            entry("etc-2", "2026-01-02T00:00:00Z", false),
            entry("etc-3", "2026-01-03T00:00:00Z", true),
            entry("etc-4", "2026-01-04T00:00:00Z", false),
        ];
        let refs: Vec<_> = all.iter().collect();
        let r = Rules {
            last: Some(1),
            ..Default::default()
        };
        let d =
            decide_archives(&refs, &r, false, ts("2026-02-01T00:00:00Z"), &TimeZone::UTC).unwrap();
        let got: Vec<_> = d
            .iter()
            .map(|d| format!("{} {:?}", d.name, d.rule))
            .collect();
        // The newest protected archive does not take the one keep-last slot.
        assert_eq!(
            got,
            [
                "etc-1 Some(\"protected\")",
                "etc-2 None",
                "etc-3 Some(\"protected\")",
                "etc-4 Some(\"last #1\")"
            ]
        );
    }

    #[test]
    fn series_from_metadata_or_name() {
        let mut m = BTreeMap::new();
        assert_eq!(series_key("etc-2026-11-23", &m), "etc");
        assert_eq!(series_key("dump-100-2026_11_23-06_00_00", &m), "dump");
        m.insert("series".into(), "lxc-100".into());
        assert_eq!(series_key("dump-100-2026_11_23-06_00_00", &m), "lxc-100");
    }
}
