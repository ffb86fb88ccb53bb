//! Retrying after a delay, which AMQP cannot do by itself: the copy waits out a per-message TTL
//! (`expiration`) in `geoprov.<queue>.delay`, which dead-letters it back to the main queue when
//! it expires (see "Holding and retrying" in the parent module).
//!
//! Not for: the copy's body and headers (see `consumer` and `publish`).

use std::time::Duration;

use lapin::types::FieldTable;

use super::fields::text_value;
use super::Names;

/// The arguments the delay queue is declared with: an expired message goes back to `main`
/// through the default exchange.
pub(super) fn delay_queue_arguments(main: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), text_value(""));
    args.insert("x-dead-letter-routing-key".into(), text_value(main));
    args
}

/// Where a copy given back for `delay` goes, and the `expiration` it carries: with a zero delay
/// straight to the main queue (its tail), otherwise to the delay queue with the delay as TTL.
pub(super) fn retry_route(names: &Names, delay: Duration) -> (String, Option<String>) {
    if delay.is_zero() {
        (names.main.clone(), None)
    } else {
        (names.delay.clone(), Some(expiration_ms(delay)))
    }
}

/// Milliseconds, rounded up, as the text `expiration` wants; at least 1.
fn expiration_ms(delay: Duration) -> String {
    let ms = delay.as_micros().div_ceil(1000).max(1);
    ms.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_rounds_up_to_whole_milliseconds() {
        assert_eq!(expiration_ms(Duration::from_micros(1)), "1");
        assert_eq!(expiration_ms(Duration::from_micros(1500)), "2");
        assert_eq!(expiration_ms(Duration::from_secs(3)), "3000");
    }
}
