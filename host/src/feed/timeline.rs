//! Several instruments on one timeline: each file's rows merged by time,
//! each bar tagged with its symbol.
//!
//! Invariants: bars are in time order; bars of equal time keep the order
//! of their files (the first file's first), so a replay of the same files
//! is the same replay; every bar's symbol index is valid; one file gives
//! exactly that file's rows.

use super::csv::Row;

/// Bars of several symbols in event-time order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Timeline {
    /// The symbols, in the order their files were given.
    pub symbols: Vec<String>,
    /// (index into `symbols`, bar), by time.
    pub bars: Vec<(usize, Row)>,
}

impl Timeline {
    /// One symbol's rows as they are.
    pub fn single(symbol: &str, rows: &[Row]) -> Self {
        Timeline {
            symbols: vec![symbol.to_string()],
            bars: rows.iter().map(|r| (0, *r)).collect(),
        }
    }

    /// Merge each symbol's rows by time, stable in file order.
    pub fn merge(series: Vec<(String, Vec<Row>)>) -> Self {
        let mut symbols = Vec::with_capacity(series.len());
        let mut bars = Vec::with_capacity(series.iter().map(|(_, r)| r.len()).sum());
        for (i, (symbol, rows)) in series.into_iter().enumerate() {
            symbols.push(symbol);
            bars.extend(rows.into_iter().map(|r| (i, r)));
        }
        // A stable sort keeps file order among bars of equal time, and
        // each file's own order.
        bars.sort_by_key(|(_, r)| r.time);
        Timeline { symbols, bars }
    }

    /// The symbol of a bar.
    pub fn symbol(&self, index: usize) -> &str {
        self.symbols.get(index).map_or("", String::as_str)
    }

    /// Every bar, without its symbol (for counting and timing).
    pub fn rows(&self) -> Vec<Row> {
        self.bars.iter().map(|(_, r)| *r).collect()
    }

    /// One symbol's rows, in time order.
    pub fn rows_of(&self, index: usize) -> Vec<Row> {
        self.bars
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, r)| *r)
            .collect()
    }

    /// Bars in all.
    pub fn len(&self) -> usize {
        self.bars.len()
    }

    /// No bars.
    pub fn is_empty(&self) -> bool {
        self.bars.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(time: i64, close: f64) -> Row {
        Row {
            time,
            open: close,
            high: close,
            low: close,
            close,
            volume: 0.0,
        }
    }

    #[test]
    fn files_merge_by_time_and_ties_keep_file_order() {
        let a = vec![row(1, 1.0), row(3, 1.1), row(5, 1.2)];
        let b = vec![row(1, 2.0), row(2, 2.1), row(5, 2.2), row(6, 2.3)];
        let t = Timeline::merge(vec![("A".into(), a.clone()), ("B".into(), b.clone())]);
        let order: Vec<(&str, i64)> = t.bars.iter().map(|(i, r)| (t.symbol(*i), r.time)).collect();
        assert_eq!(
            order,
            [
                ("A", 1),
                ("B", 1),
                ("B", 2),
                ("A", 3),
                ("A", 5),
                ("B", 5),
                ("B", 6)
            ]
        );
        assert_eq!(t.rows_of(0), a);
        assert_eq!(t.rows_of(1), b);
        assert_eq!(t.len(), 7);
    }

    #[test]
    fn one_file_is_that_file() {
        let a = vec![row(1, 1.0), row(2, 1.1)];
        let t = Timeline::merge(vec![("A".into(), a.clone())]);
        assert_eq!(t, Timeline::single("A", &a));
        assert_eq!(t.rows(), a);
    }
}
