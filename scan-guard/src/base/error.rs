//! Error classes that decide the exit code: bad input from the user is a usage
//! error (exit 2); everything else is a runtime failure (exit 1).

use std::fmt;

/// The user asked for something that cannot work as given (bad interface name,
/// pin directory not on a bpffs, malformed address, ...). Exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for returning a usage error from an `anyhow` function.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Exit code for an error chain: 2 when any cause is a usage error, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<UsageError>()) {
        2
    } else {
        1
    }
}
