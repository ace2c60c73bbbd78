//! What a `create_index` request asks for, checked against a table, and its build with
//! lance's index builders.
//!
//! The request is the LanceDB client's body: `column`, `index_type` (absent: IVF_PQ for a
//! vector column, BTREE otherwise), `name` (default `{column}_idx`), `replace`, and the
//! type's parameters flattened beside them. Unset parameters keep lance's defaults,
//! except PQ's sub-vector count, which follows LanceDB (dimension / 16, else / 8, else 1).

use arrow_schema::{DataType, Field, Schema};
use lance::Dataset;
use lance::index::DatasetIndexExt;
use lance::index::vector::VectorIndexParams;
use lance_index::scalar::{BuiltinIndexType, InvertedIndexParams, ScalarIndexParams};
use lance_index::vector::hnsw::builder::HnswBuildParams;
use lance_index::vector::ivf::IvfBuildParams;
use lance_index::vector::pq::PQBuildParams;
use lance_index::vector::sq::builder::SQBuildParams;
use lance_index::{IndexParams, IndexType};
use lance_linalg::distance::DistanceType;
use serde::Deserialize;

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::maintenance::{build_segments, fragment_runs, optimize_indexes};
use crate::read::vector_column::vector_column_of;
use crate::table_id::TableId;

/// The kinds of index a client may request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// IVF with full vectors.
    IvfFlat,
    /// IVF with product quantization.
    IvfPq,
    /// IVF with scalar quantization.
    IvfSq,
    /// IVF partitions searched with HNSW over scalar-quantized vectors.
    IvfHnswSq,
    /// IVF partitions searched with HNSW over product-quantized vectors.
    IvfHnswPq,
    /// Sorted scalar index.
    BTree,
    /// Bitmap scalar index (low cardinality).
    Bitmap,
    /// Index of list elements.
    LabelList,
    /// Full-text (inverted) index.
    Fts,
}

impl IndexKind {
    /// Parses the client's spelling (`IVF_PQ`, `IvfPq`, `BTREE`, `FTS`/`INVERTED`, …).
    pub fn parse(name: &str) -> Result<Self> {
        let normalized = name.to_ascii_uppercase().replace('_', "");
        Ok(match normalized.as_str() {
            "IVFFLAT" => Self::IvfFlat,
            "IVFPQ" => Self::IvfPq,
            "IVFSQ" => Self::IvfSq,
            "IVFHNSWSQ" => Self::IvfHnswSq,
            "IVFHNSWPQ" => Self::IvfHnswPq,
            "BTREE" => Self::BTree,
            "BITMAP" => Self::Bitmap,
            "LABELLIST" => Self::LabelList,
            "FTS" | "INVERTED" => Self::Fts,
            _ => {
                return Err(EngineError::invalid_input(format!(
                    "unknown index type '{name}'; use IVF_FLAT, IVF_PQ, IVF_SQ, IVF_HNSW_SQ, IVF_HNSW_PQ, \
                     BTREE, BITMAP, LABEL_LIST or FTS"
                )));
            }
        })
    }

    /// The name LanceDB clients know it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IvfFlat => "IVF_FLAT",
            Self::IvfPq => "IVF_PQ",
            Self::IvfSq => "IVF_SQ",
            Self::IvfHnswSq => "IVF_HNSW_SQ",
            Self::IvfHnswPq => "IVF_HNSW_PQ",
            Self::BTree => "BTREE",
            Self::Bitmap => "BITMAP",
            Self::LabelList => "LABEL_LIST",
            Self::Fts => "FTS",
        }
    }

    /// Whether it indexes vectors.
    pub fn is_vector(self) -> bool {
        matches!(self, Self::IvfFlat | Self::IvfPq | Self::IvfSq | Self::IvfHnswSq | Self::IvfHnswPq)
    }
}

/// The vector parameters of a request, as the LanceDB client names them.
#[derive(Debug, Default, Deserialize)]
struct VectorParams {
    metric_type: Option<String>,
    distance_type: Option<String>,
    num_partitions: Option<usize>,
    target_partition_size: Option<usize>,
    sample_rate: Option<usize>,
    max_iterations: Option<usize>,
    num_sub_vectors: Option<usize>,
    num_bits: Option<usize>,
    m: Option<usize>,
    ef_construction: Option<usize>,
}

/// A validated index request.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    /// The indexed column.
    pub column: String,
    /// What index to build.
    pub kind: IndexKind,
    /// Its name.
    pub name: String,
    /// Whether an index of the same name is replaced.
    pub replace: bool,
    /// The indexed column's field, as resolved.
    field: Field,
    /// The whole request, for the type's parameters.
    request: serde_json::Value,
}

impl IndexSpec {
    /// Reads a `create_index` body and checks it against `schema`: the column exists and
    /// suits the index type, and the parameters parse.
    pub fn resolve(request: &serde_json::Value, schema: &Schema) -> Result<Self> {
        let text = |key: &str| request.get(key).and_then(serde_json::Value::as_str);
        let column = text("column")
            .filter(|column| !column.is_empty())
            .ok_or_else(|| EngineError::invalid_input("create_index needs a column"))?;
        let field = schema
            .field_with_name(column)
            .map_err(|_| EngineError::invalid_input(format!("cannot index column '{column}': it does not exist")))?;
        let kind = match text("index_type") {
            Some(name) => IndexKind::parse(name)?,
            None if vector_column_of(field).is_some() => IndexKind::IvfPq,
            None => IndexKind::BTree,
        };
        check_column_type(field, kind)?;
        let name = text("name").filter(|name| !name.is_empty()).map_or_else(|| format!("{column}_idx"), str::to_string);
        // LanceDB's clients send `replace` only when false: an index of the same name is
        // replaced by default. The namespace spec has no `replace`, and an existing name is
        // an error; its clients name the table in the body (`id`), LanceDB's never do.
        let spec_dialect = request.get("id").is_some_and(serde_json::Value::is_array);
        let replace = request.get("replace").and_then(serde_json::Value::as_bool).unwrap_or(!spec_dialect);
        let spec =
            Self { column: column.to_string(), kind, name, replace, field: field.clone(), request: request.clone() };
        // Parameters are parsed now, so a bad one is the client's 400, not a failed build.
        match kind {
            IndexKind::Fts => {
                spec.fts_params()?;
            }
            kind if kind.is_vector() => {
                spec.vector_params()?;
            }
            _ => {}
        }
        Ok(spec)
    }

    /// Refuses a name an index of `dataset` has already, unless this spec replaces it.
    pub async fn check_name(&self, dataset: &Dataset) -> Result<()> {
        if self.replace || !dataset.load_indices().await?.iter().any(|index| index.name == self.name) {
            return Ok(());
        }
        Err(EngineError::IndexAlreadyExists { name: self.name.clone() })
    }

    /// The request as it was received (what the event bus keeps).
    pub fn request(&self) -> &serde_json::Value {
        &self.request
    }

    fn fts_params(&self) -> Result<InvertedIndexParams> {
        let mut params = self.request.clone();
        if let Some(object) = params.as_object_mut() {
            for key in ["column", "index_type", "name", "replace", "branch", "id", "identity", "context"] {
                object.remove(key);
            }
        }
        serde_json::from_value(params)
            .map_err(|error| EngineError::invalid_input(format!("invalid FTS parameters: {error}")))
    }

    fn vector_params(&self) -> Result<VectorIndexParams> {
        let params = VectorParams::deserialize(&self.request)
            .map_err(|error| EngineError::invalid_input(format!("invalid vector index parameters: {error}")))?;
        let metric_name = params.metric_type.or(params.distance_type).unwrap_or_else(|| "l2".to_string());
        let metric = DistanceType::try_from(metric_name.as_str()).map_err(|_| {
            EngineError::invalid_input(format!("unknown metric type '{metric_name}'; use l2, cosine, dot or hamming"))
        })?;
        let dimension = vector_column_of(&self.field).map_or(0, |column| column.dimension);
        let defaults = IvfBuildParams::default();
        let ivf = IvfBuildParams {
            num_partitions: params.num_partitions,
            target_partition_size: params.target_partition_size,
            sample_rate: params.sample_rate.unwrap_or(defaults.sample_rate),
            max_iters: params.max_iterations.unwrap_or(defaults.max_iters),
            ..defaults
        };
        let pq = || {
            let num_sub_vectors = params.num_sub_vectors.unwrap_or_else(|| suggested_sub_vectors(dimension));
            if num_sub_vectors == 0 || !dimension.is_multiple_of(num_sub_vectors) {
                return Err(EngineError::invalid_input(format!(
                    "num_sub_vectors {num_sub_vectors} must divide the dimension {dimension}"
                )));
            }
            Ok(PQBuildParams {
                num_sub_vectors,
                num_bits: params.num_bits.unwrap_or(8),
                max_iters: ivf.max_iters,
                sample_rate: ivf.sample_rate,
                ..PQBuildParams::default()
            })
        };
        let sq = SQBuildParams { sample_rate: ivf.sample_rate, ..SQBuildParams::default() };
        let hnsw = HnswBuildParams {
            m: params.m.unwrap_or(20),
            ef_construction: params.ef_construction.unwrap_or(300),
            ..HnswBuildParams::default()
        };
        Ok(match self.kind {
            IndexKind::IvfFlat => VectorIndexParams::with_ivf_flat_params(metric, ivf),
            IndexKind::IvfPq => VectorIndexParams::with_ivf_pq_params(metric, ivf.clone(), pq()?),
            IndexKind::IvfSq => VectorIndexParams::with_ivf_sq_params(metric, ivf, sq),
            IndexKind::IvfHnswSq => VectorIndexParams::with_ivf_hnsw_sq_params(metric, ivf, hnsw, sq),
            IndexKind::IvfHnswPq => VectorIndexParams::with_ivf_hnsw_pq_params(metric, ivf.clone(), hnsw, pq()?),
            other => return Err(EngineError::internal(format!("{} is not a vector index", other.as_str()))),
        })
    }

    /// Lance's index type and parameters for the spec.
    fn lance_params(&self) -> Result<(IndexType, Box<dyn IndexParams>)> {
        let scalar = |builtin| -> Box<dyn IndexParams> { Box::new(ScalarIndexParams::for_builtin(builtin)) };
        Ok(match self.kind {
            IndexKind::Fts => (IndexType::Inverted, Box::new(self.fts_params()?)),
            IndexKind::BTree => (IndexType::BTree, scalar(BuiltinIndexType::BTree)),
            IndexKind::Bitmap => (IndexType::Bitmap, scalar(BuiltinIndexType::Bitmap)),
            IndexKind::LabelList => (IndexType::LabelList, scalar(BuiltinIndexType::LabelList)),
            _ => (IndexType::Vector, Box::new(self.vector_params()?)),
        })
    }

    /// Builds the index on `dataset` (the table it was resolved against) and commits it
    /// (a new version).
    pub async fn build(&self, dataset: &mut Dataset) -> Result<()> {
        let (index_type, params) = self.lance_params()?;
        let columns = [self.column.as_str()];
        dataset.create_index(&columns, index_type, Some(self.name.clone()), params.as_ref(), self.replace).await?;
        Ok(())
    }

    /// Builds the index as segments over runs of whole fragments of at most `vector_rows`
    /// rows (a vector index) or `index_rows` (full-text, BTREE and BITMAP indexes) when
    /// the table makes several such runs, so that it needs no rebuild as segments later:
    /// full-text and scalar kinds one segment per run with the spec's parameters,
    /// committed together; a vector index as its definition first, then trained once and
    /// built as segments by lance's split optimize (two commits). Otherwise, or with 0
    /// rows, as [`Self::build`].
    pub async fn build_segmented(&self, dataset: &mut Dataset, vector_rows: u64, index_rows: u64) -> Result<()> {
        let rows = match self.kind {
            kind if kind.is_vector() => vector_rows,
            IndexKind::Fts | IndexKind::BTree | IndexKind::Bitmap => index_rows,
            _ => 0,
        };
        let runs = if rows > 0 { fragment_runs(dataset, rows).await? } else { Vec::new() };
        if runs.len() < 2 {
            return self.build(dataset).await;
        }
        let (index_type, params) = self.lance_params()?;
        if !self.kind.is_vector() {
            return build_segments(dataset, &self.name, &self.column, index_type, params.as_ref(), self.replace, runs)
                .await;
        }
        let columns = [self.column.as_str()];
        let definition = dataset.create_index_builder(&columns, index_type, params.as_ref());
        definition.name(self.name.clone()).replace(self.replace).train(false).await?;
        optimize_indexes(dataset, vec![self.name.clone()], None, Some(rows), false).await?;
        Ok(())
    }
}

/// LanceDB's choice of PQ sub-vectors: dimension / 16, else / 8, else 1.
fn suggested_sub_vectors(dimension: usize) -> usize {
    if dimension.is_multiple_of(16) && dimension >= 16 {
        dimension / 16
    } else if dimension.is_multiple_of(8) && dimension >= 8 {
        dimension / 8
    } else {
        1
    }
}

/// Whether `field` can carry a `kind` index, with the reason when not.
fn check_column_type(field: &Field, kind: IndexKind) -> Result<()> {
    let data_type = field.data_type();
    let fits = match kind {
        _ if kind.is_vector() => vector_column_of(field).is_some(),
        IndexKind::Fts => match data_type {
            DataType::Utf8 | DataType::LargeUtf8 => true,
            DataType::List(item) | DataType::LargeList(item) => {
                matches!(item.data_type(), DataType::Utf8 | DataType::LargeUtf8)
            }
            _ => false,
        },
        IndexKind::LabelList => matches!(data_type, DataType::List(_) | DataType::LargeList(_)),
        _ => {
            data_type.is_primitive()
                || matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Boolean | DataType::Binary)
        }
    };
    if fits {
        return Ok(());
    }
    Err(EngineError::invalid_input(format!(
        "cannot build a {} index on column '{}' of type {data_type}",
        kind.as_str(),
        field.name()
    )))
}

impl Catalog {
    /// Builds the index `spec` describes on the latest version; returns the new version.
    pub async fn build_index(&self, id: &TableId, spec: &IndexSpec) -> Result<Dataset> {
        let dataset = self
            .write_latest(id, "an index build", |mut dataset| async move {
                spec.build(&mut dataset).await?;
                Ok(dataset)
            })
            .await?;
        Ok(self.committed(id, dataset).await)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn schema() -> Schema {
        let vector = DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), 32);
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
            Field::new("vector", vector, true),
        ])
    }

    #[test]
    fn defaults_follow_the_lancedb_client() {
        let spec = IndexSpec::resolve(&serde_json::json!({"column": "vector"}), &schema()).expect("valid");
        assert_eq!((spec.kind, spec.name.as_str(), spec.replace), (IndexKind::IvfPq, "vector_idx", true));
        let scalar =
            IndexSpec::resolve(&serde_json::json!({"column": "id", "replace": false}), &schema()).expect("valid");
        assert_eq!((scalar.kind, scalar.name.as_str(), scalar.replace), (IndexKind::BTree, "id_idx", false));
        // The namespace spec's dialect (the table named in the body) does not replace.
        let spec_dialect = serde_json::json!({"id": ["t"], "column": "text", "index_type": "FTS"});
        assert!(!IndexSpec::resolve(&spec_dialect, &schema()).expect("valid").replace);
        let told = serde_json::json!({"id": ["t"], "column": "id", "replace": true});
        assert!(IndexSpec::resolve(&told, &schema()).expect("valid").replace);
        assert_eq!(suggested_sub_vectors(32), 2);
        assert_eq!(suggested_sub_vectors(24), 3);
        assert_eq!(suggested_sub_vectors(5), 1);
        assert_eq!(IndexKind::parse("IvfHnswSq").expect("known"), IndexKind::IvfHnswSq);
        assert_eq!(IndexKind::parse("INVERTED").expect("known"), IndexKind::Fts);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let error = |body: serde_json::Value| IndexSpec::resolve(&body, &schema()).expect_err("invalid").to_string();
        assert!(error(serde_json::json!({"column": "nope"})).contains("does not exist"));
        assert!(
            error(serde_json::json!({"column": "vector", "index_type": "IVF_MAGIC"})).contains("unknown index type")
        );
        assert!(error(serde_json::json!({"column": "id", "index_type": "FTS"})).contains("FTS index on column 'id'"));
        assert!(error(serde_json::json!({"column": "text", "index_type": "IVF_PQ"})).contains("IVF_PQ"));
        assert!(error(serde_json::json!({"column": "vector", "metric_type": "manhattan"})).contains("metric"));
        assert!(error(serde_json::json!({"column": "vector", "num_sub_vectors": 5})).contains("divide"));
        assert!(error(serde_json::json!({"index_type": "BTREE"})).contains("needs a column"));
        assert!(
            error(serde_json::json!({"column": "text", "index_type": "FTS", "with_position": "x"})).contains("FTS")
        );
    }
}
