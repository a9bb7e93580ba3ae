//! Input adapters: where the messages that drive a run come from.
//!
//! Today: OHLCV bars from a CSV file, replayed in event time. The feed turns
//! each row into a message on the configured topic; nothing else in the host
//! knows what a bar is.

pub mod csv;

use crate::Envelope;
use crate::bindings::types::{Bar, Body};

/// The bundled sample: EUR/USD hourly bars (5,000 rows), so `garden run`
/// works with nothing on disk.
pub const BUNDLED_CSV: &str = include_str!("../../../data/EURUSD_H1.csv");
/// Name of the bundled sample in messages.
pub const BUNDLED_NAME: &str = "bundled EURUSD_H1.csv";
/// Symbol of the bundled sample.
pub const BUNDLED_SYMBOL: &str = "EURUSD";

/// The symbol a file's bars are published under: its name up to the first
/// `_` or `.` (`EURUSD_H1.csv` → `EURUSD`).
pub fn symbol_from_path(path: &std::path::Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("DATA");
    let symbol: String = stem.split(['_', '.']).next().unwrap_or(stem).to_string();
    if symbol.is_empty() {
        "DATA".into()
    } else {
        symbol
    }
}

/// The message for one row.
pub fn bar_message(topic: &str, symbol: &str, row: &csv::Row) -> Envelope {
    Envelope {
        topic: topic.to_string(),
        key: symbol.to_string(),
        seq: 0,
        time: row.time,
        source: "$feed".into(),
        body: Body::Bar(Bar {
            symbol: symbol.to_string(),
            time: row.time,
            open: row.open,
            high: row.high,
            low: row.low,
            close: row.close,
            volume: row.volume,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_is_the_file_name_up_to_underscore_or_dot() {
        assert_eq!(symbol_from_path("data/EURUSD_H1.csv".as_ref()), "EURUSD");
        assert_eq!(symbol_from_path("AAPL.daily.csv".as_ref()), "AAPL");
        assert_eq!(symbol_from_path("x/_.csv".as_ref()), "DATA");
    }

    #[test]
    fn bundled_sample_parses() {
        let rows = csv::read(BUNDLED_CSV.as_bytes(), BUNDLED_NAME).expect("bundled data is valid");
        assert_eq!(rows.len(), 5000);
    }
}
