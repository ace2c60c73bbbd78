//! A table as DataFusion sees it. In-process it is lance's `LanceTableProvider`; with plan
//! executors, a scan has one partition per executor, each reading the fragments placed on
//! that executor with the pushed-down filter, projection and limit, while the query node
//! runs the rest of the plan (joins, aggregates, sorts) over the partitions.

use std::fmt;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNode;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::CustomDialectBuilder;
use futures::{StreamExt, TryStreamExt};
use lance::Dataset;
use lance::datafusion::LanceTableProvider;
use lancefleet_proto::v1::{FragmentQuery, OutputColumn, Projection};
use lancefleet_proto::{ErrorCode, ErrorStatus};

use super::{childless, conform, leaf_properties};
use crate::dispatch::{Dispatcher, Pinned, Spread};
use crate::error::ApiError;
use crate::state::AppState;

/// One table at a pinned version.
#[derive(Debug)]
pub struct FleetTable {
    state: AppState,
    dataset: Arc<Dataset>,
    uri: String,
    lance: LanceTableProvider,
}

impl FleetTable {
    /// The table `dataset` (at `uri`) of `state`.
    pub fn new(state: AppState, dataset: Arc<Dataset>, uri: String) -> Self {
        let lance = LanceTableProvider::new(dataset.clone(), false, false);
        Self { state, dataset, uri, lance }
    }

    /// Whether scans go to plan executors (an empty version has nothing to place).
    fn distributed(&self) -> bool {
        matches!(self.state.dispatcher.as_ref(), Dispatcher::Cluster(_)) && !self.dataset.fragments().is_empty()
    }
}

#[async_trait]
impl TableProvider for FleetTable {
    fn schema(&self) -> SchemaRef {
        self.lance.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        if !self.distributed() {
            return self.lance.supports_filters_pushdown(filters);
        }
        Ok(filters
            .iter()
            .map(|filter| match lance_filter(filter) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        session: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let cluster = match self.state.dispatcher.as_ref() {
            Dispatcher::Cluster(cluster) if self.distributed() => cluster,
            _ => return self.lance.scan(session, projection, filters, limit).await,
        };
        let schema = match projection {
            Some(indices) => Arc::new(self.schema().project(indices)?),
            None => self.schema(),
        };
        let filters = filters
            .iter()
            .map(|filter| {
                lance_filter(filter).map(|sql| format!("({sql})")).ok_or_else(|| {
                    DataFusionError::Internal(format!("filter {filter} was not pushed down but arrived in the scan"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let columns = schema.fields().iter().map(|field| OutputColumn { name: field.name().clone(), expression: None });
        let query = FragmentQuery {
            filter: (!filters.is_empty()).then(|| filters.join(" AND ")),
            prefilter: true,
            projection: Some(Projection { columns: columns.collect() }),
            limit: limit.map(|limit| limit as u64),
            // A projection without columns (`count(*)`) still needs rows to count.
            with_row_address: schema.fields().is_empty(),
            ..Default::default()
        };
        let fragments = Pinned { dataset: &self.dataset, uri: &self.uri }.fragment_ids();
        let shares = cluster.placement(&self.uri, Spread::split(&fragments))?.into_iter().collect::<Vec<_>>();
        if shares.is_empty() {
            let status = ErrorStatus::new(ErrorCode::Unavailable, "no plan executors are available");
            return Err(ApiError::Executor { node: "-".into(), status }.into());
        }
        Ok(Arc::new(ExecutorScanExec::new(self, shares, query, schema)))
    }
}

/// `filter` as a lance SQL predicate, when lance evaluates it exactly as DataFusion does:
/// columns, literals, comparisons, boolean logic, `IN`, `BETWEEN`, `LIKE`, `IS NULL` and
/// casts. Anything else (functions, subqueries) stays on the query node.
fn lance_filter(filter: &Expr) -> Option<String> {
    let portable = !filter
        .exists(|expr| {
            Ok(!matches!(
                expr,
                Expr::Column(_)
                    | Expr::Literal(..)
                    | Expr::BinaryExpr(_)
                    | Expr::Not(_)
                    | Expr::IsNull(_)
                    | Expr::IsNotNull(_)
                    | Expr::Between(_)
                    | Expr::InList(_)
                    | Expr::Cast(_)
                    | Expr::Negative(_)
            ) && !matches!(expr, Expr::Like(like) if !like.case_insensitive))
        })
        .unwrap_or(true);
    if !portable {
        return None;
    }
    let dialect = CustomDialectBuilder::new().with_identifier_quote_style('`').build();
    let sql = Unparser::new(&dialect).expr_to_sql(&unnormalize_col(filter.clone())).ok()?;
    Some(sql.to_string())
}

/// A scan whose partitions are plan executors' shares of a table's fragments.
#[derive(Debug)]
struct ExecutorScanExec {
    dispatcher: Arc<Dispatcher>,
    dataset: Arc<Dataset>,
    uri: String,
    /// One partition per executor: its node id and fragments.
    shares: Vec<(Arc<str>, Vec<u64>)>,
    query: FragmentQuery,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl ExecutorScanExec {
    fn new(table: &FleetTable, shares: Vec<(Arc<str>, Vec<u64>)>, query: FragmentQuery, schema: SchemaRef) -> Self {
        let properties = leaf_properties(schema.clone(), shares.len(), EmissionType::Incremental);
        Self {
            dispatcher: table.state.dispatcher.clone(),
            dataset: table.dataset.clone(),
            uri: table.uri.clone(),
            shares,
            query,
            schema,
            properties,
        }
    }
}

impl DisplayAs for ExecutorScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, formatter: &mut fmt::Formatter) -> fmt::Result {
        let shares =
            self.shares.iter().map(|(node, fragments)| format!("{node}: {fragments:?}")).collect::<Vec<_>>().join(", ");
        write!(formatter, "LanceFleetExecutorScan: table={}, version={}", self.uri, self.dataset.version().version)?;
        write!(formatter, ", executors=[{shares}]")?;
        if let Some(filter) = &self.query.filter {
            write!(formatter, ", filter={filter}")?;
        }
        if let Some(limit) = self.query.limit {
            write!(formatter, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ExecutorScanExec {
    fn name(&self) -> &str {
        "LanceFleetExecutorScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        childless(self, &children)
    }

    /// Sends partition `partition`'s fragments to their executor (with the dispatcher's
    /// retry on the next replica while no row has arrived) and streams the rows on, in
    /// the scan's schema, as they come.
    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let (_, fragments) = self
            .shares
            .get(partition)
            .cloned()
            .ok_or_else(|| DataFusionError::Internal(format!("no partition {partition} in the executor scan")))?;
        let (dispatcher, dataset, uri) = (self.dispatcher.clone(), self.dataset.clone(), self.uri.clone());
        let (query, schema) = (self.query.clone(), self.schema.clone());
        let rows = futures::stream::once(async move {
            let Dispatcher::Cluster(cluster) = dispatcher.as_ref() else {
                return Err(DataFusionError::Internal("an executor scan without executors".into()));
            };
            let pinned = Pinned { dataset: &dataset, uri: &uri };
            let streams = cluster.scatter_streams(pinned, Spread::split(&fragments), &query).await?;
            Ok(futures::stream::iter(streams).flatten().map(move |batch| conform(&schema, &batch?)))
        })
        .try_flatten()
        .boxed();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::Column;
    use datafusion::prelude::{col, lit};

    #[test]
    fn portable_filters_become_lance_sql() {
        let mixed_case = Expr::Column(Column::from_name("Name"));
        let filter = col("x").gt(lit(5)).and(mixed_case.like(lit("a%")));
        assert_eq!(lance_filter(&filter).as_deref(), Some("((`x` > 5) AND `Name` LIKE 'a%')"));
        let qualified = Expr::Column(Column::new(Some("t"), "x"));
        assert_eq!(lance_filter(&qualified.is_null()).as_deref(), Some("`x` IS NULL"));
        assert!(lance_filter(&col("x").in_list(vec![lit(1), lit(2)], false)).is_some());
    }

    #[test]
    fn functions_stay_on_the_query_node() {
        let filter = datafusion::functions::expr_fn::upper(col("name")).eq(lit("A"));
        assert_eq!(lance_filter(&filter), None);
        assert_eq!(lance_filter(&col("name").ilike(lit("a%"))), None);
    }
}
