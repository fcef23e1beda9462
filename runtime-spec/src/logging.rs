//! Error reporting with runc's contract, which containerd and podman parse:
//!
//! * `--log FILE`: one logrus-style line per message is appended to FILE,
//!   `{"level":"error","msg":"…","time":"RFC3339"}` with `--log-format json`
//!   or `time="…" level=error msg="…"` with text; errors are also printed,
//!   bare, to stderr;
//! * no `--log`: the formatted line goes to stderr only.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::cli::{GlobalOpts, LogFormat};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Error => "error",
        }
    }
}

/// Where and how log lines go.
#[derive(Clone, Debug, Default)]
pub struct Logger {
    file: Option<PathBuf>,
    format: LogFormat,
    debug: bool,
}

impl Logger {
    pub fn new(global: &GlobalOpts) -> Self {
        Self {
            file: global.log.clone(),
            format: global.log_format,
            debug: global.debug,
        }
    }

    /// Before the global flags are known: text lines on stderr.
    pub fn stderr() -> Self {
        Self::default()
    }

    pub fn error(&self, msg: &str) {
        self.log(Level::Error, msg);
    }

    /// Only with `--debug`.
    pub fn debug(&self, msg: &str) {
        if self.debug {
            self.log(Level::Debug, msg);
        }
    }

    fn log(&self, level: Level, msg: &str) {
        let line = format_line(self.format, level, msg, &now_rfc3339());
        let Some(path) = &self.file else {
            let _ = std::io::stderr().write_all(line.as_bytes());
            return;
        };
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot write to log file {}: {e}", path.display());
        }
        if level == Level::Error {
            eprintln!("{msg}");
        }
    }
}

/// One log line, newline-terminated, as logrus formats it.
pub fn format_line(format: LogFormat, level: Level, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            // serde_json's map is sorted, like logrus' keys: level, msg, time.
            let mut map = serde_json::Map::new();
            map.insert("level".into(), level.as_str().into());
            map.insert("msg".into(), msg.into());
            map.insert("time".into(), time.into());
            format!("{}\n", serde_json::Value::Object(map))
        }
        LogFormat::Text => format!(
            "time={} level={} msg={}\n",
            logfmt_value(time),
            level.as_str(),
            logfmt_value(msg)
        ),
    }
}

/// logrus' text formatter: bare when only "safe" characters, else Go-quoted.
fn logfmt_value(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-._/@^+".contains(c);
    if s.chars().all(safe) {
        s.to_string()
    } else {
        go_quote(s)
    }
}

/// Go's `strconv.Quote` (`%q`).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The current local time in RFC 3339 (Go's `time.RFC3339`).
pub fn now_rfc3339() -> String {
    // SAFETY: time(NULL) only returns the clock; localtime_r writes into the
    // zeroed `tm` we own and returns NULL on failure, which is checked.
    let tm = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return "1970-01-01T00:00:00Z".into();
        }
        tm
    };
    format_tm(&tm)
}

fn format_tm(tm: &libc::tm) -> String {
    let offset = tm.tm_gmtoff;
    let zone = if offset == 0 {
        "Z".to_string()
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.abs();
        format!("{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60)
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{zone}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-01-02T03:04:05Z";

    #[test]
    fn json_line_matches_logrus() {
        let line = format_line(LogFormat::Json, Level::Error, "container does not exist", T);
        assert_eq!(
            line,
            "{\"level\":\"error\",\"msg\":\"container does not exist\",\"time\":\"2026-01-02T03:04:05Z\"}\n"
        );
    }

    #[test]
    fn text_line_matches_logrus() {
        let line = format_line(LogFormat::Text, Level::Error, "container does not exist", T);
        assert_eq!(
            line,
            "time=\"2026-01-02T03:04:05Z\" level=error msg=\"container does not exist\"\n"
        );
        let line = format_line(LogFormat::Text, Level::Debug, "plain", T);
        assert_eq!(
            line,
            "time=\"2026-01-02T03:04:05Z\" level=debug msg=plain\n"
        );
    }

    #[test]
    fn quoting_escapes_like_go() {
        assert_eq!(go_quote("a \"b\"\n\\"), "\"a \\\"b\\\"\\n\\\\\"");
        assert_eq!(go_quote("\x01é"), "\"\\x01é\"");
    }

    #[test]
    fn rfc3339_offsets() {
        // SAFETY: an all-zero libc::tm is a valid value.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = 126;
        tm.tm_mon = 10;
        tm.tm_mday = 23;
        tm.tm_hour = 9;
        tm.tm_min = 5;
        tm.tm_sec = 7;
        assert_eq!(format_tm(&tm), "2026-11-23T09:05:07Z");
        tm.tm_gmtoff = -(5 * 3600 + 30 * 60);
        assert_eq!(format_tm(&tm), "2026-11-23T09:05:07-05:30");
        tm.tm_gmtoff = 3600;
        assert_eq!(format_tm(&tm), "2026-11-23T09:05:07+01:00");
        assert!(now_rfc3339().starts_with('2'));
    }
}
