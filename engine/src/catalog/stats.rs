//! Table statistics as LanceDB reports them (`POST /v1/table/{id}/stats/`).

use std::sync::Arc;

use lance::Dataset;
use lance::dataset::statistics::DatasetStatisticsExt;
use lance::index::DatasetIndexExt;
use serde::Serialize;

use crate::error::Result;

/// Fragments with fewer rows than this count as small (LanceDB's threshold).
const SMALL_FRAGMENT_ROWS: u64 = 100_000;

/// Size and layout of one table version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableStats {
    /// Bytes of column data on storage.
    pub total_bytes: u64,
    /// Live rows.
    pub num_rows: u64,
    /// Rows deleted but still in data files.
    pub num_deleted_rows: u64,
    /// Indexes (by name).
    pub num_indices: u64,
    /// How rows spread over fragments.
    pub fragment_stats: FragmentStats,
}

/// Fragment layout of a table version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FragmentStats {
    /// Fragments.
    pub num_fragments: u64,
    /// Fragments below [`SMALL_FRAGMENT_ROWS`] rows: what compaction would merge.
    pub num_small_fragments: u64,
    /// Distribution of rows per fragment.
    pub lengths: FragmentLengths,
}

/// Distribution of physical rows per fragment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FragmentLengths {
    pub min: u64,
    pub max: u64,
    pub mean: u64,
    pub p25: u64,
    pub p50: u64,
    pub p75: u64,
    pub p99: u64,
}

impl FragmentLengths {
    /// The distribution of `lengths` (sorted here), with LanceDB's percentile positions.
    fn of(mut lengths: Vec<u64>) -> Self {
        lengths.sort_unstable();
        let count = lengths.len();
        let at = |position: usize| lengths.get(position).copied().unwrap_or(0);
        Self {
            min: at(0),
            max: count.checked_sub(1).map_or(0, at),
            mean: lengths.iter().sum::<u64>().checked_div(count as u64).unwrap_or(0),
            p25: at(count / 4),
            p50: at(count / 2),
            p75: at(count * 3 / 4),
            p99: at(count * 99 / 100),
        }
    }
}

/// Statistics of `dataset` from its manifest, index metadata and data file sizes.
pub async fn table_stats(dataset: &Dataset) -> Result<TableStats> {
    let lengths =
        dataset.fragments().iter().map(|fragment| fragment.physical_rows.unwrap_or(0) as u64).collect::<Vec<_>>();
    let num_small_fragments = lengths.iter().filter(|rows| **rows < SMALL_FRAGMENT_ROWS).count() as u64;
    let num_fragments = lengths.len() as u64;
    let mut index_names = dataset.load_indices().await?.iter().map(|index| index.name.clone()).collect::<Vec<_>>();
    index_names.sort();
    index_names.dedup();
    let data = Arc::new(dataset.clone()).calculate_data_stats().await?;
    Ok(TableStats {
        total_bytes: data.fields.iter().map(|field| field.bytes_on_disk).sum(),
        num_rows: dataset.count_rows(None).await? as u64,
        num_deleted_rows: dataset.count_deleted_rows().await? as u64,
        num_indices: index_names.len() as u64,
        fragment_stats: FragmentStats { num_fragments, num_small_fragments, lengths: FragmentLengths::of(lengths) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_lancedb() {
        let lengths = FragmentLengths::of(vec![40, 10, 30, 20]);
        assert_eq!(lengths, FragmentLengths { min: 10, max: 40, mean: 25, p25: 20, p50: 30, p75: 40, p99: 40 });
        assert_eq!(FragmentLengths::of(Vec::new()), FragmentLengths::default());
    }
}
