//! `garden report`: one self-contained HTML page of a recorded run.
//!
//! The page holds everything it needs (Apache ECharts, vendored under
//! `vendor/echarts` with its licence, the styles, the glue script and the
//! figures as JSON), so it opens from a file with no network. The figures
//! are computed in Rust ([`figures`]); the page's script only lays them out.
//!
//! This crate is where the trading pipeline's records are read as trading
//! records (plans, fills, feedback): the host itself stays domain-agnostic.

mod data;
mod figures;
pub mod latency;
mod page;

pub use data::{InstanceCost, RunData, Summary, topics};
pub use figures::{
    Bin, Calibration, CostRow, ExpertRow, Figures, Generation, Lineage, Lines, Meta, NodeInfo,
    ReportOptions, Series, TradeMark, Trades, TreeNode, figures,
};
pub use page::render;

use garden_host::keyring::Keyring;
use garden_store::{Store, StoreError};

/// What went wrong making a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The store has no run by that id.
    #[error("no run `{0}` in this store: `garden lineage` names the latest, or pass --run")]
    NoSuchRun(String),
    /// The store could not be read.
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
    /// The run's summary is not what `garden run` writes.
    #[error("the run's summary is malformed: {0}")]
    Summary(serde_json::Error),
    /// A lineage record is not what the host writes.
    #[error("a lineage record is malformed: {0}")]
    Lineage(serde_json::Error),
    /// Records are sealed and no keyring was given.
    #[error(
        "the `{topic}` records are encrypted ({reason}): pass the garden's keyring with --body-keys FILE"
    )]
    Sealed {
        /// Topic of the first sealed record.
        topic: String,
        /// Why it did not open.
        reason: String,
    },
    /// The figures did not serialise (a bug: report it).
    #[error("writing the report's data: {0}")]
    Json(serde_json::Error),
}

/// Read `run` from `store` and make its report page.
pub async fn report(
    store: &Store,
    run: &str,
    keys: Option<&Keyring>,
    options: &ReportOptions,
) -> Result<String, ReportError> {
    let data = RunData::load(store, run, keys).await?;
    render(&figures(&data, options))
}
