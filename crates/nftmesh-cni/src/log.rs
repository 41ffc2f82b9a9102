//! The plugin's log: one line per event appended to `log_file`, at or above `log_level`.
//! Logging never fails a command: a log file that cannot be written is left alone (the
//! command's result on stdout is what the runtime acts on).

use crate::config::LogLevel;
use std::io::Write;
use std::path::PathBuf;

/// Where and how much to log; logs nothing without a file.
#[derive(Debug, Clone, Default)]
pub struct Log {
    file: Option<PathBuf>,
    level: LogLevel,
    /// `COMMAND CONTAINERID` of the command being run.
    context: String,
}

impl Log {
    /// A log to `file` at `level`, its lines prefixed with `context`.
    pub fn new(file: Option<PathBuf>, level: LogLevel, context: String) -> Self {
        Log {
            file,
            level,
            context,
        }
    }

    /// Append `message` at `level`.
    pub fn at(&self, level: LogLevel, message: &str) {
        let Some(path) = &self.file else { return };
        if level > self.level {
            return;
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let line = format!("{secs:.3} {level:?} {}: {message}\n", self.context);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// [`Log::at`] `Info`.
    pub fn info(&self, message: &str) {
        self.at(LogLevel::Info, message)
    }
}
