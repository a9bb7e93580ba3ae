//! Reader for OHLCV price history stored as CSV, as written by brokers, data
//! vendors, spreadsheet programs and pandas (`DataFrame.to_csv`).
//!
//! Files found in the wild disagree on nearly everything except the five
//! numbers per bar, so the reader is lenient about layout and strict about
//! content:
//!
//! * The first row must be a header. Names are matched after trimming and
//!   ignoring case, columns may come in any order, and unknown columns (such
//!   as `Adj Close` or `amount`) are ignored. When a name appears twice, the
//!   first occurrence is used.
//! * The timestamp column is the first one named `Date`, `Datetime`, `Time` or
//!   `Timestamp`; failing that, a first column with an empty name (the index
//!   column pandas writes) is taken.
//! * `Open`, `High`, `Low` and `Close` are required. `Volume` is optional and
//!   reads as `0.0` when the column is absent. `Adj Close` is never used in
//!   place of `Close`.
//! * Timestamps may be `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.fff]]` (or with `T`
//!   in place of the space) optionally followed by `Z` or an offset such as
//!   `+02:00`, or `YYYYMMDD`. Times without an offset are taken as UTC; times
//!   with one are converted to UTC. Precision below a millisecond is dropped.
//! * Rows must be in strictly increasing time order, prices must be finite and
//!   positive, volume finite and not negative, high not below low, and open
//!   and close within [low, high]: `feed::check_bar`, the check bars from a
//!   Redis stream pass too.
//!
//! Every problem is reported as a [`CsvError`] naming the file, the line (as a
//! text editor numbers it, so the header is line 1) and the column, together
//! with a hint on how to fix the file. Nothing here panics on bad input.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use ::csv::{ByteRecord, ReaderBuilder};
use chrono::{DateTime, NaiveDate, SecondsFormat};

/// At most this many characters of text taken from the file are shown in an
/// error message; the rest is replaced by `…`.
pub const ECHO_MAX_CHARS: usize = 60;

/// How much of the file is looked at to choose the delimiter: the header line,
/// or as much of it as fits here.
const SNIFF_BYTES: usize = 64 * 1024;

/// One parsed row, prices as given; time in milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Start of the bar, in milliseconds since the Unix epoch, UTC.
    pub time: i64,
    /// Opening price.
    pub open: f64,
    /// Highest price; never below `low`.
    pub high: f64,
    /// Lowest price.
    pub low: f64,
    /// Closing price (the `Close` column, never `Adj Close`).
    pub close: f64,
    /// Traded volume; `0.0` when the file has no `Volume` column.
    pub volume: f64,
}

/// Why a CSV file could not be read. Every message names the file and, where
/// it applies, the line and column, and says how to fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {error}; check that the file exists and is readable")]
    Io {
        /// The file, as given by the caller.
        path: String,
        /// The underlying failure. It is part of the message rather than a
        /// `source` so that error chains do not print it twice.
        error: std::io::Error,
    },

    /// The file has no header row at all.
    #[error(
        "{path} is empty; it needs a header row such as `Date,Open,High,Low,Close,Volume` \
         followed by one row per bar"
    )]
    Empty {
        /// The file, as given by the caller.
        path: String,
    },

    /// The file has a header row but no data rows.
    #[error("{path} has a header (line {line}) but no data rows; add at least one row below it")]
    NoRows {
        /// The file, as given by the caller.
        path: String,
        /// Line of the header.
        line: u64,
    },

    /// No column of the header can hold the timestamp.
    #[error(
        "{path}, line {line}: no timestamp column in header `{header}`; name it Date, Datetime, \
         Time or Timestamp (any case), or leave the first header cell empty"
    )]
    NoTimeColumn {
        /// The file, as given by the caller.
        path: String,
        /// Line of the header.
        line: u64,
        /// The header as found, to show what was looked at.
        header: String,
    },

    /// One of Open, High, Low or Close is missing from the header.
    #[error(
        "{path}, line {line}: the header has no `{column}` column; add it (names are not \
         case-sensitive)"
    )]
    MissingColumn {
        /// The file, as given by the caller.
        path: String,
        /// Line of the header.
        line: u64,
        /// The missing column, capitalised: `Open`, `High`, `Low` or `Close`.
        column: &'static str,
    },

    /// A row has a different number of fields from the header.
    #[error(
        "{path}, line {line}: the row has {found} fields but the header has {expected}; give \
         every row one value per header column (look for a stray or missing comma)"
    )]
    FieldCount {
        /// The file, as given by the caller.
        path: String,
        /// Line where the row starts.
        line: u64,
        /// Number of header columns.
        expected: usize,
        /// Number of fields in the row.
        found: usize,
    },

    /// The CSV parser rejected the text for a reason other than I/O or field
    /// count. The current settings accept any byte sequence, so this is a
    /// guard against parser changes rather than something expected.
    #[error("{path}, line {line}: malformed CSV ({reason}); save the file as comma-separated text")]
    Malformed {
        /// The file, as given by the caller.
        path: String,
        /// Line where the parser stopped.
        line: u64,
        /// What the parser reported.
        reason: String,
    },

    /// A price or volume cell is not a finite number.
    #[error(
        "{path}, line {line}, column `{column}`: {value:?} is not a finite number; write a plain \
         decimal such as 1.0716"
    )]
    BadNumber {
        /// The file, as given by the caller.
        path: String,
        /// Line where the row starts.
        line: u64,
        /// Header name of the column, as written in the file.
        column: String,
        /// The cell as found.
        value: String,
    },

    /// A price is zero or negative.
    #[error(
        "{path}, line {line}, column `{column}`: price {value} is not positive; prices must be \
         greater than zero, so fix or remove the row"
    )]
    NonPositivePrice {
        /// The file, as given by the caller.
        path: String,
        /// Line where the row starts.
        line: u64,
        /// Header name of the column, as written in the file.
        column: String,
        /// The price found.
        value: f64,
    },

    /// A volume is negative.
    #[error(
        "{path}, line {line}, column `{column}`: volume {value} is negative; volume must be zero \
         or more, so fix or remove the row"
    )]
    NegativeVolume {
        /// The file, as given by the caller.
        path: String,
        /// Line where the row starts.
        line: u64,
        /// Header name of the column, as written in the file.
        column: String,
        /// The volume found.
        value: f64,
    },

    /// A timestamp cell is in none of the accepted formats, or names a date or
    /// time that does not exist.
    #[error(
        "{path}, line {line}, column `{column}`: cannot read timestamp {value:?}; use \
         YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS[.fff]] (space or `T` between date and time, \
         optionally followed by `Z` or an offset such as +02:00), or YYYYMMDD"
    )]
    BadTimestamp {
        /// The file, as given by the caller.
        path: String,
        /// Line where the row starts.
        line: u64,
        /// Header name of the column, as written in the file.
        column: String,
        /// The cell as found.
        value: String,
    },

    /// A row is earlier than the row before it.
    #[error(
        "{path}, line {line}: time {} is earlier than {} on line {previous_line}; sort the rows \
         by time, oldest first",
        utc(.time),
        utc(.previous)
    )]
    OutOfOrder {
        /// The file, as given by the caller.
        path: String,
        /// Line where the row starts.
        line: u64,
        /// Time of this row, milliseconds since the epoch, UTC.
        time: i64,
        /// Time of the row before, milliseconds since the epoch, UTC.
        previous: i64,
        /// Line of the row before.
        previous_line: u64,
    },

    /// A row has the same time as the row before it.
    #[error(
        "{path}, line {line}: time {} repeats the time on line {previous_line}; remove one of \
         the two rows",
        utc(.time)
    )]
    DuplicateTime {
        /// The file, as given by the caller.
        path: String,
        /// Line where the row starts.
        line: u64,
        /// The repeated time, milliseconds since the epoch, UTC.
        time: i64,
        /// Line of the row with the same time.
        previous_line: u64,
    },

    /// High is below low.
    #[error(
        "{path}, line {line}: high {high} is below low {low}; check whether the High and Low \
         columns are swapped"
    )]
    HighBelowLow {
        /// The file, as given by the caller.
        path: String,
        /// Line where the row starts.
        line: u64,
        /// The high found.
        high: f64,
        /// The low found.
        low: f64,
    },

    /// Open or close lies outside the bar's [low, high].
    #[error(
        "{path}, line {line}, column `{column}`: {value} is outside the bar's range, low {low} to \
         high {high}; fix or remove the row"
    )]
    OutsideRange {
        /// The file, as given by the caller.
        path: String,
        /// Line where the row starts.
        line: u64,
        /// Header name of the column, as written in the file.
        column: String,
        /// The price found.
        value: f64,
        /// The row's low.
        low: f64,
        /// The row's high.
        high: f64,
    },
}

/// Reads the OHLCV file at `path`; see the module documentation for the
/// accepted layout. The path, as displayed, names the file in errors.
pub fn read_path(path: &Path) -> Result<Vec<Row>, CsvError> {
    let source = path.display().to_string();
    match std::fs::File::open(path) {
        Ok(file) => read(file, &source),
        Err(error) => Err(CsvError::Io {
            path: source,
            error,
        }),
    }
}

/// Reads OHLCV CSV text from `input`; see the module documentation for the
/// accepted layout. `source` is the name used in errors (the file path).
///
/// `input` does not need to be buffered: the CSV reader buffers internally.
pub fn read<R: Read>(input: R, source: &str) -> Result<Vec<Row>, CsvError> {
    // Flexible so that a short or long row becomes our own error with both
    // counts in it, instead of the parser's less helpful one.
    let mut input = BufReader::with_capacity(SNIFF_BYTES, input);
    let delimiter = match input.fill_buf() {
        Ok(start) => sniff_delimiter(start),
        Err(error) => {
            return Err(CsvError::Io {
                path: source.to_owned(),
                error,
            });
        }
    };
    let mut reader = ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(LineTracker::new(input));

    let header = match reader.byte_headers() {
        Ok(header) => header.clone(),
        Err(error) => return Err(parser_error(error, source, 1)),
    };
    let names: Vec<String> = header.iter().map(header_name).collect();
    // A file of blank lines yields no header at all; one of spaces (or only a
    // byte-order mark) yields a single blank name.
    if names.len() <= 1 && names.iter().all(String::is_empty) {
        return Err(CsvError::Empty {
            path: source.to_owned(),
        });
    }
    let header_line = match header.position() {
        Some(position) => reader.get_mut().line_at(position.byte()),
        None => 1,
    };
    let columns = Columns::find(&names, &header, source, header_line)?;

    let mut rows = Vec::new();
    // One record reused for every row keeps the loop free of allocation.
    let mut record = ByteRecord::new();
    let mut previous: Option<(i64, u64)> = None;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                let line = reader.get_ref().current_line();
                return Err(parser_error(error, source, line));
            }
        }
        let tracker = reader.get_mut();
        let line = match record.position() {
            Some(position) => tracker.line_at(position.byte()),
            None => tracker.current_line(),
        };
        if record.len() != header.len() {
            return Err(CsvError::FieldCount {
                path: source.to_owned(),
                line,
                expected: header.len(),
                found: record.len(),
            });
        }
        let cells = Cells {
            record: &record,
            header: &header,
            source,
            line,
            decimal_comma: delimiter == b';',
        };

        let time = cells.time(columns.time)?;
        let open = cells.number(columns.open)?;
        let high = cells.number(columns.high)?;
        let low = cells.number(columns.low)?;
        let close = cells.number(columns.close)?;
        let volume = match columns.volume {
            Some(index) => cells.number(index)?,
            None => 0.0,
        };
        super::check_bar(open, high, low, close, volume)
            .map_err(|problem| cells.bar_error(&columns, problem))?;
        if let Some((previous_time, previous_line)) = previous {
            if time == previous_time {
                return Err(CsvError::DuplicateTime {
                    path: source.to_owned(),
                    line,
                    time,
                    previous_line,
                });
            }
            if time < previous_time {
                return Err(CsvError::OutOfOrder {
                    path: source.to_owned(),
                    line,
                    time,
                    previous: previous_time,
                    previous_line,
                });
            }
        }
        previous = Some((time, line));
        rows.push(Row {
            time,
            open,
            high,
            low,
            close,
            volume,
        });
    }

    if rows.is_empty() {
        return Err(CsvError::NoRows {
            path: source.to_owned(),
            line: header_line,
        });
    }
    Ok(rows)
}

/// Passes bytes through to the CSV parser while noting where lines break,
/// so that errors give the line a text editor shows.
///
/// The parser's own line numbers are not usable for this: it reports a record
/// as starting just after the first byte of the previous terminator, so after
/// a CRLF, or before blank lines it then skips, its count lags behind, and a
/// lone `\r` is never counted. Its byte offset of that point is exact, though,
/// so [`LineTracker::line_at`] takes it and walks past the line-break bytes
/// found there, counting every break on the way.
struct LineTracker<R> {
    inner: R,
    /// Bytes passed through so far.
    offset: u64,
    /// Whether the last byte passed through was `\r`, so that a `\n` read
    /// in the next chunk is known to finish a CRLF rather than start a line.
    after_cr: bool,
    /// Offsets of `\r` and `\n` bytes not yet behind a queried position,
    /// each with whether it ends a line (the `\n` of a CRLF does not). Only
    /// the current record and what the parser has buffered ahead are held.
    breaks: VecDeque<(u64, bool)>,
    /// Line ends before the last queried position.
    lines_before: u64,
}

impl<R> LineTracker<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            after_cr: false,
            breaks: VecDeque::new(),
            lines_before: 0,
        }
    }

    /// The 1-based line of the record the parser reports at byte `offset`.
    /// Offsets must not decrease from one call to the next, which holds as
    /// records are read in order.
    fn line_at(&mut self, offset: u64) -> u64 {
        let mut start = offset;
        while let Some(&(at, ends_line)) = self.breaks.front() {
            if at > start {
                break;
            }
            // A break byte where the record supposedly starts is the rest of
            // the previous terminator or a skipped blank line.
            if at == start {
                start += 1;
            }
            if ends_line {
                self.lines_before += 1;
            }
            self.breaks.pop_front();
        }
        self.current_line()
    }

    /// The line of the last queried position; a best guess for failures
    /// that come without a position.
    fn current_line(&self) -> u64 {
        self.lines_before + 1
    }
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buf)?;
        // `get` rather than indexing: a faulty reader may claim more bytes
        // than the buffer holds.
        for &byte in buf.get(..count).unwrap_or_default() {
            match byte {
                b'\r' => {
                    self.breaks.push_back((self.offset, true));
                    self.after_cr = true;
                }
                b'\n' => {
                    self.breaks.push_back((self.offset, !self.after_cr));
                    self.after_cr = false;
                }
                _ => self.after_cr = false,
            }
            self.offset += 1;
        }
        Ok(count)
    }
}

/// Indices of the columns used, resolved once from the header.
struct Columns {
    time: usize,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: Option<usize>,
}

impl Columns {
    /// Resolves the columns from normalised header names (see [`header_name`]);
    /// `header` is the raw row, shown when no timestamp column is found.
    fn find(
        names: &[String],
        header: &ByteRecord,
        source: &str,
        line: u64,
    ) -> Result<Self, CsvError> {
        let position = |wanted: &str| names.iter().position(|name| name == wanted);
        let named_time = names
            .iter()
            .position(|name| matches!(name.as_str(), "date" | "datetime" | "time" | "timestamp"));
        // A named column wins over an unnamed first one: pandas writes its
        // row counter under an empty name even when a `Date` column follows.
        let unnamed_first = names.first().filter(|name| name.is_empty()).map(|_| 0);
        let Some(time) = named_time.or(unnamed_first) else {
            return Err(CsvError::NoTimeColumn {
                path: source.to_owned(),
                line,
                header: shown(
                    &header
                        .iter()
                        .map(String::from_utf8_lossy)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            });
        };
        let required = |wanted: &str, column: &'static str| {
            position(wanted).ok_or_else(|| CsvError::MissingColumn {
                path: source.to_owned(),
                line,
                column,
            })
        };
        Ok(Self {
            time,
            open: required("open", "Open")?,
            high: required("high", "High")?,
            low: required("low", "Low")?,
            close: required("close", "Close")?,
            volume: position("volume"),
        })
    }
}

/// The cells of one data row, with what is needed to report a bad one.
struct Cells<'a> {
    record: &'a ByteRecord,
    header: &'a ByteRecord,
    source: &'a str,
    line: u64,
    /// Whether `1,5` means one and a half (the file is `;`-separated).
    decimal_comma: bool,
}

impl Cells<'_> {
    /// The trimmed text of a cell; invalid UTF-8 reads as text no parser
    /// accepts, so it is reported like any other bad value.
    fn text(&self, index: usize) -> &str {
        std::str::from_utf8(self.record.get(index).unwrap_or_default())
            .map_or("\u{fffd}", str::trim)
    }

    /// The column name as written in the file, for messages.
    fn column(&self, index: usize) -> String {
        let name = String::from_utf8_lossy(self.header.get(index).unwrap_or_default());
        let name = name.trim().trim_start_matches('\u{feff}').trim();
        if name.is_empty() {
            "(unnamed first column)".to_owned()
        } else {
            shown(name)
        }
    }

    /// The cell as found, for messages: lossy so bad bytes still show, and
    /// cut so a huge cell does not flood the terminal.
    fn raw(&self, index: usize) -> String {
        cut(String::from_utf8_lossy(self.record.get(index).unwrap_or_default()).trim())
    }

    fn time(&self, index: usize) -> Result<i64, CsvError> {
        parse_timestamp(self.text(index)).ok_or_else(|| CsvError::BadTimestamp {
            path: self.source.to_owned(),
            line: self.line,
            column: self.column(index),
            value: self.raw(index),
        })
    }

    fn number(&self, index: usize) -> Result<f64, CsvError> {
        let text = self.text(index);
        let parsed = match text.parse::<f64>() {
            Err(_)
                if self.decimal_comma && text.matches(',').count() == 1 && !text.contains('.') =>
            {
                text.replacen(',', ".", 1).parse::<f64>()
            }
            parsed => parsed,
        };
        match parsed {
            Ok(value) if value.is_finite() => Ok(value),
            _ => Err(CsvError::BadNumber {
                path: self.source.to_owned(),
                line: self.line,
                column: self.column(index),
                value: self.raw(index),
            }),
        }
    }

    /// The error for a row whose bar fails [`super::check_bar`], naming
    /// the column where it has one.
    fn bar_error(&self, columns: &Columns, problem: super::BarProblem) -> CsvError {
        use super::BarProblem;
        let column = |field: &str| {
            let index = match field {
                "open" => Some(columns.open),
                "high" => Some(columns.high),
                "low" => Some(columns.low),
                "close" => Some(columns.close),
                _ => columns.volume,
            };
            index.map_or_else(|| field.to_string(), |i| self.column(i))
        };
        let (path, line) = (self.source.to_owned(), self.line);
        match problem {
            BarProblem::NonPositivePrice { field, value } => CsvError::NonPositivePrice {
                path,
                line,
                column: column(field),
                value,
            },
            BarProblem::NegativeVolume(value) => CsvError::NegativeVolume {
                path,
                line,
                column: column("volume"),
                value,
            },
            BarProblem::HighBelowLow { high, low } => CsvError::HighBelowLow {
                path,
                line,
                high,
                low,
            },
            BarProblem::OutsideRange {
                field,
                value,
                low,
                high,
            } => CsvError::OutsideRange {
                path,
                line,
                column: column(field),
                value,
                low,
                high,
            },
        }
    }
}

/// Picks the delimiter the header line uses most among `,`, `;` and tab,
/// counting only outside double quotes; `,` on a tie or when there is none.
fn sniff_delimiter(start: &[u8]) -> u8 {
    let line = start
        .split(|&byte| byte == b'\n' || byte == b'\r')
        .find(|line| line.iter().any(|byte| !byte.is_ascii_whitespace()))
        .unwrap_or_default();
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for &byte in line {
        if byte == b'"' {
            quoted = !quoted;
        } else if !quoted {
            for (delimiter, count) in &mut counts {
                if byte == *delimiter {
                    *count += 1;
                }
            }
        }
    }
    // The first of the most used wins, so a tie keeps the comma.
    let best = counts
        .iter()
        .fold(counts[0], |best, &c| if c.1 > best.1 { c } else { best });
    best.0
}

/// Text from the file made safe to print: control and other invisible
/// characters escaped (as Rust's `escape_debug` does), then cut.
fn shown(text: &str) -> String {
    cut(&text.escape_debug().to_string())
}

/// At most [`ECHO_MAX_CHARS`] characters of `text`, with `…` if cut.
fn cut(text: &str) -> String {
    match text.char_indices().nth(ECHO_MAX_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Normalises a header cell for matching: trimmed, lower case, and without
/// the byte-order mark spreadsheet programs put at the start of the file
/// (the CSV parser leaves it in the first name).
fn header_name(cell: &[u8]) -> String {
    String::from_utf8_lossy(cell)
        .trim()
        .trim_start_matches('\u{feff}')
        .trim()
        .to_lowercase()
}

/// Maps a parser failure to the matching error. The parser's own line
/// number is ignored for the reason given on [`LineTracker`].
fn parser_error(error: ::csv::Error, source: &str, line: u64) -> CsvError {
    let reason = error.to_string();
    match error.into_kind() {
        ::csv::ErrorKind::Io(error) => CsvError::Io {
            path: source.to_owned(),
            error,
        },
        _ => CsvError::Malformed {
            path: source.to_owned(),
            line,
            reason,
        },
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC for messages.
fn utc(millis: &i64) -> String {
    DateTime::from_timestamp_millis(*millis).map_or_else(
        || format!("{millis} ms since the epoch"),
        |time| time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}

/// Parses one of the accepted timestamp formats into epoch milliseconds, UTC.
/// Returns `None` for anything else, including dates and times that do not
/// exist (February 30th, 25:00).
///
/// Hand-written rather than a chain of chrono format strings: the grammar is
/// small, and trying formats one after another costs a failed parse per
/// format on every row.
fn parse_timestamp(text: &str) -> Option<i64> {
    let mut cursor = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    if text.len() == 8 {
        let year = cursor.digits(4)?;
        let month = cursor.digits(2)?;
        let day = cursor.digits(2)?;
        return to_millis(year, month, day, [0, 0, 0, 0], 0);
    }

    let year = cursor.digits(4)?;
    cursor.require(b'-')?;
    let month = cursor.digits(2)?;
    cursor.require(b'-')?;
    let day = cursor.digits(2)?;
    if cursor.at_end() {
        return to_millis(year, month, day, [0, 0, 0, 0], 0);
    }

    if !(cursor.eat(b'T') || cursor.eat(b't') || cursor.eat(b' ')) {
        return None;
    }
    let hour = cursor.digits(2)?;
    cursor.require(b':')?;
    let minute = cursor.digits(2)?;
    let mut second = 0;
    let mut nanos = 0;
    if cursor.eat(b':') {
        second = cursor.digits(2)?;
        if cursor.eat(b'.') {
            nanos = cursor.fraction()?;
        }
    }
    // Some exports put a space between the time and the zone.
    cursor.eat(b' ');
    let offset = cursor.offset_seconds()?;
    if !cursor.at_end() {
        return None;
    }
    to_millis(year, month, day, [hour, minute, second, nanos], offset)
}

/// Builds epoch milliseconds from calendar fields, letting chrono reject
/// impossible dates and times. `offset` is the zone's distance east of UTC.
fn to_millis(year: u32, month: u32, day: u32, hmsn: [u32; 4], offset: i64) -> Option<i64> {
    let [hour, minute, second, nanos] = hmsn;
    let local = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_nano_opt(hour, minute, second, nanos)?;
    local
        .and_utc()
        .timestamp_millis()
        .checked_sub(offset.checked_mul(1000)?)
}

/// A position in a timestamp being parsed.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    /// Like [`Cursor::eat`], but for bytes the format cannot do without.
    fn require(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// Exactly `count` ASCII digits as a number; `count` is at most 4, so
    /// the value cannot overflow.
    fn digits(&mut self, count: usize) -> Option<u32> {
        let mut value = 0;
        for _ in 0..count {
            let byte = self.peek().filter(u8::is_ascii_digit)?;
            value = value * 10 + u32::from(byte - b'0');
            self.pos += 1;
        }
        Some(value)
    }

    /// One or more digits after a decimal point, as nanoseconds. Digits past
    /// the ninth are accepted and dropped, as they are below what is kept.
    fn fraction(&mut self) -> Option<u32> {
        let start = self.pos;
        let mut nanos = 0;
        let mut scale = 100_000_000;
        while let Some(byte) = self.peek().filter(u8::is_ascii_digit) {
            nanos += u32::from(byte - b'0') * scale;
            scale /= 10;
            self.pos += 1;
        }
        (self.pos > start).then_some(nanos)
    }

    /// An optional zone: nothing, `Z`, or `±HH`, `±HHMM`, `±HH:MM`; returns
    /// seconds east of UTC.
    fn offset_seconds(&mut self) -> Option<i64> {
        let sign = match self.peek() {
            None => return Some(0),
            Some(b'Z' | b'z') => {
                self.pos += 1;
                return Some(0);
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return None,
        };
        self.pos += 1;
        let hours = self.digits(2)?;
        let minutes = if self.eat(b':') || self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.digits(2)?
        } else {
            0
        };
        if hours > 23 || minutes > 59 {
            return None;
        }
        Some(sign * i64::from(hours * 3600 + minutes * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "prices.csv";

    /// Epoch milliseconds for a UTC calendar time, built with chrono
    /// independently of the parser under test.
    fn at(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32, milli: u32) -> i64 {
        NaiveDate::from_ymd_opt(year, month, day)
            .and_then(|date| date.and_hms_milli_opt(hour, minute, second, milli))
            .map(|time| time.and_utc().timestamp_millis())
            .expect("valid test time")
    }

    fn day(year: i32, month: u32, day: u32) -> i64 {
        at(year, month, day, 0, 0, 0, 0)
    }

    fn row(time: i64, open: f64, high: f64, low: f64, close: f64, volume: f64) -> Row {
        Row {
            time,
            open,
            high,
            low,
            close,
            volume,
        }
    }

    fn parse(text: &str) -> Result<Vec<Row>, CsvError> {
        read(text.as_bytes(), SOURCE)
    }

    #[test]
    fn good_files() {
        let two_days = vec![
            row(day(2024, 1, 31), 1.5, 2.0, 1.0, 1.75, 100.0),
            row(day(2024, 2, 1), 1.75, 2.5, 1.25, 2.25, 200.0),
        ];
        let hours = |volume: f64| {
            vec![
                row(
                    at(2017, 4, 19, 9, 0, 0, 0),
                    1.0716,
                    1.0722,
                    1.07083,
                    1.07219,
                    volume,
                ),
                row(
                    at(2017, 4, 19, 10, 0, 0, 0),
                    1.07214,
                    1.07296,
                    1.07214,
                    1.0726,
                    volume,
                ),
            ]
        };
        let cases: Vec<(&str, &str, Vec<Row>)> = vec![
            (
                "ISO date",
                "Date,Open,High,Low,Close,Volume\n\
                 2024-01-31,1.5,2,1,1.75,100\n\
                 2024-02-01,1.75,2.5,1.25,2.25,200\n",
                two_days.clone(),
            ),
            (
                "YYYYMMDD",
                "Date,Open,High,Low,Close,Volume\n\
                 20240131,1.5,2,1,1.75,100\n\
                 20240201,1.75,2.5,1.25,2.25,200\n",
                two_days.clone(),
            ),
            (
                "date-time with space and seconds",
                "Datetime,Open,High,Low,Close,Volume\n\
                 2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,7\n\
                 2017-04-19 10:00:00,1.07214,1.07296,1.07214,1.0726,7\n",
                hours(7.0),
            ),
            (
                "date-time with T, no seconds",
                "Time,Open,High,Low,Close,Volume\n\
                 2017-04-19T09:00,1.0716,1.0722,1.07083,1.07219,7\n\
                 2017-04-19t10:00,1.07214,1.07296,1.07214,1.0726,7\n",
                hours(7.0),
            ),
            (
                "fractional seconds, sub-millisecond dropped",
                "Timestamp,Open,High,Low,Close\n\
                 2024-01-31 10:00:00.123456789,1,1,1,1\n\
                 2024-01-31T10:00:00.5,1,1,1,1\n\
                 2024-01-31 10:00:01.0009999999999,1,1,1,1\n",
                vec![
                    row(at(2024, 1, 31, 10, 0, 0, 123), 1.0, 1.0, 1.0, 1.0, 0.0),
                    row(at(2024, 1, 31, 10, 0, 0, 500), 1.0, 1.0, 1.0, 1.0, 0.0),
                    row(at(2024, 1, 31, 10, 0, 1, 0), 1.0, 1.0, 1.0, 1.0, 0.0),
                ],
            ),
            (
                "Z and numeric offsets converted to UTC",
                "Date,Open,High,Low,Close,Volume\n\
                 2017-04-19T09:00:00Z,1.0716,1.0722,1.07083,1.07219,7\n\
                 2017-04-19T12:00:00+02:00,1.07214,1.07296,1.07214,1.0726,7\n\
                 2017-04-19 05:30-0530,1,1,1,1,7\n\
                 2017-04-19T12:00:00.250 +01,1,1,1,1,7\n\
                 2017-04-19T12:00:00z,1,1,1,1,7\n",
                vec![
                    row(
                        at(2017, 4, 19, 9, 0, 0, 0),
                        1.0716,
                        1.0722,
                        1.07083,
                        1.07219,
                        7.0,
                    ),
                    row(
                        at(2017, 4, 19, 10, 0, 0, 0),
                        1.07214,
                        1.07296,
                        1.07214,
                        1.0726,
                        7.0,
                    ),
                    row(at(2017, 4, 19, 11, 0, 0, 0), 1.0, 1.0, 1.0, 1.0, 7.0),
                    row(at(2017, 4, 19, 11, 0, 0, 250), 1.0, 1.0, 1.0, 1.0, 7.0),
                    row(at(2017, 4, 19, 12, 0, 0, 0), 1.0, 1.0, 1.0, 1.0, 7.0),
                ],
            ),
            (
                "header case, spacing and order shuffled",
                " cLoSe ,VOLUME, low,High ,oPEN,  TIMESTAMP\n\
                 1.75,100,1,2,1.5,2024-01-31\n\
                 2.25,200,1.25,2.5,1.75,2024-02-01\n",
                two_days.clone(),
            ),
            (
                "extra columns ignored, Close preferred to Adj Close",
                "Date,Open,High,Low,Adj Close,Close,Volume,amount\n\
                 2024-01-31,1.5,2,1,9.99,1.75,100,abc\n\
                 2024-02-01,1.75,2.5,1.25,,2.25,200,\n",
                two_days.clone(),
            ),
            (
                "unnamed first column",
                ",Open,High,Low,Close,Volume\n\
                 2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n\
                 2017-04-19 10:00:00,1.07214,1.07296,1.07214,1.0726,1413",
                hours(1413.0),
            ),
            (
                "named timestamp wins over unnamed first column (pandas index)",
                ",Date,Open,High,Low,Close,Volume\n\
                 0,2024-01-31,1.5,2,1,1.75,100\n\
                 1,2024-02-01,1.75,2.5,1.25,2.25,200\n",
                two_days.clone(),
            ),
            (
                "no volume column reads as zero",
                "Date,Open,High,Low,Close\n\
                 2024-01-31,1.5,2,1,1.75\n\
                 2024-02-01,1.75,2.5,1.25,2.25\n",
                two_days.iter().map(|r| Row { volume: 0.0, ..*r }).collect(),
            ),
            (
                "CRLF line endings",
                "Date,Open,High,Low,Close,Volume\r\n\
                 2024-01-31,1.5,2,1,1.75,100\r\n\
                 2024-02-01,1.75,2.5,1.25,2.25,200\r\n",
                two_days.clone(),
            ),
            (
                "no trailing newline",
                "Date,Open,High,Low,Close,Volume\n\
                 2024-01-31,1.5,2,1,1.75,100\n\
                 2024-02-01,1.75,2.5,1.25,2.25,200",
                two_days.clone(),
            ),
            (
                "byte-order mark, quotes, padding and blank lines",
                "\u{feff}\"Date\",Open,High,Low,Close,Volume\n\
                 \n\
                 \" 2024-01-31 \", 1.5 ,\"2\",1,1.75,1e2\n\
                 2024-02-01,1.75,2.5,1.25,2.25,200\n\
                 \n\n",
                two_days.clone(),
            ),
            (
                "single row, zero volume, high equal to low",
                "date,open,high,low,close,volume\n2024-01-31,1,1,1,1,0\n",
                vec![row(day(2024, 1, 31), 1.0, 1.0, 1.0, 1.0, 0.0)],
            ),
        ];

        for (name, text, expected) in cases {
            match parse(text) {
                Ok(rows) => assert_eq!(rows, expected, "case {name:?}"),
                Err(error) => panic!("case {name:?} failed: {error}"),
            }
        }
    }

    /// Short name of a variant, so the table can state the expected one.
    fn kind(error: &CsvError) -> &'static str {
        match error {
            CsvError::Io { .. } => "Io",
            CsvError::Empty { .. } => "Empty",
            CsvError::NoRows { .. } => "NoRows",
            CsvError::NoTimeColumn { .. } => "NoTimeColumn",
            CsvError::MissingColumn { .. } => "MissingColumn",
            CsvError::FieldCount { .. } => "FieldCount",
            CsvError::Malformed { .. } => "Malformed",
            CsvError::BadNumber { .. } => "BadNumber",
            CsvError::NonPositivePrice { .. } => "NonPositivePrice",
            CsvError::NegativeVolume { .. } => "NegativeVolume",
            CsvError::BadTimestamp { .. } => "BadTimestamp",
            CsvError::OutOfOrder { .. } => "OutOfOrder",
            CsvError::DuplicateTime { .. } => "DuplicateTime",
            CsvError::HighBelowLow { .. } => "HighBelowLow",
            CsvError::OutsideRange { .. } => "OutsideRange",
        }
    }

    /// A file that must fail: name, input, variant (as [`kind`] names it),
    /// line and column the message must give, and other text it must hold.
    type BadCase<'a> = (
        &'a str,
        String,
        &'a str,
        Option<u64>,
        Option<&'a str>,
        &'a [&'a str],
    );

    #[test]
    fn bad_files() {
        const HEAD: &str = "Date,Open,High,Low,Close,Volume\n";
        const ROW2: &str = "2024-01-31,1.5,2,1,1.75,100\n";
        let with_rows = |rows: &str| format!("{HEAD}{ROW2}{rows}");
        let cases: Vec<BadCase> = vec![
            ("empty", String::new(), "Empty", None, None, &["header"]),
            (
                "blank lines only",
                "\n\r\n\n".into(),
                "Empty",
                None,
                None,
                &[],
            ),
            ("spaces only", "   \n".into(), "Empty", None, None, &[]),
            (
                "byte-order mark only",
                "\u{feff}".into(),
                "Empty",
                None,
                None,
                &[],
            ),
            (
                "header only",
                HEAD.into(),
                "NoRows",
                Some(1),
                None,
                &["no data rows"],
            ),
            (
                "header only, no newline",
                HEAD.trim_end().into(),
                "NoRows",
                Some(1),
                None,
                &[],
            ),
            (
                "no timestamp column",
                "Open,High,Low,Close\n1,2,1,1\n".into(),
                "NoTimeColumn",
                Some(1),
                None,
                &[
                    "`Open,High,Low,Close`",
                    "Date, Datetime, Time or Timestamp",
                    "empty",
                ],
            ),
            (
                "unnamed column not first",
                "Open,,High,Low,Close\n1,2024-01-31,2,1,1\n".into(),
                "NoTimeColumn",
                Some(1),
                None,
                &[],
            ),
            (
                "missing Close (Adj Close does not count)",
                "Date,Open,High,Low,Adj Close\n2024-01-31,1,2,1,1\n".into(),
                "MissingColumn",
                Some(1),
                Some("Close"),
                &[],
            ),
            (
                "missing Open",
                "Date,High,Low,Close\n2024-01-31,2,1,1\n".into(),
                "MissingColumn",
                Some(1),
                Some("Open"),
                &[],
            ),
            (
                "too few fields",
                with_rows("2024-02-01,1.75,2.5,1.25,2.25\n"),
                "FieldCount",
                Some(3),
                None,
                &["5 fields", "has 6"],
            ),
            (
                "too many fields",
                with_rows("2024-02-01,1.75,2.5,1.25,2.25,200,\n"),
                "FieldCount",
                Some(3),
                None,
                &["7 fields"],
            ),
            (
                "text in a price",
                with_rows("2024-02-01,1.75,abc,1.25,2.25,200\n"),
                "BadNumber",
                Some(3),
                Some("High"),
                &["\"abc\""],
            ),
            (
                "empty price",
                with_rows("2024-02-01,,2.5,1.25,2.25,200\n"),
                "BadNumber",
                Some(3),
                Some("Open"),
                &["\"\""],
            ),
            (
                "NaN price",
                with_rows("2024-02-01,1.75,2.5,1.25,NaN,200\n"),
                "BadNumber",
                Some(3),
                Some("Close"),
                &["NaN"],
            ),
            (
                "infinite volume",
                with_rows("2024-02-01,1.75,2.5,1.25,2.25,inf\n"),
                "BadNumber",
                Some(3),
                Some("Volume"),
                &["inf"],
            ),
            (
                "column named as written in the file",
                "date,open,HIGH,low,close\n2024-01-31,1,x,1,1\n".into(),
                "BadNumber",
                Some(2),
                Some("HIGH"),
                &[],
            ),
            (
                "zero price",
                with_rows("2024-02-01,1.75,2.5,0,2.25,200\n"),
                "NonPositivePrice",
                Some(3),
                Some("Low"),
                &["not positive"],
            ),
            (
                "negative price",
                with_rows("2024-02-01,-1.75,2.5,1.25,2.25,200\n"),
                "NonPositivePrice",
                Some(3),
                Some("Open"),
                &["-1.75"],
            ),
            (
                "negative volume",
                with_rows("2024-02-01,1.75,2.5,1.25,2.25,-1\n"),
                "NegativeVolume",
                Some(3),
                Some("Volume"),
                &[],
            ),
            (
                "day-first date",
                with_rows("01/02/2024,1.75,2.5,1.25,2.25,200\n"),
                "BadTimestamp",
                Some(3),
                Some("Date"),
                &["\"01/02/2024\"", "YYYY-MM-DD", "YYYYMMDD", "+02:00"],
            ),
            (
                "month 13",
                with_rows("2024-13-01,1.75,2.5,1.25,2.25,200\n"),
                "BadTimestamp",
                Some(3),
                Some("Date"),
                &[],
            ),
            (
                "February 30th as YYYYMMDD",
                with_rows("20240230,1.75,2.5,1.25,2.25,200\n"),
                "BadTimestamp",
                Some(3),
                Some("Date"),
                &[],
            ),
            (
                "hour 25",
                with_rows("2024-02-01 25:00,1.75,2.5,1.25,2.25,200\n"),
                "BadTimestamp",
                Some(3),
                None,
                &[],
            ),
            (
                "offset hour 24",
                with_rows("2024-02-01 10:00+24:00,1.75,2.5,1.25,2.25,200\n"),
                "BadTimestamp",
                Some(3),
                None,
                &[],
            ),
            (
                "trailing text after time",
                with_rows("2024-02-01 10:00:00 UTC,1.75,2.5,1.25,2.25,200\n"),
                "BadTimestamp",
                Some(3),
                None,
                &[],
            ),
            (
                "empty timestamp in unnamed column",
                ",Open,High,Low,Close\n,1,2,1,1\n".into(),
                "BadTimestamp",
                Some(2),
                Some("(unnamed first column)"),
                &[],
            ),
            (
                "out of order",
                with_rows("2024-01-30,1.75,2.5,1.25,2.25,200\n"),
                "OutOfOrder",
                Some(3),
                None,
                &["2024-01-30T00:00:00Z", "2024-01-31T00:00:00Z", "line 2"],
            ),
            (
                "duplicate time, written differently",
                with_rows("2024-01-31T00:00:00Z,1.75,2.5,1.25,2.25,200\n"),
                "DuplicateTime",
                Some(3),
                None,
                &["2024-01-31T00:00:00Z", "line 2"],
            ),
            (
                "high below low",
                with_rows("2024-02-01,1.75,1.25,2.5,2.25,200\n"),
                "HighBelowLow",
                Some(3),
                None,
                &["high 1.25", "low 2.5"],
            ),
            (
                "close above high",
                "Date,Open,High,Low,Close\n2024-01-31,1,2,1,2.5\n".into(),
                "OutsideRange",
                Some(2),
                Some("Close"),
                &["2.5", "low 1", "high 2"],
            ),
            (
                "line count with CRLF",
                "Date,Open,High,Low,Close\r\n2024-01-31,1,2,1,1\r\n2024-02-01,1,2,1,x\r\n".into(),
                "BadNumber",
                Some(3),
                Some("Close"),
                &[],
            ),
            (
                "line count after blank lines and a quoted newline",
                "Date,Note,Open,High,Low,Close\n\n2024-01-31,\"two\nlines\",1,2,1,1\n\
                 2024-02-01,,1,2,1,0\n"
                    .into(),
                "NonPositivePrice",
                Some(5),
                Some("Close"),
                &[],
            ),
        ];

        for (name, text, variant, line, column, extra) in cases {
            let error = match parse(&text) {
                Ok(rows) => panic!("case {name:?} parsed to {rows:?}"),
                Err(error) => error,
            };
            let message = error.to_string();
            assert_eq!(kind(&error), variant, "case {name:?}: {message}");
            assert!(message.contains(SOURCE), "case {name:?}: {message}");
            if let Some(line) = line {
                let wanted = format!("line {line}");
                assert!(
                    message.contains(&wanted),
                    "case {name:?} lacks {wanted:?}: {message}"
                );
                // "line 1" would also match "line 12": check the digit ends.
                let after = message
                    .split(&wanted)
                    .nth(1)
                    .and_then(|rest| rest.chars().next());
                assert!(
                    !after.is_some_and(|c| c.is_ascii_digit()),
                    "case {name:?}: {message}"
                );
            }
            if let Some(column) = column {
                let wanted = format!("`{column}`");
                assert!(
                    message.contains(&wanted),
                    "case {name:?} lacks {wanted}: {message}"
                );
            }
            for text in extra {
                assert!(
                    message.contains(text),
                    "case {name:?} lacks {text:?}: {message}"
                );
            }
        }
    }

    #[test]
    fn line_numbers_match_an_editor() {
        // Each input fails on its last row, a zero Close; (name, input, line).
        let cases = [
            (
                "LF",
                "Date,Open,High,Low,Close\n2024-01-01,1,1,1,1\n2024-01-02,1,1,1,0\n",
                3,
            ),
            (
                "CRLF",
                "Date,Open,High,Low,Close\r\n2024-01-01,1,1,1,1\r\n2024-01-02,1,1,1,0",
                3,
            ),
            (
                "CR only",
                "Date,Open,High,Low,Close\r2024-01-01,1,1,1,1\r2024-01-02,1,1,1,0\r",
                3,
            ),
            (
                "blank lines, LF and CRLF",
                "Date,Open,High,Low,Close\n\n2024-01-01,1,1,1,1\r\n\r\n\r\n2024-01-02,1,1,1,0\n",
                6,
            ),
            (
                "blank lines before the header",
                "\r\n\nDate,Open,High,Low,Close\n2024-01-02,1,1,1,0\n",
                4,
            ),
            (
                "quoted CRLF inside a field",
                "Date,Note,Open,High,Low,Close\r\n2024-01-01,\"a\r\nb\r\n\",1,1,1,1\r\n\
                 2024-01-02,,1,1,1,0\r\n",
                5,
            ),
        ];
        for (name, text, line) in cases {
            match parse(text) {
                Err(CsvError::NonPositivePrice { line: found, .. }) => {
                    assert_eq!(found, line, "case {name:?}");
                }
                other => panic!("case {name:?}: unexpected {other:?}"),
            }
        }
        let header = "\n\nOpen,High,Low,Close\n1,1,1,1\n";
        match parse(header) {
            Err(CsvError::NoTimeColumn { line, .. }) => assert_eq!(line, 3),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn line_numbers_hold_across_buffer_refills() {
        // Far more than the parser's 8 KiB buffer, with CRLF, blank lines and
        // quoted line breaks, so tracking must carry over between reads.
        let mut text = String::from("Date,Note,Open,High,Low,Close\r\n");
        let mut line = 2;
        for index in 0..4_000_u32 {
            let date = NaiveDate::from_ymd_opt(2000, 1, 1)
                .and_then(|d| d.checked_add_days(chrono::Days::new(u64::from(index))))
                .expect("valid test date");
            let close = if index == 3_999 { "-1" } else { "1" };
            if index % 7 == 0 {
                text.push_str(&format!("{date},\"x\r\ny\",1,1,1,{close}\r\n"));
                line += 2;
            } else if index % 11 == 0 {
                text.push_str(&format!("{date},,1,1,1,{close}\r\n\r\n"));
                line += 2;
            } else {
                text.push_str(&format!("{date},,1,1,1,{close}\n"));
                line += 1;
            }
        }
        // The failing row is index 3999 (3999 % 7 = 2, % 11 = 6): one line.
        let expected = line - 1;
        match parse(&text) {
            Err(CsvError::NonPositivePrice { line, .. }) => assert_eq!(line, expected),
            other => panic!("unexpected {other:?}"),
        }
        let error = read_chunked(text.as_bytes(), 3).expect_err("same file, tiny reads");
        assert!(
            error.to_string().contains(&format!("line {expected},")),
            "{error}"
        );
    }

    /// Reads through an input that hands out at most `size` bytes per call,
    /// to exercise CRLF pairs split between reads.
    fn read_chunked(bytes: &[u8], size: usize) -> Result<Vec<Row>, CsvError> {
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let count = self.0.len().min(self.1).min(buf.len());
                let (head, tail) = self.0.split_at(count);
                buf[..count].copy_from_slice(head);
                self.0 = tail;
                Ok(count)
            }
        }
        read(Chunked(bytes, size), SOURCE)
    }

    #[test]
    fn invalid_utf8_bytes_are_reported_not_fatal() {
        let mut bytes = b"Date,Open,High,Low,Close,Comment\n2024-01-31,1,2,1,1,".to_vec();
        // Latin-1 text in an ignored column must not stop the file loading.
        bytes.extend_from_slice(b"caf\xe9\n2024-02-01,\xff,2,1,1,x\n");
        let error = read(bytes.as_slice(), SOURCE).expect_err("bad byte in Open");
        assert_eq!(kind(&error), "BadNumber");
        assert!(error.to_string().contains("line 3"), "{error}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let path = Path::new("/nonexistent/garden/prices.csv");
        let error = read_path(path).expect_err("file does not exist");
        assert_eq!(kind(&error), "Io");
        assert!(
            error.to_string().contains("/nonexistent/garden/prices.csv"),
            "{error}"
        );
    }

    #[test]
    fn directory_is_an_io_error() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"));
        let error = read_path(path).expect_err("a directory is not a CSV file");
        assert_eq!(kind(&error), "Io", "{error}");
        assert!(
            error.to_string().contains(env!("CARGO_MANIFEST_DIR")),
            "{error}"
        );
    }

    #[test]
    fn timestamp_formats() {
        let good = [
            ("2024-01-31", day(2024, 1, 31)),
            ("20240131", day(2024, 1, 31)),
            ("2024-01-31 09:05", at(2024, 1, 31, 9, 5, 0, 0)),
            ("2024-01-31T09:05:07", at(2024, 1, 31, 9, 5, 7, 0)),
            ("2024-01-31T09:05:07.042Z", at(2024, 1, 31, 9, 5, 7, 42)),
            ("2024-01-31T00:30+01:00", at(2024, 1, 30, 23, 30, 0, 0)),
            ("2024-01-31T23:30-01:00", at(2024, 2, 1, 0, 30, 0, 0)),
            ("1969-12-31T23:59:59.999Z", -1),
        ];
        for (text, expected) in good {
            assert_eq!(parse_timestamp(text), Some(expected), "{text}");
        }
        let bad = [
            "",
            "2024",
            "2024-1-31",
            "2024/01/31",
            "31-01-2024",
            "2024-01-31T",
            "2024-01-31 9:05",
            "2024-01-31 09",
            "2024-01-31 09:05:",
            "2024-01-31 09:05:07.",
            "2024-01-31 09:05Z+01",
            "2024-01-31 09:05+1",
            "2024-01-31 09:05+01:5",
            "2024-01-31 09:05:60",
            "2024023",
            "202401311",
            "+2024-01-31",
            "1706659200",
            "２０２４0131",
        ];
        for text in bad {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
    }

    #[test]
    fn never_panics_on_damaged_input() {
        let good = "\u{feff},Open,High,Low,Close,Volume\r\n\
                    2017-04-19 09:00:00.5+02:00,1.0716,1.0722,1.07083,1.07219,1413\r\n\
                    \"2017-04-19T10:00\",1.07214,1.07296,1.07214,1.0726,1241\n";
        let bytes = good.as_bytes();
        // Every truncation, then a deterministic scatter of byte replacements.
        for end in 0..=bytes.len() {
            let _ = read(&bytes[..end], SOURCE);
        }
        let replacements = [
            b'"', b',', b'\n', b'\r', b'-', b'+', b':', b'9', 0, 0xff, b'e',
        ];
        let mut state: u32 = 0x9e37_79b9;
        for _ in 0..5_000 {
            let mut damaged = bytes.to_vec();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let at = state as usize % damaged.len();
                damaged[at] = replacements[(state >> 8) as usize % replacements.len()];
            }
            if let Err(error) = read(damaged.as_slice(), SOURCE) {
                assert!(error.to_string().contains(SOURCE), "{error}");
            }
        }
    }

    #[test]
    fn reads_the_eurusd_sample() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/EURUSD_H1.csv"
        ));
        let rows = match read_path(path) {
            Ok(rows) => rows,
            Err(error) => panic!("{error}"),
        };
        assert_eq!(rows.len(), 5_000);
        let first = rows[0];
        assert_eq!(first.time, at(2017, 4, 19, 9, 0, 0, 0));
        assert_eq!(first.open, 1.0716);
        assert_eq!(first.high, 1.0722);
        assert_eq!(first.low, 1.07083);
        assert_eq!(first.close, 1.07219);
        assert_eq!(first.volume, 1413.0);
        assert!(rows.windows(2).all(|pair| pair[0].time < pair[1].time));
    }

    #[test]
    fn semicolon_separated_with_decimal_commas() {
        let text = "Date;Open;High;Low;Close;Volume\n\
                    2024-01-31;1,0850;1,0862;1,0841;1,0857;1520\n\
                    2024-02-01;1.0857;1.0870;1.0850;1.0866;900\n";
        let rows = parse(text).expect("a ;-separated file reads");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].open, 1.085);
        assert_eq!(rows[0].close, 1.0857);
        assert_eq!(rows[1].high, 1.087);
        // Tab-separated too; and a comma file keeps its meaning.
        let tabs = "Date\tOpen\tHigh\tLow\tClose\n2024-01-31\t1\t2\t1\t1.5\n";
        assert_eq!(parse(tabs).expect("tabs read")[0].close, 1.5);
        let quoted = "Date,Open,High,Low,Close,\"a;b;c;d;e;f;g\"\n2024-01-31,1,2,1,1.5,x\n";
        assert_eq!(parse(quoted).expect("quoted ; ignored")[0].close, 1.5);
        // A decimal comma is not accepted in a comma-separated file's cells.
        let error = parse("Date,Open,High,Low,Close\n2024-01-31,1,2,1,\"1,5\"\n")
            .expect_err("1,5 is not a number in a comma file");
        assert_eq!(kind(&error), "BadNumber");
    }

    #[test]
    fn text_from_the_file_is_escaped_and_cut() {
        // A header of random bytes, escape sequences and a bell among them.
        let mut junk: Vec<u8> = (0u8..=255).cycle().skip(1).take(3000).collect();
        junk.retain(|&b| b != b'\n' && b != b'\r' && b != b',' && b != b'"');
        junk.extend_from_slice(b"\n1,2\n");
        let error = read(junk.as_slice(), SOURCE).expect_err("junk is refused");
        let message = error.to_string();
        assert_eq!(kind(&error), "NoTimeColumn", "{message}");
        assert!(!message.chars().any(|c| c.is_control()), "{message:?}");
        assert!(message.contains('…'), "{message}");
        assert!(message.len() < 600, "message of {} bytes", message.len());
        // A huge cell is cut too.
        let long = "9".repeat(10_000) + "x";
        let error = parse(&format!(
            "Date,Open,High,Low,Close\n2024-01-31,{long},2,1,1\n"
        ))
        .expect_err("not a number");
        assert!(error.to_string().len() < 600, "{error}");
        assert!(error.to_string().contains('…'));
    }
}
