//! The whole text of an error: its message and every cause under it, `: `-separated, for the
//! one line a user sees (libraries' `Display` often says only "error sending request" and keeps
//! the reason in `source()`).
//!
//! Not for: deciding what an error means (each module's own error type and classifier).

/// `error`'s message followed by each cause's that it does not already contain.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_are_appended_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(io);
        assert_eq!(super::chain(&outer), "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("Connection refused (os error 111)"));
        assert_eq!(
            super::chain(&e),
            "cannot connect: Connection refused (os error 111)"
        );
    }
}
