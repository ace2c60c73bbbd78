//! What a table is made of at one version, read from its manifest and index metadata
//! (no listing): fragment rows and deletions, columns, and which fragments each index
//! covers. The indexer's policy, index stats and the full-text plan read it.

use std::collections::BTreeSet;

use arrow_schema::{DataType, Schema};
use lance::Dataset;
use lance::index::DatasetIndexExt;
use lance::table::format::IndexMetadata;
use lance_index::IndexType;
use lance_index::pb::VectorIndexDetails;

use crate::error::{EngineError, Result};
use crate::read::vector_column::vector_column_of;

/// An index of a table and what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFacts {
    /// Its name.
    pub name: String,
    /// The uuid of its first segment (what lance's reference server reports).
    pub uuid: String,
    /// The column it indexes.
    pub column: String,
    /// Its type as lance names it (`IVF_PQ`, `BTree`, `Inverted`, …).
    pub index_type: String,
    /// Whether it is a vector index.
    pub is_vector: bool,
    /// The distance a vector index was built for (`l2`, `cosine`, `dot`, `hamming`), as
    /// its segment's details record it; `None` for other indexes and vector indexes built
    /// before lance recorded it.
    pub distance_type: Option<String>,
    /// Rows of fragments it does not cover yet (the unindexed tail).
    pub unindexed_rows: u64,
    /// Rows of fragments it covers.
    pub indexed_rows: u64,
    /// Its segments (the original build plus append deltas).
    pub segments: usize,
    /// Each segment's size, in index order.
    pub segment_sizes: Vec<SegmentSize>,
    /// When its first segment was built, when lance recorded it.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The version of lance's format of its first segment.
    pub index_version: i32,
    /// The protobuf type of its details (`/lance.table.BTreeIndexDetails`, …).
    pub type_url: Option<String>,
    /// Bytes of all its segments' files; `None` when lance did not record a size.
    pub size_bytes: Option<u64>,
}

/// What one segment of an index covers, among the table's live fragments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentSize {
    /// Live rows of its fragments (deleted ones left out, as lance counts them when it
    /// packs segments, so the policy and lance agree on what is full).
    pub rows: u64,
    /// Its fragments.
    pub fragments: usize,
}

/// What a table looks like at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFacts {
    /// The version described.
    pub version: u64,
    /// Rows, deletions excluded.
    pub rows: u64,
    /// Physical rows of each fragment (deleted rows included).
    pub fragment_rows: Vec<u64>,
    /// Fragments whose deleted share is at least lance's materialization threshold.
    pub fragments_with_many_deletions: usize,
    /// Vector columns.
    pub vector_columns: Vec<String>,
    /// String columns.
    pub string_columns: Vec<String>,
    /// Every top-level column.
    pub columns: Vec<String>,
    /// Its indexes (system indexes excluded).
    pub indexes: Vec<IndexFacts>,
}

/// Lance's default: a fragment with at least this share of deleted rows is rewritten.
pub const MATERIALIZE_DELETIONS_THRESHOLD: f32 = 0.1;

impl TableFacts {
    /// Reads the facts of `dataset` from its manifest and index metadata (no listing:
    /// this runs after every change).
    pub async fn read(dataset: &Dataset) -> Result<Self> {
        let fragments = fragment_rows(dataset).await?;
        #[allow(clippy::cast_precision_loss)]
        let fragments_with_many_deletions = fragments
            .iter()
            .filter(|fragment| {
                fragment.physical > 0
                    && fragment.deleted as f32 / fragment.physical as f32 >= MATERIALIZE_DELETIONS_THRESHOLD
            })
            .count();
        let deleted = fragments.iter().map(|fragment| fragment.deleted).sum::<u64>();
        let fragment_rows = fragments.iter().map(|fragment| fragment.physical).collect::<Vec<_>>();
        let rows = fragment_rows.iter().sum::<u64>().saturating_sub(deleted);
        let schema = Schema::from(dataset.schema());
        let vector_columns =
            schema.fields().iter().filter_map(|field| vector_column_of(field)).map(|column| column.name).collect();
        let string_columns = schema
            .fields()
            .iter()
            .filter(|field| matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8))
            .map(|field| field.name().clone())
            .collect();
        let columns = schema.fields().iter().map(|field| field.name().clone()).collect();
        let indexes = indexes_over(dataset, &fragments).await?;
        Ok(Self {
            version: dataset.version().version,
            rows,
            fragment_rows,
            fragments_with_many_deletions,
            vector_columns,
            string_columns,
            columns,
            indexes,
        })
    }

    /// Fragments with fewer than `target_rows` physical rows.
    pub fn small_fragments(&self, target_rows: u64) -> usize {
        self.fragment_rows.iter().filter(|rows| **rows < target_rows).count()
    }
}

/// The rows of one fragment.
#[derive(Debug, Clone, Copy)]
struct FragmentRows {
    id: u64,
    /// Rows written, deleted ones included.
    physical: u64,
    /// Rows deleted.
    deleted: u64,
}

/// The rows of every fragment of `dataset`, from its manifest (older manifests without
/// row counts cost a read of the fragment's file footer).
async fn fragment_rows(dataset: &Dataset) -> Result<Vec<FragmentRows>> {
    let mut rows = Vec::with_capacity(dataset.fragments().len());
    for fragment in dataset.fragments().iter() {
        let physical = match fragment.physical_rows {
            Some(rows) => rows,
            None => {
                dataset
                    .get_fragment(usize::try_from(fragment.id).unwrap_or(usize::MAX))
                    .ok_or_else(|| EngineError::internal(format!("fragment {} is missing", fragment.id)))?
                    .physical_rows()
                    .await?
            }
        };
        let deleted = fragment.deletion_file.as_ref().and_then(|file| file.num_deleted_rows).unwrap_or(0);
        rows.push(FragmentRows { id: fragment.id, physical: physical as u64, deleted: deleted as u64 });
    }
    Ok(rows)
}

/// The user-visible indexes of `dataset`, with what each covers.
pub async fn index_facts(dataset: &Dataset) -> Result<Vec<IndexFacts>> {
    indexes_over(dataset, &fragment_rows(dataset).await?).await
}

/// The user-visible indexes of `dataset`, whose fragments have `fragments` rows.
async fn indexes_over(dataset: &Dataset, fragments: &[FragmentRows]) -> Result<Vec<IndexFacts>> {
    let schema = dataset.schema();
    let mut facts = Vec::new();
    for description in dataset.describe_indices(None).await? {
        let segments = description.metadata();
        let Some(first) = segments.first() else { continue };
        if lance_index::is_system_index(first) {
            continue;
        }
        let column = indexed_column(dataset, first).unwrap_or_default();
        let covered = covered_fragments(segments);
        let (mut indexed_rows, mut unindexed_rows) = (0, 0);
        for fragment in fragments {
            if u32::try_from(fragment.id).is_ok_and(|id| covered.contains(&id)) {
                indexed_rows += fragment.physical;
            } else {
                unindexed_rows += fragment.physical;
            }
        }
        let is_vector =
            schema.field(&column).is_some_and(|field| vector_column_of(&arrow_schema::Field::from(field)).is_some());
        facts.push(IndexFacts {
            name: description.name().to_string(),
            uuid: first.uuid.to_string(),
            column,
            index_type: description.index_type().to_string(),
            distance_type: if is_vector { distance_type(first) } else { None },
            is_vector,
            unindexed_rows,
            indexed_rows,
            segments: segments.len(),
            segment_sizes: segments.iter().map(|segment| segment_size(segment, fragments)).collect(),
            created_at: first.created_at,
            index_version: first.index_version,
            type_url: first.index_details.as_ref().map(|details| details.type_url.clone()),
            size_bytes: segments
                .iter()
                .map(|segment| {
                    segment.files.as_ref().map(|files| files.iter().map(|file| file.size_bytes).sum::<u64>())
                })
                .sum(),
        });
    }
    Ok(facts)
}

/// The distance a vector index segment was built for, from its details.
fn distance_type(segment: &IndexMetadata) -> Option<String> {
    let details = segment.index_details.as_ref()?.to_msg::<VectorIndexDetails>().ok()?;
    Some(details.metric_type().as_str_name().to_ascii_lowercase())
}

/// What `segment` covers among `fragments`.
fn segment_size(segment: &IndexMetadata, fragments: &[FragmentRows]) -> SegmentSize {
    let Some(bitmap) = &segment.fragment_bitmap else { return SegmentSize::default() };
    fragments.iter().filter(|fragment| u32::try_from(fragment.id).is_ok_and(|id| bitmap.contains(id))).fold(
        SegmentSize::default(),
        |size, fragment| SegmentSize {
            rows: size.rows + fragment.physical.saturating_sub(fragment.deleted),
            fragments: size.fragments + 1,
        },
    )
}

/// The fragments of `dataset` that must be read together for a search of `column`'s
/// vector index to divide by segment: each group holds the live fragments of segments
/// that share a fragment (after a compaction two segments may cover one fragment), so an
/// executor given a group searches exactly those segments and no other executor opens
/// them. Groups of one fragment are left out; groups are in fragment order, and a group
/// is placed by its first fragment.
pub async fn vector_segment_groups(dataset: &Dataset, column: &str) -> Result<Vec<Vec<u64>>> {
    Ok(groups_of(&vector_segments(dataset, column).await?))
}

/// The segments of `column`'s vector index, each with the fragment it is placed by (the
/// first of its group in [`vector_segment_groups`]); segments over no live fragment are
/// left out.
pub async fn vector_segment_anchors(dataset: &Dataset, column: &str) -> Result<Vec<(IndexMetadata, u64)>> {
    let segments = vector_segments(dataset, column).await?;
    let groups = groups_of(&segments);
    Ok(anchored(segments, groups))
}

/// How a full-text search over a table divides among executors: see [`full_text_groups`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FullTextGroups {
    /// Groups of fragments one executor reads together, in fragment order: those of each
    /// full-text index segment (joined where segments share a fragment), and the fragments
    /// some full-text index does not cover (flat-scored with statistics of them all).
    pub colocate: Vec<Vec<u64>>,
    /// Some full-text index has several segments over live fragments, so the search can
    /// divide its index work by segment.
    pub segmented: bool,
}

/// The fragment groups of a full-text search of `dataset` ([`FullTextGroups`]).
pub async fn full_text_groups(dataset: &Dataset) -> Result<FullTextGroups> {
    let live = live_fragments(dataset);
    let mut groups = FragmentGroups::default();
    let mut covered_by_all: Option<BTreeSet<u64>> = None;
    let mut segmented = false;
    for description in dataset.describe_indices(None).await? {
        if !description.index_type().eq_ignore_ascii_case("inverted") {
            continue;
        }
        let mut live_segments = 0;
        for segment in description.metadata() {
            let fragments = live_fragments_of(segment, &live);
            live_segments += usize::from(!fragments.is_empty());
            groups.join(fragments.into_iter());
        }
        segmented |= live_segments > 1;
        let covered = covered_fragments(description.metadata()).into_iter().map(u64::from).collect();
        covered_by_all = Some(match covered_by_all {
            Some(previous) => previous.intersection(&covered).copied().collect(),
            None => covered,
        });
    }
    let covered = covered_by_all.unwrap_or_default();
    groups.join(live.iter().copied().filter(|id| !covered.contains(id)));
    Ok(FullTextGroups { colocate: groups.into_groups(), segmented })
}

/// The segments of the full-text index `name`, each with the fragment it is placed by
/// (the first of its group in [`full_text_groups`]); segments over no live fragment are
/// left out.
pub async fn full_text_segment_anchors(dataset: &Dataset, name: &str) -> Result<Vec<(IndexMetadata, u64)>> {
    let groups = full_text_groups(dataset).await?.colocate;
    segment_anchors(dataset, name, groups).await
}

/// The fragments of `dataset` that must be read together for a filter answered by its
/// scalar indexes (BTREE, BITMAP, …) to divide by index segment: the live fragments of
/// segments sharing a fragment, in groups of more than one, in fragment order. Lance
/// opens only the segments over an executor's fragments.
pub async fn scalar_segment_groups(dataset: &Dataset) -> Result<Vec<Vec<u64>>> {
    let live = live_fragments(dataset);
    let mut groups = FragmentGroups::default();
    for description in dataset.describe_indices(None).await? {
        let scalar = IndexType::try_from(description.index_type())
            .is_ok_and(|kind| kind.is_scalar() && kind != IndexType::Inverted);
        if !scalar || description.metadata().first().is_some_and(lance_index::is_system_index) {
            continue;
        }
        for segment in description.metadata() {
            groups.join(live_fragments_of(segment, &live).into_iter());
        }
    }
    Ok(groups.into_groups())
}

/// The segments of the scalar index `name`, each with the fragment it is placed by (the
/// first of its group in [`scalar_segment_groups`]).
pub async fn scalar_segment_anchors(dataset: &Dataset, name: &str) -> Result<Vec<(IndexMetadata, u64)>> {
    let groups = scalar_segment_groups(dataset).await?;
    segment_anchors(dataset, name, groups).await
}

/// The segments of index `name` over live fragments, each with the first fragment of its
/// group among `groups` (its own first live fragment when in none).
async fn segment_anchors(dataset: &Dataset, name: &str, groups: Vec<Vec<u64>>) -> Result<Vec<(IndexMetadata, u64)>> {
    let live = live_fragments(dataset);
    let segments = dataset.load_indices_by_name(name).await?;
    let segments = segments.into_iter().map(|segment| {
        let fragments = live_fragments_of(&segment, &live);
        (segment, fragments)
    });
    Ok(anchored(segments.collect(), groups))
}

/// `segments` (each with its live fragments) over at least one live fragment, each with
/// the first fragment of its group among `groups` (its own first when in none).
fn anchored(segments: Vec<(IndexMetadata, Vec<u64>)>, groups: Vec<Vec<u64>>) -> Vec<(IndexMetadata, u64)> {
    let anchor_of = groups
        .into_iter()
        .flat_map(|group| group.iter().map(|fragment| (*fragment, group[0])).collect::<Vec<_>>())
        .collect::<std::collections::HashMap<_, _>>();
    segments
        .into_iter()
        .filter_map(|(segment, fragments)| {
            let first = *fragments.first()?;
            Some((segment, anchor_of.get(&first).copied().unwrap_or(first)))
        })
        .collect()
}

/// The column `segment` of an index of `dataset` keys on.
pub(crate) fn indexed_column(dataset: &Dataset, segment: &IndexMetadata) -> Option<String> {
    let id = segment.fields.first()?;
    dataset.schema().field_by_id(*id).map(|field| field.name.clone())
}

/// The live fragments of `dataset` that index `segment` covers, in order (what an
/// executor searching the segment reads with it).
pub fn segment_fragments(dataset: &Dataset, segment: &IndexMetadata) -> Vec<u64> {
    live_fragments_of(segment, &live_fragments(dataset))
}

/// The ids of `dataset`'s fragments.
pub(crate) fn live_fragments(dataset: &Dataset) -> BTreeSet<u64> {
    dataset.fragments().iter().map(|fragment| fragment.id).collect()
}

/// The fragments of `live` that `segment` covers, in order.
pub(crate) fn live_fragments_of(segment: &IndexMetadata, live: &BTreeSet<u64>) -> Vec<u64> {
    segment.fragment_bitmap.iter().flatten().map(u64::from).filter(|id| live.contains(id)).collect()
}

/// The groups of fragments `segments` (each with its fragments) make: see
/// [`vector_segment_groups`].
fn groups_of(segments: &[(IndexMetadata, Vec<u64>)]) -> Vec<Vec<u64>> {
    let mut groups = FragmentGroups::default();
    for (_, fragments) in segments {
        groups.join(fragments.iter().copied());
    }
    groups.into_groups()
}

/// The segments of the vector index on `column`, each with its live fragments in order.
async fn vector_segments(dataset: &Dataset, column: &str) -> Result<Vec<(IndexMetadata, Vec<u64>)>> {
    let Some(field) = dataset.schema().field(column) else { return Ok(Vec::new()) };
    let live = live_fragments(dataset);
    let segments = dataset.load_indices().await?;
    Ok(segments
        .iter()
        .filter(|segment| segment.fields.first() == Some(&field.id) && !lance_index::is_system_index(segment))
        .map(|segment| (segment.clone(), live_fragments_of(segment, &live)))
        .collect())
}

/// Fragments joined into groups (a union-find over fragment ids).
#[derive(Debug, Default)]
struct FragmentGroups {
    parent: std::collections::HashMap<u64, u64>,
}

impl FragmentGroups {
    fn root(&mut self, fragment: u64) -> u64 {
        let mut root = fragment;
        while let Some(&parent) = self.parent.get(&root).filter(|parent| **parent != root) {
            root = parent;
        }
        self.parent.insert(fragment, root);
        root
    }

    /// Puts `fragments` in one group, with every group one of them is in.
    fn join(&mut self, fragments: impl Iterator<Item = u64>) {
        let mut group = None;
        for fragment in fragments {
            let root = self.root(fragment);
            group = Some(group.map_or(root, |group| self.union(group, root)));
        }
    }

    /// Joins the groups of `a` and `b`; their root, the smaller fragment id.
    fn union(&mut self, a: u64, b: u64) -> u64 {
        let (a, b) = (self.root(a), self.root(b));
        let (low, high) = (a.min(b), a.max(b));
        if low != high {
            self.parent.insert(high, low);
        }
        low
    }

    fn into_groups(mut self) -> Vec<Vec<u64>> {
        let mut groups = std::collections::BTreeMap::<u64, Vec<u64>>::new();
        let mut fragments = self.parent.keys().copied().collect::<Vec<_>>();
        fragments.sort_unstable();
        for fragment in fragments {
            let root = self.root(fragment);
            groups.entry(root).or_default().push(fragment);
        }
        groups.into_values().filter(|group| group.len() > 1).collect()
    }
}

/// The fragments the segments of one index cover.
pub fn covered_fragments(segments: &[IndexMetadata]) -> BTreeSet<u32> {
    segments.iter().filter_map(|segment| segment.fragment_bitmap.as_ref()).flat_map(|bitmap| bitmap.iter()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_sharing_a_fragment_are_one_group() {
        let mut groups = FragmentGroups::default();
        groups.join([1, 2, 3].into_iter());
        groups.join([4, 5].into_iter());
        groups.join([9].into_iter());
        groups.join([7, 8].into_iter());
        groups.join([8, 6].into_iter());
        groups.join([5, 10].into_iter());
        assert_eq!(groups.into_groups(), vec![vec![1, 2, 3], vec![4, 5, 10], vec![6, 7, 8]]);
    }
}
