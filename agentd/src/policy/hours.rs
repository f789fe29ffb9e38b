//! `working_hours`: a daily window of local time on some days, and the local time now.

/// A `working_hours` value that is not like `"08:00-19:00 Mon-Fri"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not like \"08:00-19:00 Mon-Fri\"")]
pub struct WorkingHoursError(String);

/// `"08:00-19:00 Mon-Fri"`: a daily window of local time, on some days (all, if none
/// are given). A window that ends before it starts runs past midnight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingHours {
    start: u32,
    end: u32,
    /// Bit d set: day d (0 = Sunday) is a working day.
    days: u8,
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

fn day(name: &str) -> Option<u8> {
    let n = name.to_ascii_lowercase();
    DAYS.iter().position(|d| n.starts_with(d)).map(|i| i as u8)
}

impl WorkingHours {
    pub fn parse(text: &str) -> Result<WorkingHours, WorkingHoursError> {
        let bad = || WorkingHoursError(text.to_owned());
        let mut parts = text.split_whitespace();
        let (from, to) = parts
            .next()
            .and_then(|r| r.split_once('-'))
            .ok_or_else(bad)?;
        let (start, end) = (minutes(from).ok_or_else(bad)?, minutes(to).ok_or_else(bad)?);
        let mut days = 0u8;
        match parts.next() {
            None => days = 0x7f,
            Some(spec) => {
                for item in spec.split(',') {
                    match item.split_once('-') {
                        Some((a, b)) => {
                            let (a, b) = (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?);
                            let mut d = a;
                            loop {
                                days |= 1 << d;
                                if d == b {
                                    break;
                                }
                                d = (d + 1) % 7;
                            }
                        }
                        None => days |= 1 << day(item).ok_or_else(bad)?,
                    }
                }
            }
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(WorkingHours { start, end, days })
    }

    /// Whether `weekday` (0 = Sunday) at `minute` of the day is inside.
    pub fn contains(&self, weekday: u8, minute: u32) -> bool {
        let on = |d: u8| self.days & (1 << (d % 7)) != 0;
        if self.start <= self.end {
            on(weekday) && minute >= self.start && minute < self.end
        } else {
            // Past midnight: the late part belongs to the day it started on.
            (on(weekday) && minute >= self.start) || (on((weekday + 6) % 7) && minute < self.end)
        }
    }
}

/// The local weekday (0 = Sunday) and minute of the day, now. Debug builds honour
/// `JITC_TEST_LOCAL_TIME="Sat 03:00"`, so tests need not wait for the night.
pub fn local_now() -> (u8, u32) {
    #[cfg(debug_assertions)]
    if let Ok(fake) = std::env::var("JITC_TEST_LOCAL_TIME")
        && let Some((d, t)) = fake.split_once(' ')
        && let (Some(d), Some(m)) = (day(d), minutes(t))
    {
        return (d, m);
    }
    // The system's time zone (TZ, else /etc/localtime), as jiff finds it; UTC if none.
    let now = jiff::Zoned::now();
    let weekday = now.weekday().to_sunday_zero_offset();
    let minute = u32::try_from(i32::from(now.hour()) * 60 + i32::from(now.minute())).unwrap_or(0);
    (u8::try_from(weekday).unwrap_or(0), minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_hours() {
        let w = WorkingHours::parse("08:00-19:00 Mon-Fri").unwrap();
        assert!(w.contains(1, 8 * 60));
        assert!(!w.contains(1, 19 * 60));
        assert!(!w.contains(6, 10 * 60), "Saturday");
        assert!(!w.contains(0, 10 * 60), "Sunday");
        let night = WorkingHours::parse("22:00-06:00").unwrap();
        assert!(
            night.contains(3, 23 * 60) && night.contains(3, 5 * 60) && !night.contains(3, 12 * 60)
        );
        let wrap = WorkingHours::parse("09:00-17:00 Sat-Mon").unwrap();
        assert!(
            wrap.contains(6, 600)
                && wrap.contains(0, 600)
                && wrap.contains(1, 600)
                && !wrap.contains(2, 600)
        );
        let some = WorkingHours::parse("10:00-11:00 Mon,Wed").unwrap();
        assert!(some.contains(3, 630) && !some.contains(2, 630));
        for bad in [
            "",
            "8-19",
            "08:00-19:00 Someday",
            "25:00-26:00",
            "08:00-19:00 Mon extra",
        ] {
            assert!(WorkingHours::parse(bad).is_err(), "{bad}");
        }
    }
}
