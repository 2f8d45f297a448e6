//! A detached container's log, `containers/<id>/container.log`: what the container
//! wrote to stdout and stderr (or its terminal), each line prefixed with the time
//! the supervisor read it (RFC 3339, UTC, nanoseconds) and a space, as Docker's
//! log drivers keep it. `agent logs` strips the prefix unless `--timestamps`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// `time` as `2026-11-30T13:28:00.123456789Z`.
pub fn rfc3339_nanos(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Writes the container's output with a timestamp at the start of every line.
pub struct TimestampedWriter<W: Write> {
    inner: W,
    at_line_start: bool,
}

impl<W: Write> TimestampedWriter<W> {
    /// A writer at the start of a line.
    pub fn new(inner: W) -> Self {
        TimestampedWriter {
            inner,
            at_line_start: true,
        }
    }
}

impl<W: Write> Write for TimestampedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let stamp = rfc3339_nanos(SystemTime::now());
        let mut out = Vec::with_capacity(buf.len() + 40);
        for line in buf.split_inclusive(|b| *b == b'\n') {
            if self.at_line_start {
                out.extend_from_slice(stamp.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(line);
            self.at_line_start = line.ends_with(b"\n");
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One line of the log split into its timestamp and what the container wrote
/// (with its newline). A line without a prefix is returned whole.
pub fn split_line(line: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match line.iter().position(|b| *b == b' ') {
        Some(i) if i >= 20 && line[..i].ends_with(b"Z") && line[4] == b'-' => {
            (Some(&line[..i]), &line[i + 1..])
        }
        _ => (None, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::new(1_764_509_280, 123_456_789);
        assert_eq!(rfc3339_nanos(t), "2025-11-30T13:28:00.123456789Z");
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_nanos(leap), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn lines_are_prefixed_across_partial_writes() {
        let mut w = TimestampedWriter::new(Vec::new());
        w.write_all(b"one\ntw").unwrap();
        w.write_all(b"o\n\nthree").unwrap();
        let text = String::from_utf8(w.inner).unwrap();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 4, "{text}");
        let content: Vec<&[u8]> = lines
            .iter()
            .map(|l| {
                let (ts, rest) = split_line(l.as_bytes());
                assert!(ts.is_some_and(|t| t.len() == 30), "{l}");
                rest
            })
            .collect();
        assert_eq!(content, [&b"one\n"[..], b"two\n", b"\n", b"three"]);
        assert_eq!(split_line(b"no stamp\n"), (None, &b"no stamp\n"[..]));
    }
}
