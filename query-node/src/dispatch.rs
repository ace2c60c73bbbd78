//! Runs compiled queries: in-process (standalone without executors) or spread over plan
//! executors by fragment, then merges the partial results exactly.

mod assignment;
mod cluster;
mod explain;
mod hedge;

use std::collections::HashMap;

use futures::future::try_join_all;
use lance::Dataset;
use lancefleet_engine::read::execute::{count, execute_collect};
use lancefleet_engine::read::merge::{merge, prepend_query_index};
use lancefleet_engine::{QueryOutput, QueryPlan, Scope};
use lancefleet_proto::v1::FragmentQuery;

pub use cluster::Cluster;

use crate::error::ApiError;

/// Where fragment queries run.
#[derive(Debug)]
pub enum Dispatcher {
    /// In this process, over the whole pinned version.
    Local,
    /// On plan executors, each over the fragments placed on it.
    Cluster(Box<Cluster>),
}

/// A table version pinned for one request.
#[derive(Debug, Clone, Copy)]
pub struct Pinned<'a> {
    /// The dataset at the pinned version.
    pub dataset: &'a Dataset,
    /// Its URI, the placement key of its fragments.
    pub uri: &'a str,
}

/// The fragments one scatter reads and how they may be divided among executors.
#[derive(Debug, Clone, Copy)]
pub struct Spread<'a> {
    /// The pinned version's fragments, in manifest order.
    pub fragments: &'a [u64],
    /// One executor reads the whole version (a part that does not split); it is placed
    /// where the first fragment lives.
    pub whole_table: bool,
    /// Fragments that must be read by one executor together.
    pub colocate: &'a [Vec<u64>],
}

impl<'a> Spread<'a> {
    /// Every fragment of `fragments` placed on its own first-choice executor.
    pub fn split(fragments: &'a [u64]) -> Self {
        Self { fragments, whole_table: false, colocate: &[] }
    }

    /// How `plan` spreads over `fragments`.
    fn of(plan: &'a QueryPlan, fragments: &'a [u64]) -> Self {
        Self { fragments, whole_table: !plan.splits, colocate: &plan.colocate }
    }

    /// The fragments placement places: all, or the first for a whole-table part.
    fn placed(&self) -> &'a [u64] {
        if self.whole_table { &self.fragments[..self.fragments.len().min(1)] } else { self.fragments }
    }
}

impl Pinned<'_> {
    /// The ids of the pinned version's fragments, in manifest order.
    pub fn fragment_ids(&self) -> Vec<u64> {
        self.dataset.fragments().iter().map(|fragment| fragment.id).collect()
    }
}

impl Dispatcher {
    /// Runs `plan` over `pinned` and returns the merged answer.
    pub async fn query(&self, pinned: Pinned<'_>, plan: &QueryPlan) -> Result<QueryOutput, ApiError> {
        let fragments = pinned.fragment_ids();
        let positions = fragments.iter().enumerate().map(|(position, id)| (*id, position as u64)).collect();
        let parts = plan.parts.iter().map(|part| self.query_part(pinned, plan, part, &fragments, &positions));
        let outputs = try_join_all(parts).await?;
        if plan.query_index {
            return Ok(prepend_query_index(outputs)?);
        }
        outputs.into_iter().next().ok_or_else(|| ApiError::from(lancefleet_engine::EngineError::internal("empty plan")))
    }

    async fn query_part(
        &self,
        pinned: Pinned<'_>,
        plan: &QueryPlan,
        part: &FragmentQuery,
        fragments: &[u64],
        positions: &HashMap<u64, u64>,
    ) -> Result<QueryOutput, ApiError> {
        let partials = match self {
            // An empty version has no fragments to place; lance still knows its schema.
            Self::Cluster(cluster) if !fragments.is_empty() => {
                let spread = Spread::of(plan, fragments);
                let part = cluster.divided(pinned, spread, plan, part).await?;
                cluster.scatter_query(pinned, spread, &part).await?
            }
            Self::Cluster(_) | Self::Local => vec![execute_collect(pinned.dataset, Scope::WholeTable, part).await?],
        };
        Ok(merge(&plan.merge, positions, partials)?)
    }

    /// Counts the rows of `pinned` matching `filter`.
    pub async fn count_rows(&self, pinned: Pinned<'_>, filter: Option<&str>) -> Result<u64, ApiError> {
        let fragments = pinned.fragment_ids();
        match self {
            Self::Cluster(cluster) if !fragments.is_empty() => {
                Ok(cluster.scatter_count(pinned, &fragments, filter).await?.into_iter().sum())
            }
            Self::Cluster(_) | Self::Local => Ok(count(pinned.dataset, Scope::WholeTable, filter).await?),
        }
    }
}
