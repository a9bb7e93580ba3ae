//! Input adapters: where the messages that drive a run come from.
//!
//! Today: OHLCV bars from a CSV file, replayed in event time. The feed turns
//! each row into a message on the configured topic; nothing else in the host
//! knows what a bar is.

pub mod csv;
pub mod timeline;

pub use timeline::Timeline;

use crate::Envelope;
use crate::bindings::types::{Bar, Body};

/// What is wrong with a bar's prices or volume: the one check every bar
/// passes, whether it comes from a CSV file or from a Redis stream.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum BarProblem {
    /// A price is zero or negative.
    #[error("{field} {value} is not positive; prices must be greater than zero")]
    NonPositivePrice {
        /// `open`, `high`, `low` or `close`.
        field: &'static str,
        /// The price.
        value: f64,
    },
    /// The volume is negative.
    #[error("volume {0} is negative; volume must be zero or more")]
    NegativeVolume(f64),
    /// High is below low.
    #[error("high {high} is below low {low}")]
    HighBelowLow {
        /// The high.
        high: f64,
        /// The low.
        low: f64,
    },
    /// Open or close lies outside [low, high].
    #[error("{field} {value} is outside the bar's range, low {low} to high {high}")]
    OutsideRange {
        /// `open` or `close`.
        field: &'static str,
        /// The price.
        value: f64,
        /// The low.
        low: f64,
        /// The high.
        high: f64,
    },
}

/// Check a bar: every price positive, volume not negative, high not below
/// low, open and close within [low, high]. Values are finite already
/// (each reader refuses what does not parse as a finite number).
pub fn check_bar(
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
) -> Result<(), BarProblem> {
    for (field, value) in [
        ("open", open),
        ("high", high),
        ("low", low),
        ("close", close),
    ] {
        if value <= 0.0 {
            return Err(BarProblem::NonPositivePrice { field, value });
        }
    }
    if volume < 0.0 {
        return Err(BarProblem::NegativeVolume(volume));
    }
    if high < low {
        return Err(BarProblem::HighBelowLow { high, low });
    }
    for (field, value) in [("open", open), ("close", close)] {
        if value < low || value > high {
            return Err(BarProblem::OutsideRange {
                field,
                value,
                low,
                high,
            });
        }
    }
    Ok(())
}

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
        trace: crate::message::Trace::now(),
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
