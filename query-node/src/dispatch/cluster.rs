//! Scatter and gather over plan executors: fragments grouped by their executor
//! ([`super::assignment`]), one gRPC call per executor, hedged to the next replica when it
//! is slow ([`super::hedge`]), and one retry of a failed or timed-out group's fragments
//! where the error's retry target says: on each fragment's next executor, or on the same
//! one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use futures::future::join_all;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use lancefleet_common::config::{ClusterConfig, ExecutorEndpoint};
use lancefleet_common::membership::Membership;
use lancefleet_common::placement::{Placement, first_choice_shares};
use lancefleet_common::{telemetry, tls};
use lancefleet_engine::catalog::commit_time;
use lancefleet_engine::read::corpus::add_statistics;
use lancefleet_engine::{QueryOutput, QueryPlan};
use lancefleet_proto::v1::plan_executor_client::PlanExecutorClient;
use lancefleet_proto::v1::{AnalyzeReply, Bm25Stats, FragmentQuery, PlanFragment};
use lancefleet_proto::{ErrorCode, ErrorStatus, RetryTarget, WIRE_VERSION};
use tokio::sync::watch;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

use super::assignment::{Assignment, Load, assign, hedge_target, preference_lists, reassign};
use super::hedge::{self, CallClass, HedgeReason, Hedging, Siblings};
use super::{Pinned, Spread};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::request;

/// Largest gRPC message accepted from an executor (one Arrow batch).
const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// How long an executor that failed at the transport level is passed over as a first
/// choice, so that queries stop paying for its failure before membership notices it.
const SUSPECT_FOR: Duration = Duration::from_secs(10);

/// The rows one executor streams back.
pub type RowStream = BoxStream<'static, Result<RecordBatch, ApiError>>;

/// One executor call: the executor's node id, its client and the plan fragment to send it.
type FragmentCall = (Arc<str>, ExecutorClient, PlanFragment);

/// A client of one executor whose calls carry the caller's trace context.
type ExecutorClient = PlanExecutorClient<InterceptedService<Channel, PropagateTrace>>;

/// Writes the current span's trace context into every executor call's metadata.
#[derive(Debug, Clone, Copy)]
struct PropagateTrace;

impl Interceptor for PropagateTrace {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        telemetry::inject_into_metadata(request.metadata_mut());
        Ok(request)
    }
}

/// The plan executors of a cluster, as membership currently has them.
#[derive(Debug)]
pub struct Cluster {
    membership: watch::Receiver<Arc<[ExecutorEndpoint]>>,
    view: Mutex<Arc<View>>,
    /// Executors that recently failed retryably, until when they are passed over.
    suspects: Mutex<HashMap<Arc<str>, Instant>>,
    replicas: usize,
    virtual_nodes: u32,
    fragment_timeout: Duration,
    slow_call: Duration,
    /// When slow calls are hedged, and the executors' recent answer times.
    hedging: Hedging,
    /// Calls in flight to each executor.
    in_flight: Mutex<Load>,
    /// The client side of mutual TLS to `https://` executors.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Placement and connections for one membership.
#[derive(Debug)]
struct View {
    members: Arc<[ExecutorEndpoint]>,
    placement: Placement,
    clients: HashMap<Arc<str>, ExecutorClient>,
}

impl Cluster {
    /// A cluster whose executors come from `membership`, placed as `config` says.
    pub fn new(membership: &dyn Membership, config: &ClusterConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let receiver = membership.subscribe();
        let members = receiver.borrow().clone();
        let view = View::build(members, config.replicas, config.virtual_nodes, &tls, None);
        Self {
            membership: receiver,
            view: Mutex::new(Arc::new(view)),
            suspects: Mutex::new(HashMap::new()),
            replicas: config.replicas,
            virtual_nodes: config.virtual_nodes,
            fragment_timeout: config.fragment_timeout,
            slow_call: config.slow_call,
            hedging: Hedging::new(config.hedge_after),
            in_flight: Mutex::default(),
            tls,
        }
    }

    /// What `GET /v1/cluster` shows of this cluster: the executors of the current
    /// membership, whether each is passed over as a suspect, and the placement shares.
    pub fn summary(&self) -> Result<serde_json::Value, ApiError> {
        let view = self.current()?;
        let suspects = self.current_suspects()?;
        let nodes = view
            .members
            .iter()
            .map(|member| {
                serde_json::json!({
                    "node_id": member.id,
                    "role": "plan-executor",
                    "address": member.address,
                    "healthy": !suspects.contains(member.id.as_str()),
                    "serving_fragments": view.clients.contains_key(member.id.as_str()),
                })
            })
            .collect::<Vec<_>>();
        let ids = view.placement.nodes().iter().map(|id| &**id);
        let shares = first_choice_shares(ids, self.virtual_nodes, self.replicas);
        Ok(serde_json::json!({
            "nodes": nodes,
            "placement": { "replicas": self.replicas, "virtual_nodes": self.virtual_nodes, "first_choice_share": shares },
        }))
    }

    /// The view of the current membership, rebuilt when membership changed.
    fn current(&self) -> Result<Arc<View>, ApiError> {
        let members = self.membership.borrow().clone();
        let mut view = self.view.lock().map_err(|_| ApiError::Internal("placement lock poisoned".into()))?;
        if !Arc::ptr_eq(&view.members, &members) {
            *view = Arc::new(View::build(members, self.replicas, self.virtual_nodes, &self.tls, Some(&view)));
            self.hedging.retain(|node| view.clients.contains_key(node));
            tracing::info!(executors = view.placement.nodes().len(), "plan executor membership changed");
        }
        Ok(view.clone())
    }

    fn template(&self, pinned: Pinned<'_>, whole_table: bool, query: &FragmentQuery) -> PlanFragment {
        PlanFragment {
            table_uri: pinned.uri.to_string(),
            version: pinned.dataset.version().version,
            manifest_timestamp_nanos: commit_time(pinned.dataset),
            whole_table,
            query: Some(query.clone()),
            timeout_ms: millis_until(self.call_deadline()),
            wire_version: WIRE_VERSION,
            query_id: request::current(),
            ..Default::default()
        }
    }

    /// Which executor each fragment of `spread` over the table at `uri` would go to now,
    /// by executor (first choices, unless suspected or much busier than the second).
    pub fn placement(&self, uri: &str, spread: Spread<'_>) -> Result<BTreeMap<Arc<str>, Vec<u64>>, ApiError> {
        let view = self.current()?;
        let lists = preference_lists(&view.placement, uri, spread);
        let assignment = assign(spread.placed(), &lists, &self.current_suspects()?, &self.load());
        Ok(assignment
            .into_iter()
            .map(|(node, placed)| (node, placed.into_iter().map(|(id, _)| id).collect()))
            .collect())
    }

    /// Runs `query` like [`Self::scatter_query`] with each executor answering how its run
    /// went (lance's analyzed plan, time, cache reads) instead of the rows.
    pub async fn scatter_analyze(
        &self,
        pinned: Pinned<'_>,
        spread: Spread<'_>,
        query: &FragmentQuery,
    ) -> Result<Vec<(Arc<str>, Vec<u64>, AnalyzeReply)>, ApiError> {
        let template = self.template(pinned, spread.whole_table, query);
        self.scatter(pinned.uri, spread, &template, |(node, mut client, fragment)| async move {
            let ids = fragment.fragment_ids.clone();
            let reply = client.analyze(fragment).await.map_err(|status| ErrorStatus::from_grpc(&status))?;
            Ok((node, ids, reply.into_inner()))
        })
        .await
    }

    /// Runs `query` over the fragments of `spread` of `pinned` and returns every
    /// executor's partial result.
    pub async fn scatter_query(
        &self,
        pinned: Pinned<'_>,
        spread: Spread<'_>,
        query: &FragmentQuery,
    ) -> Result<Vec<QueryOutput>, ApiError> {
        let template = self.template(pinned, spread.whole_table, query);
        self.scatter(pinned.uri, spread, &template, |(_, client, fragment)| async move {
            let mut stream = execute(client, fragment).await?;
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                batches.push(batch.map_err(flight_error_status)?);
            }
            let schema = stream
                .schema()
                .cloned()
                .ok_or_else(|| ErrorStatus::new(ErrorCode::Internal, "the executor's answer had no schema"))?;
            Ok(QueryOutput { schema, batches })
        })
        .await
    }

    /// Starts `query` over the fragments of `spread` of `pinned` and returns every
    /// executor's rows as a stream once its first batch (or its end) has arrived. A failure
    /// before that is retried on the fragments' next executors like [`Self::scatter_query`];
    /// a failure later ends the stream with the error, since rows have been handed on.
    /// The fragment timeout bounds the wait for the first batch; only the client's
    /// deadline bounds the whole stream, which may be a scan of any length.
    pub async fn scatter_streams(
        &self,
        pinned: Pinned<'_>,
        spread: Spread<'_>,
        query: &FragmentQuery,
    ) -> Result<Vec<RowStream>, ApiError> {
        let template = PlanFragment {
            timeout_ms: request::current_deadline().map_or(0, millis_until),
            ..self.template(pinned, spread.whole_table, query)
        };
        self.scatter(pinned.uri, spread, &template, |(node, client, fragment)| async move {
            let mut rows = execute(client, fragment).await?.peekable();
            if let Some(Err(_)) = Pin::new(&mut rows).peek().await
                && let Some(Err(error)) = rows.next().await
            {
                return Err(flight_error_status(error));
            }
            let rows = rows.map_err(move |error| ApiError::Executor {
                node: node.to_string(),
                status: flight_error_status(error),
            });
            Ok(rows.boxed())
        })
        .await
    }

    /// The corpus-wide BM25 statistics of the full-text index segments a full-text `query`
    /// searches over `spread` of `pinned`: each executor's for the segments it owns, added
    /// up. Empty when some executor does not know the call (an older version): executors
    /// then search every segment, which scores the same.
    async fn corpus_stats(
        &self,
        pinned: Pinned<'_>,
        spread: Spread<'_>,
        query: &FragmentQuery,
    ) -> Result<Vec<Bm25Stats>, ApiError> {
        let template = self.template(pinned, spread.whole_table, query);
        let partials = self
            .scatter(pinned.uri, spread, &template, |(_, mut client, fragment)| async move {
                match client.full_text_stats(fragment).await {
                    Ok(reply) => Ok(Some(reply.into_inner().columns)),
                    Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
                    Err(status) => Err(ErrorStatus::from_grpc(&status)),
                }
            })
            .await?;
        if partials.iter().any(Option::is_none) {
            return Ok(Vec::new());
        }
        Ok(add_statistics(partials.into_iter().flatten()))
    }

    /// `part` of `plan` as executors run it over `spread`: with the corpus statistics of
    /// its full-text index segments when the plan divides a full-text search by segment.
    pub async fn divided<'q>(
        &self,
        pinned: Pinned<'_>,
        spread: Spread<'_>,
        plan: &QueryPlan,
        part: &'q FragmentQuery,
    ) -> Result<Cow<'q, FragmentQuery>, ApiError> {
        if !plan.divide_full_text {
            return Ok(Cow::Borrowed(part));
        }
        let corpus_stats = self.corpus_stats(pinned, spread, part).await?;
        Ok(Cow::Owned(FragmentQuery { corpus_stats, ..part.clone() }))
    }

    /// Counts the rows of `fragments` of `pinned` matching `filter`, one count per executor.
    pub async fn scatter_count(
        &self,
        pinned: Pinned<'_>,
        fragments: &[u64],
        filter: Option<&str>,
    ) -> Result<Vec<u64>, ApiError> {
        let query = FragmentQuery { filter: filter.map(str::to_string), ..Default::default() };
        let template = self.template(pinned, false, &query);
        let spread = Spread::split(fragments);
        self.scatter(pinned.uri, spread, &template, |(_, mut client, fragment)| async move {
            let reply = client.count(fragment).await.map_err(|status| ErrorStatus::from_grpc(&status))?;
            Ok(reply.into_inner().rows)
        })
        .await
    }

    /// Sends each executor its fragments with `call`, and retries a failed executor's
    /// fragments once where its error says: each on the next executor of its preference
    /// list (the executor is then passed over as a first choice for a while), or on the
    /// same executor.
    async fn scatter<T, F, Fut>(
        &self,
        table_uri: &str,
        spread: Spread<'_>,
        template: &PlanFragment,
        call: F,
    ) -> Result<Vec<T>, ApiError>
    where
        F: Fn(FragmentCall) -> Fut,
        Fut: Future<Output = Result<T, ErrorStatus>>,
    {
        let view = self.current()?;
        let fragments = spread.placed();
        let lists = preference_lists(&view.placement, table_uri, spread);
        if lists.values().any(Vec::is_empty) {
            return Err(ApiError::Executor {
                node: "-".into(),
                status: ErrorStatus::new(ErrorCode::Unavailable, "no plan executors are available"),
            });
        }
        let suspects = self.current_suspects()?;
        let mut assignment = assign(fragments, &lists, &suspects, &self.load());
        METRICS.fanout.with_label_values(&[] as &[&str]).observe(assignment.len() as f64);
        let round = Round { view: &view, lists: &lists, suspects: &suspects, template, attempt: 1 };
        let (mut results, failed) = self.run_round(&round, &assignment, &call).await?;
        if failed.is_empty() {
            count_choices(&assignment);
            return Ok(results);
        }
        for (node, status) in &failed {
            tracing::warn!(executor = %node, error = %status.message, retry = ?status.retry_target(), "retrying fragments");
        }
        let elsewhere = failed
            .iter()
            .filter(|(_, status)| status.retry_target() == RetryTarget::AnotherNode)
            .map(|(node, _)| node.clone())
            .collect::<HashSet<_>>();
        self.suspect(elsewhere.iter().cloned())?;
        let mut retry = reassign(&assignment, &elsewhere, &lists).map_err(|node| {
            let status = failed.iter().find(|(failed, _)| *failed == node).map(|(_, status)| status.clone());
            ApiError::Executor { node: node.to_string(), status: status.unwrap_or_default() }
        })?;
        for (node, _) in failed.iter().filter(|(node, _)| !elsewhere.contains(node)) {
            if let Some(fragments) = assignment.get(node) {
                retry.entry(node.clone()).or_default().extend(fragments.iter().copied());
            }
        }
        METRICS.retries.inc_by(retry.values().map(Vec::len).sum::<usize>() as u64);
        let suspects = self.current_suspects()?;
        let round = Round { view: &view, lists: &lists, suspects: &suspects, template, attempt: 2 };
        let (retried, still_failed) = self.run_round(&round, &retry, &call).await?;
        if let Some((node, status)) = still_failed.into_iter().next() {
            return Err(ApiError::Executor { node: node.to_string(), status });
        }
        let failed_nodes = failed.iter().map(|(node, _)| node.clone()).collect::<HashSet<_>>();
        assignment.retain(|node, _| !failed_nodes.contains(node));
        count_choices(&assignment);
        count_choices(&retry);
        results.extend(retried);
        Ok(results)
    }

    /// Calls in flight to each executor now.
    fn load(&self) -> Load {
        self.in_flight.lock().map(|load| load.clone()).unwrap_or_default()
    }

    /// Executors currently passed over as first choice.
    fn current_suspects(&self) -> Result<HashSet<Arc<str>>, ApiError> {
        let mut suspects = self.suspects.lock().map_err(|_| ApiError::Internal("suspect lock poisoned".into()))?;
        let now = Instant::now();
        suspects.retain(|_, until| *until > now);
        Ok(suspects.keys().cloned().collect())
    }

    fn suspect(&self, nodes: impl Iterator<Item = Arc<str>>) -> Result<(), ApiError> {
        let mut suspects = self.suspects.lock().map_err(|_| ApiError::Internal("suspect lock poisoned".into()))?;
        let until = Instant::now() + SUSPECT_FOR;
        for node in nodes {
            suspects.insert(node, until);
        }
        Ok(())
    }

    /// Runs one call per executor of `assignment` concurrently. Returns the answers and the
    /// executors that failed with a retry target; a failure without one fails the round.
    async fn run_round<T, F, Fut>(
        &self,
        round: &Round<'_>,
        assignment: &Assignment,
        call: &F,
    ) -> Result<(Vec<T>, Vec<(Arc<str>, ErrorStatus)>), ApiError>
    where
        F: Fn(FragmentCall) -> Fut,
        Fut: Future<Output = Result<T, ErrorStatus>>,
    {
        let siblings = Siblings::new(assignment.len());
        let calls = assignment.iter().map(|(node, fragments)| {
            let mut fragment = round.template.clone();
            fragment.fragment_ids = fragments.iter().map(|(id, _)| *id).collect();
            let hedge = hedge_target(node, fragments, round.lists, round.suspects);
            self.call_executor(round, &siblings, node, hedge, fragment, call)
        });
        let mut answers = Vec::new();
        let mut failed = Vec::new();
        for (node, outcome) in join_all(calls).await {
            if let Err(status) = &outcome {
                METRICS.executor_errors.with_label_values(&[status.error_code().as_str_name()]).inc();
            }
            match outcome {
                Ok(answer) => answers.push(answer),
                Err(status) if status.retry_target() != RetryTarget::None => failed.push((node, status)),
                Err(status) => return Err(ApiError::Executor { node: node.to_string(), status }),
            }
        }
        Ok((answers, failed))
    }
}

/// The executor's `timeout_ms` for `deadline`: at least 1, as 0 means "no deadline".
fn millis_until(deadline: tokio::time::Instant) -> u64 {
    u64::try_from(deadline.duration_since(tokio::time::Instant::now()).as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Cluster {
    /// When an executor call starting now must have answered: after the fragment timeout,
    /// or at the client's deadline when that comes first (so a retry never extends it).
    fn call_deadline(&self) -> tokio::time::Instant {
        request::bounded(tokio::time::Instant::now() + self.fragment_timeout)
    }

    /// Sends `fragment` to executor `node` with `call` within the fragment timeout (or the
    /// client's deadline). When it has not answered after its hedge delay, or (`auto`) it
    /// straggles behind its `siblings`, the fragment also goes to `hedge` (the next
    /// replica): the first answer wins and the other call is dropped (cancelled); an error
    /// of one waits for the other. Answers with the executor that answered. A call slower
    /// than `cluster.slow_call` is counted and logged.
    async fn call_executor<T, F, Fut>(
        &self,
        round: &Round<'_>,
        siblings: &Siblings,
        node: &Arc<str>,
        hedge: Option<Arc<str>>,
        fragment: PlanFragment,
        call: &F,
    ) -> (Arc<str>, Result<T, ErrorStatus>)
    where
        F: Fn(FragmentCall) -> Fut,
        Fut: Future<Output = Result<T, ErrorStatus>>,
    {
        let started = Instant::now();
        let deadline = self.call_deadline();
        let class = CallClass::of(&fragment);
        let fragments = fragment.fragment_ids.len();
        let delay = hedge.as_ref().and_then(|_| self.hedging.delay(class));
        let stragglers = self.hedging.hedges_stragglers().then_some(siblings);
        let primary = self.send(round, node, fragment.clone(), call, deadline, false);
        let (winner, outcome) = match hedge {
            Some(other) if delay.is_some() || stragglers.is_some() => {
                tokio::pin!(primary);
                tokio::select! {
                    outcome = &mut primary => (node.clone(), outcome),
                    reason = hedge::due(delay, stragglers, fragments) => {
                        let second = self.send(round, &other, fragment, call, deadline, true);
                        first_answer((node.clone(), primary), (other.clone(), second), reason).await
                    }
                }
            }
            _ => (node.clone(), primary.await),
        };
        if outcome.is_ok() {
            siblings.answered(fragments);
        }
        let elapsed = started.elapsed();
        if elapsed > self.slow_call {
            METRICS.slow_calls.with_label_values(&[&**node]).inc();
            tracing::warn!(executor = %node, elapsed_ms = elapsed.as_millis() as u64, "slow executor call");
        }
        (winner, outcome)
    }

    /// One call of `fragment` to executor `node` until `deadline`, in a span of its own
    /// (executor, fragments, attempt, whether it is a hedge, and its outcome: `ok`, an
    /// error code, or `cancelled` when its caller dropped it), counted in flight while it
    /// runs, its answer time learnt for hedging.
    async fn send<T, F, Fut>(
        &self,
        round: &Round<'_>,
        node: &Arc<str>,
        fragment: PlanFragment,
        call: &F,
        deadline: tokio::time::Instant,
        hedge: bool,
    ) -> Result<T, ErrorStatus>
    where
        F: Fn(FragmentCall) -> Fut,
        Fut: Future<Output = Result<T, ErrorStatus>>,
    {
        let span = tracing::info_span!(
            "executor_call",
            executor = %node,
            fragments = telemetry::int(fragment.fragment_ids.len()),
            attempt = i64::from(round.attempt),
            hedge,
            outcome = tracing::field::Empty,
        );
        let mut outcome = Outcome { span: span.clone(), recorded: false };
        let Some(client) = round.view.clients.get(node).cloned() else {
            return outcome.record(Err(ErrorStatus::new(ErrorCode::Unavailable, "executor left the cluster")));
        };
        let _in_flight = InFlight::start(&self.in_flight, node);
        let class = CallClass::of(&fragment);
        let started = Instant::now();
        let answer = tokio::time::timeout_at(deadline, call((node.clone(), client, fragment)).instrument(span)).await;
        let answer = answer.unwrap_or_else(|_elapsed| {
            let waited = started.elapsed().as_millis();
            Err(ErrorStatus::timeout(format!("no answer within {waited} ms")))
        });
        if answer.is_ok() {
            self.hedging.observe(node, class, started.elapsed());
        }
        outcome.record(answer)
    }
}

/// The first success of two racing calls (`primary` goes first, `second` was sent for
/// `reason`), or, when both fail, the primary's error; with the executor that gave it. The
/// slower call is dropped.
async fn first_answer<T>(
    (node, primary): (Arc<str>, impl Future<Output = Result<T, ErrorStatus>>),
    (other, second): (Arc<str>, impl Future<Output = Result<T, ErrorStatus>>),
    reason: HedgeReason,
) -> (Arc<str>, Result<T, ErrorStatus>) {
    tokio::pin!(primary);
    tokio::pin!(second);
    let (winner, outcome) = tokio::select! {
        outcome = &mut primary => match outcome {
            Err(error) => second.await.map_or_else(|_| (node.clone(), Err(error)), |answer| (other.clone(), Ok(answer))),
            answer => (node.clone(), answer),
        },
        outcome = &mut second => match outcome {
            Err(_) => (node.clone(), primary.await),
            answer => (other.clone(), answer),
        },
    };
    let won = if Arc::ptr_eq(&winner, &node) { "primary" } else { "hedge" };
    METRICS.hedged_calls.with_label_values(&[won, reason.as_str()]).inc();
    (winner, outcome)
}

/// Records an executor call's outcome on its span: its answer's, or `cancelled` when the
/// call is dropped first (a hedge's loser).
struct Outcome {
    span: tracing::Span,
    recorded: bool,
}

impl Outcome {
    fn record<T>(&mut self, answer: Result<T, ErrorStatus>) -> Result<T, ErrorStatus> {
        self.span.record("outcome", answer.as_ref().map_or_else(|status| status.error_code().as_str_name(), |_| "ok"));
        self.recorded = true;
        answer
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.recorded {
            self.span.record("outcome", "cancelled");
        }
    }
}

/// What the calls of one round of a scatter share.
struct Round<'a> {
    view: &'a View,
    lists: &'a HashMap<u64, Vec<Arc<str>>>,
    suspects: &'a HashSet<Arc<str>>,
    template: &'a PlanFragment,
    /// 1 for the first round, 2 for the retry.
    attempt: u32,
}

/// A call counted in flight to one executor until it ends or is dropped.
struct InFlight<'a> {
    load: &'a Mutex<Load>,
    node: Arc<str>,
}

impl<'a> InFlight<'a> {
    fn start(load: &'a Mutex<Load>, node: &Arc<str>) -> Self {
        if let Ok(mut load) = load.lock() {
            *load.entry(node.clone()).or_default() += 1;
        }
        Self { load, node: node.clone() }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut load) = self.load.lock()
            && let Some(count) = load.get_mut(&self.node)
        {
            *count = count.saturating_sub(1);
        }
    }
}

impl View {
    /// Placement and clients for `members`, reusing the connections of `previous` to
    /// executors whose address did not change. A member whose address is not a valid URI
    /// is left out (and logged): one bad registration must not fail every query.
    fn build(
        members: Arc<[ExecutorEndpoint]>,
        replicas: usize,
        virtual_nodes: u32,
        tls: &Option<Arc<rustls::ClientConfig>>,
        previous: Option<&View>,
    ) -> Self {
        let mut clients = HashMap::new();
        for member in members.iter() {
            let id: Arc<str> = Arc::from(member.id.as_str());
            let reused = previous.and_then(|previous| {
                let same_address =
                    previous.members.iter().any(|old| old.id == member.id && old.address == member.address);
                same_address.then(|| previous.clients.get(&id).cloned()).flatten()
            });
            match reused.map(Ok).unwrap_or_else(|| connect(member, tls.clone())) {
                Ok(client) => {
                    clients.insert(id, client);
                }
                Err(error) => tracing::error!(executor = %member.id, %error, "leaving the executor out"),
            }
        }
        let placement = Placement::new(
            members.iter().map(|member| member.id.as_str()).filter(|id| clients.contains_key(*id)),
            virtual_nodes,
            replicas,
        );
        Self { members, placement, clients }
    }
}

/// A lazily connecting client (executors may start after the query node), over mutual
/// TLS to an `https://` address.
fn connect(member: &ExecutorEndpoint, tls: Option<Arc<rustls::ClientConfig>>) -> Result<ExecutorClient, ApiError> {
    let channel = tls::channel(&member.address, tls)
        .map_err(|error| ApiError::Config(format!("executor '{}': {error}", member.id)))?;
    Ok(PlanExecutorClient::with_interceptor(channel, PropagateTrace).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// Records placement affinity: fragments answered by their first-choice executor or not.
fn count_choices(assignment: &Assignment) {
    let total = assignment.values().map(Vec::len).sum::<usize>() as u64;
    let first = assignment.values().flatten().filter(|(_, position)| *position == 0).count() as u64;
    METRICS.fragments.with_label_values(&["first"]).inc_by(first);
    METRICS.fragments.with_label_values(&["other"]).inc_by(total - first);
}

/// Sends `fragment` to an executor: its rows, decoded from Flight data as they arrive.
async fn execute(mut client: ExecutorClient, fragment: PlanFragment) -> Result<FlightRecordBatchStream, ErrorStatus> {
    let response = client.execute(fragment).await.map_err(|status| ErrorStatus::from_grpc(&status))?;
    let flight = response.into_inner().map_err(|status| FlightError::Tonic(Box::new(status)));
    Ok(FlightRecordBatchStream::new_from_flight_data(flight))
}

fn flight_error_status(error: FlightError) -> ErrorStatus {
    match error {
        FlightError::Tonic(status) => ErrorStatus::from_grpc(&status),
        other => ErrorStatus::new(ErrorCode::Internal, format!("undecodable executor answer: {other}")),
    }
}
