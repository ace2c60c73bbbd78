//! The query a client asks for, as the LanceDB REST `query` body carries it.
//!
//! The same type travels from the query node to wherever the query runs; parsing and
//! validation that need no table happen here, the rest in [`crate::plan`].

use lance_index::scalar::FullTextSearchQuery;
use lance_index::scalar::inverted::query::FtsQuery;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{EngineError, Result};

/// Default number of results of a vector search, as in LanceDB.
pub const DEFAULT_TOP_K: u64 = 10;

/// A search or scan over one table (the body of `POST /v1/table/{id}/query/`).
///
/// Unknown fields are ignored: newer clients send fields older servers do not know.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct TableQuery {
    /// `[]` (no vector search), one vector, or several vectors (`[[…], […]]`).
    pub vector: QueryVectors,
    /// Number of results. Plain scans without a limit send `i64::MAX`.
    pub k: Option<u64>,
    /// Results to skip before the first returned one.
    pub offset: Option<u64>,
    /// SQL predicate in lance's dialect.
    pub filter: Option<String>,
    /// Filter before (true) or after (false) the vector search; see [`Self::prefilter`]
    /// for a query that does not say.
    pub prefilter: Option<bool>,
    /// Projection: column names, or `{alias: sql expression}` in order.
    pub columns: Option<Projection>,
    /// Return `_rowid`.
    pub with_row_id: bool,
    /// Skip the flat search of unindexed rows.
    pub fast_search: bool,
    /// Search exactly, ignoring any vector index.
    pub bypass_vector_index: bool,
    /// `l2`, `cosine`, `dot` or `hamming`.
    pub distance_type: Option<String>,
    /// The vector column; inferred from the query dimension when absent.
    pub vector_column: Option<String>,
    /// Legacy number of IVF partitions to probe (sets both bounds).
    pub nprobes: Option<usize>,
    /// Lower bound of IVF partitions to probe.
    pub minimum_nprobes: Option<usize>,
    /// Upper bound of IVF partitions to probe; 0 means unbounded.
    pub maximum_nprobes: Option<usize>,
    /// Smallest distance to return (inclusive).
    pub lower_bound: Option<f32>,
    /// Largest distance to return (exclusive).
    pub upper_bound: Option<f32>,
    /// HNSW search breadth.
    pub ef: Option<usize>,
    /// Re-rank `k * refine_factor` candidates with exact distances.
    pub refine_factor: Option<u32>,
    /// Read this version instead of the latest.
    pub version: Option<u64>,
    /// Full-text search: `{"query": <lance FtsQuery>}` (the structured form), or the
    /// legacy `{"columns": [...], "query": "text"}`.
    pub full_text_query: Option<FullTextSearch>,
    /// Sort a scan by these columns, in order (`[{"column_name", "ascending",
    /// "nulls_first"}]`); the offset and limit apply after the sort.
    pub order_by: Option<Vec<OrderBy>>,
}

/// One column of a scan's sort order, as the LanceDB clients send it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct OrderBy {
    /// The column (a top-level field, or a nested one as `a.b`).
    pub column_name: String,
    /// Smallest first (the default).
    #[serde(default = "default_true")]
    pub ascending: bool,
    /// Nulls before the values (default: after them).
    #[serde(default)]
    pub nulls_first: bool,
}

fn default_true() -> bool {
    true
}

/// The query vectors of a [`TableQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryVectors(pub Vec<Vec<f32>>);

impl<'de> Deserialize<'de> for QueryVectors {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        /// LanceDB's bare arrays, or the namespace spec's object naming its form.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Many(Vec<Vec<f32>>),
            One(Vec<f32>),
            Spec { single_vector: Option<Vec<f32>>, multi_vector: Option<Vec<Vec<f32>>> },
        }
        let vectors = match Option::<Wire>::deserialize(deserializer)? {
            None | Some(Wire::Spec { single_vector: None, multi_vector: None }) => Vec::new(),
            Some(Wire::One(vector) | Wire::Spec { single_vector: Some(vector), multi_vector: None }) => {
                if vector.is_empty() { Vec::new() } else { vec![vector] }
            }
            Some(Wire::Many(vectors) | Wire::Spec { single_vector: None, multi_vector: Some(vectors) }) => vectors,
            Some(Wire::Spec { single_vector: Some(_), multi_vector: Some(_) }) => {
                return Err(serde::de::Error::custom("vector: give single_vector or multi_vector, not both"));
            }
        };
        Ok(Self(vectors))
    }
}

/// Which columns a query returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    /// Existing columns by name.
    Columns(Vec<String>),
    /// `(output name, SQL expression)` pairs, in the client's order.
    Expressions(Vec<(String, String)>),
}

impl<'de> Deserialize<'de> for Projection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(ProjectionVisitor)
    }
}

/// Visits the map form entry by entry, so the client's key order (which is significant)
/// survives without making every `serde_json::Map` in the build order-preserving.
struct ProjectionVisitor;

impl<'de> serde::de::Visitor<'de> for ProjectionVisitor {
    type Value = Projection;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a list of column names or an object of {alias: sql expression}")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Projection, A::Error> {
        let mut names = Vec::new();
        while let Some(name) = seq.next_element::<String>()? {
            names.push(name);
        }
        Ok(Projection::Columns(names))
    }

    /// LanceDB's `{alias: sql expression}`, or the namespace spec's
    /// `{"column_names": [...], "column_aliases": {alias: column}}`.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Projection, A::Error> {
        let mut pairs = Vec::new();
        let mut spec = SpecColumns::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "column_names" => spec.names = map.next_value::<Option<Vec<String>>>()?,
                "column_aliases" => spec.aliases = map.next_value::<Option<OrderedPairs>>()?.map(|pairs| pairs.0),
                _ => pairs.push((key, map.next_value::<String>()?)),
            }
        }
        match (spec.names, spec.aliases) {
            (None, None) => Ok(Projection::Expressions(pairs)),
            _ if !pairs.is_empty() => Err(serde::de::Error::custom(
                "columns: column_names and column_aliases cannot be mixed with {alias: expression} entries",
            )),
            (Some(names), None) => Ok(Projection::Columns(names)),
            (names, Some(aliases)) => {
                let named = names.unwrap_or_default().into_iter().map(|name| (name.clone(), quoted_path(&name)));
                let aliased = aliases.into_iter().map(|(alias, path)| (alias, quoted_path(&path)));
                Ok(Projection::Expressions(named.chain(aliased).collect()))
            }
        }
    }
}

/// The namespace spec's projection object.
#[derive(Default)]
struct SpecColumns {
    names: Option<Vec<String>>,
    aliases: Option<Vec<(String, String)>>,
}

/// A JSON object's entries in the order they were sent.
struct OrderedPairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedPairs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedPairs;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an object of {alias: column}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<OrderedPairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(OrderedPairs(pairs))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A field path as a SQL expression: each segment quoted with backticks, so a path the
/// spec sends (`a.b`, or `` `a.b`.c `` for a segment with a dot) selects that field and
/// nothing else. Segments already quoted are kept as they are.
pub(crate) fn quoted_path(path: &str) -> String {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('`') {
            // A quoted segment ends at a backtick that is not doubled.
            let mut end = 0;
            let bytes = quoted.as_bytes();
            while end < bytes.len() {
                if bytes[end] == b'`' {
                    if bytes.get(end + 1) == Some(&b'`') {
                        end += 2;
                        continue;
                    }
                    break;
                }
                end += 1;
            }
            segments.push(format!("`{}`", &quoted[..end.min(quoted.len())]));
            rest = quoted.get(end + 1..).unwrap_or_default().trim_start_matches('.');
        } else {
            let (segment, tail) = rest.split_once('.').unwrap_or((rest, ""));
            segments.push(format!("`{}`", segment.replace('`', "``")));
            rest = tail;
        }
    }
    segments.join(".")
}

/// A full-text search as lance's [`FtsQuery`], read from either form the LanceDB clients
/// send. A legacy query names its columns beside the text; no columns (in either form)
/// means every column with a full-text index, as lance resolves it.
#[derive(Debug, Clone, PartialEq)]
pub struct FullTextSearch(pub FtsQuery);

impl FullTextSearch {
    /// A query as SQL's `fts` takes it: a lance structured query in JSON
    /// (`{"match": {...}}`), else plain text searched in every indexed column.
    pub fn from_text_or_json(text: &str) -> Result<Self> {
        match serde_json::from_str::<Value>(text) {
            Ok(structured @ Value::Object(_)) => serde_json::from_value::<FtsQuery>(structured)
                .map(Self)
                .map_err(|error| EngineError::invalid_input(format!("invalid full-text query: {error}"))),
            _ => Ok(Self(FullTextSearchQuery::new(text.to_string()).query)),
        }
    }
}

impl<'de> Deserialize<'de> for FullTextSearch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let invalid = |reason: String| serde::de::Error::custom(format!("invalid full_text_query: {reason}"));
        let mut body = Value::deserialize(deserializer)?;
        // The namespace spec wraps the same two forms: `{"string_query": {"query": text,
        // "columns": [...]}}` and `{"structured_query": {"query": <FtsQuery>}}`.
        for form in ["string_query", "structured_query"] {
            if let Some(inner) = body.get_mut(form).map(Value::take) {
                body = inner;
                break;
            }
        }
        match body.get("query") {
            Some(Value::String(text)) => {
                let columns = match body.get("columns") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(columns) => serde_json::from_value::<Vec<String>>(columns.clone())
                        .map_err(|error| invalid(format!("columns: {error}")))?,
                };
                let query = FullTextSearchQuery::new(text.clone());
                if columns.is_empty() {
                    return Ok(Self(query.query));
                }
                let query = query.with_columns(&columns).map_err(|error| invalid(error.to_string()))?;
                Ok(Self(query.query))
            }
            Some(structured @ Value::Object(_)) => serde_json::from_value::<FtsQuery>(structured.clone())
                .map(Self)
                .map_err(|error| invalid(error.to_string())),
            _ => Err(invalid("expected {\"query\": <text or structured query>}".into())),
        }
    }
}

impl TableQuery {
    /// Whether a filter applies before the search: what the query says, before when it
    /// does not (LanceDB's default).
    pub fn prefilter(&self) -> bool {
        self.prefilter.unwrap_or(true)
    }

    /// Whether this is a vector search (as opposed to a plain or filtered scan).
    pub fn is_vector_search(&self) -> bool {
        !self.vector.0.is_empty()
    }

    /// The full-text query, if this is a full-text search.
    pub fn full_text(&self) -> Option<&FtsQuery> {
        self.full_text_query.as_ref().map(|search| &search.0)
    }

    /// Whether this is a full-text search.
    pub fn is_full_text_search(&self) -> bool {
        self.full_text_query.is_some()
    }

    /// The row limit: `None` for "no limit" (what plain scans send as `i64::MAX`).
    pub fn limit(&self) -> Option<u64> {
        match self.k {
            Some(k) if k >= i64::MAX as u64 => None,
            Some(k) => Some(k),
            None if self.is_vector_search() || self.is_full_text_search() => Some(DEFAULT_TOP_K),
            None => None,
        }
    }

    /// Checks what can be checked without the table.
    pub fn validate(&self) -> Result<()> {
        if self.is_full_text_search() && self.is_vector_search() {
            return Err(EngineError::invalid_input(
                "a query is either a vector search or a full-text search; hybrid search sends one of each",
            ));
        }
        if self.order_by.as_ref().is_some_and(|order| !order.is_empty())
            && (self.is_vector_search() || self.is_full_text_search())
        {
            return Err(EngineError::invalid_input(
                "order_by sorts scans; a vector or full-text search is ordered by its distance or score",
            ));
        }
        if let Some(offset) = self.offset
            && offset > i64::MAX as u64
        {
            return Err(EngineError::invalid_input(format!("offset {offset} is too large")));
        }
        let vectors = &self.vector.0;
        if let Some(first) = vectors.first() {
            if first.is_empty() {
                return Err(EngineError::invalid_input("query vectors must not be empty"));
            }
            if let Some(other) = vectors.iter().find(|vector| vector.len() != first.len()) {
                return Err(EngineError::invalid_input(format!(
                    "all query vectors must have the same dimension, got {} and {}",
                    first.len(),
                    other.len()
                )));
            }
            if vectors.iter().flatten().any(|value| !value.is_finite()) {
                return Err(EngineError::invalid_input("query vectors must contain only finite numbers"));
            }
            if self.limit() == Some(0) {
                return Err(EngineError::invalid_input("k must be positive for a vector search"));
            }
        }
        if let (Some(lower), Some(upper)) = (self.lower_bound, self.upper_bound)
            && lower > upper
        {
            return Err(EngineError::invalid_input(format!("lower_bound {lower} is greater than upper_bound {upper}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> TableQuery {
        serde_json::from_str(json).expect("valid query json")
    }

    #[test]
    fn default_vector_query_from_the_client() {
        let query = parse(
            r#"{"prefilter":true,"lower_bound":null,"upper_bound":null,"k":10,"ef":null,
                "refine_factor":null,"version":null,"vector":[0.10000000149011612,0.2]}"#,
        );
        assert_eq!(query.vector.0, vec![vec![0.1_f32, 0.2]]);
        assert_eq!(query.limit(), Some(10));
        assert!(query.prefilter());
        assert!(parse(r#"{"vector":[0.1],"filter":"a > 1"}"#).prefilter(), "prefiltered unless told otherwise");
        assert!(!parse(r#"{"vector":[0.1],"prefilter":false}"#).prefilter());
        assert!(query.validate().is_ok());
    }

    #[test]
    fn plain_scan_with_max_k_has_no_limit() {
        let query =
            parse(r#"{"filter":"`A` > 0","k":9223372036854775807,"prefilter":true,"vector":[],"version":null}"#);
        assert!(!query.is_vector_search());
        assert_eq!(query.limit(), None);
        assert_eq!(query.filter.as_deref(), Some("`A` > 0"));
    }

    #[test]
    fn several_vectors_and_unknown_fields() {
        let query = parse(r#"{"vector":[[1,2],[3,4]],"k":3,"use_lsm":false,"search_effort":0.5}"#);
        assert_eq!(query.vector.0.len(), 2);
        assert!(query.validate().is_ok());
    }

    #[test]
    fn projections_keep_the_client_order() {
        let names = parse(r#"{"vector":[],"columns":["b","a"]}"#);
        assert_eq!(names.columns, Some(Projection::Columns(vec!["b".into(), "a".into()])));
        let expressions = parse(r#"{"vector":[],"columns":{"z":"a + 1","a":"b"}}"#);
        assert_eq!(
            expressions.columns,
            Some(Projection::Expressions(vec![("z".into(), "a + 1".into()), ("a".into(), "b".into())]))
        );
        assert!(serde_json::from_str::<TableQuery>(r#"{"columns":[1]}"#).is_err());
    }

    #[test]
    fn full_text_queries_in_both_wire_forms() {
        let legacy = parse(r#"{"vector":[],"k":5,"full_text_query":{"columns":["text"],"query":"hello world"}}"#);
        let FtsQuery::Match(matched) = legacy.full_text().expect("present") else {
            panic!("a legacy query is a match query");
        };
        assert_eq!((matched.column.as_deref(), matched.terms.as_str()), (Some("text"), "hello world"));
        let structured = parse(
            r#"{"vector":[],"full_text_query":{"query":{"phrase":{"column":"text","terms":"hello world","slop":0}}}}"#,
        );
        assert!(matches!(structured.full_text(), Some(FtsQuery::Phrase(_))));
        assert_eq!(structured.limit(), Some(DEFAULT_TOP_K));
        assert!(structured.validate().is_ok());
        assert_eq!(parse(r#"{"vector":[]}"#).full_text(), None);
    }

    #[test]
    fn the_namespace_specs_dialect_reads_as_lancedbs() {
        let spec = parse(
            r#"{"id":["ns","t"],"vector":{"single_vector":[1,2]},"k":3,"columns":{"column_names":["id","a.b"]}}"#,
        );
        assert_eq!(spec.vector.0, vec![vec![1.0, 2.0]]);
        assert_eq!(spec.columns, Some(Projection::Columns(vec!["id".into(), "a.b".into()])));
        assert_eq!(parse(r#"{"vector":{"multi_vector":[[1],[2]]}}"#).vector.0, vec![vec![1.0], vec![2.0]]);
        assert!(parse(r#"{"vector":{"single_vector":[]}}"#).vector.0.is_empty());
        assert!(
            serde_json::from_str::<TableQuery>(r#"{"vector":{"single_vector":[1],"multi_vector":[[1]]}}"#).is_err()
        );
        let aliased = parse(r#"{"columns":{"column_names":["id"],"column_aliases":{"z":"a.b","y":"`c.d`.e"}}}"#);
        let expected = [("id", "`id`"), ("z", "`a`.`b`"), ("y", "`c.d`.`e`")];
        let expected = expected.iter().map(|(alias, sql)| (alias.to_string(), sql.to_string())).collect();
        assert_eq!(aliased.columns, Some(Projection::Expressions(expected)));
        assert!(serde_json::from_str::<TableQuery>(r#"{"columns":{"column_names":["id"],"x":"id"}}"#).is_err());
        let text = parse(r#"{"full_text_query":{"string_query":{"query":"hello","columns":["text"]}}}"#);
        assert!(matches!(text.full_text(), Some(FtsQuery::Match(matched)) if matched.terms == "hello"));
        let structured = parse(
            r#"{"full_text_query":{"structured_query":{"query":{"phrase":{"column":"text","terms":"a b","slop":0}}}}}"#,
        );
        assert!(matches!(structured.full_text(), Some(FtsQuery::Phrase(_))));
    }

    #[test]
    fn invalid_queries_are_refused() {
        assert!(parse(r#"{"vector":[[1,2],[3]]}"#).validate().is_err());
        assert!(parse(r#"{"vector":[1,2],"k":0}"#).validate().is_err());
        assert!(parse(r#"{"vector":[1,2],"lower_bound":2,"upper_bound":1}"#).validate().is_err());
        let hybrid = parse(r#"{"vector":[1,2],"full_text_query":{"columns":[],"query":"x"}}"#);
        assert!(matches!(hybrid.validate(), Err(EngineError::InvalidInput { .. })));
        let garbage =
            serde_json::from_str::<TableQuery>(r#"{"vector":[],"full_text_query":{"query":{"nonsense":{}}}}"#);
        assert!(garbage.expect_err("unknown kind").to_string().contains("invalid full_text_query"));
        let missing = serde_json::from_str::<TableQuery>(r#"{"vector":[],"full_text_query":{"columns":["a"]}}"#);
        assert!(missing.expect_err("no query").to_string().contains("invalid full_text_query"));
        assert!(serde_json::from_str::<TableQuery>(r#"{"vector":"abc"}"#).is_err());
    }
}
