//! A plan executor that injects faults: the real executor service behind a wrapper that
//! delays, refuses with a chosen code and retry target, breaks a stream after its first
//! message, or never answers, as the test sets it, and records every call it gets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::FlightData;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use lancefleet_common::Shutdown;
use lancefleet_common::config::{ExecutorConfig, ExecutorEndpoint};
use lancefleet_engine::Catalog;
use lancefleet_plan_executor::{Admission, ExecutorService};
use lancefleet_proto::v1::plan_executor_server::{PlanExecutor, PlanExecutorServer};
use lancefleet_proto::v1::{AnalyzeReply, CountReply, FullTextStatsReply, PlanFragment};
use lancefleet_proto::{ErrorCode, ErrorStatus, RetryTarget};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// What a faulty executor does to a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answers like a healthy executor.
    None,
    /// Waits this long, then answers.
    Delay(Duration),
    /// Refuses with this code and retry target (an `ErrorStatus`, as executors send).
    Error(ErrorCode, RetryTarget),
    /// Sends the answer's first message, then breaks the stream the way a reset
    /// connection does (a status without details); `Count` and `Analyze` fail the same way.
    ResetMidStream,
    /// Never answers.
    Stall,
}

/// One call an executor got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `execute`, `count` or `analyze`.
    pub method: &'static str,
    /// The fragments it was asked to read.
    pub fragments: Vec<u64>,
}

/// The fault and the calls, shared between the test and the service.
#[derive(Debug)]
struct Controls {
    /// The fault, and for how many more calls (`None`: until changed).
    fault: Mutex<(Fault, Option<usize>)>,
    calls: Mutex<Vec<Call>>,
    /// Calls whose caller went away before they were answered (a hedge's loser).
    cancelled: AtomicUsize,
}

/// Counts a call as cancelled unless it was answered.
struct Answering<'a> {
    controls: &'a Controls,
    answered: bool,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.controls.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Controls {
    /// Records a call and returns the fault it meets.
    fn call(&self, method: &'static str, fragment: &PlanFragment) -> Fault {
        self.calls.lock().expect("calls").push(Call { method, fragments: fragment.fragment_ids.clone() });
        let mut fault = self.fault.lock().expect("fault");
        let current = fault.0.clone();
        match &mut fault.1 {
            Some(0) => return Fault::None,
            Some(left) => *left -= 1,
            None => {}
        }
        current
    }
}

/// A plan executor on loopback whose calls meet the fault the test sets.
#[derive(Debug)]
pub struct FaultyExecutor {
    id: String,
    address: SocketAddr,
    controls: Arc<Controls>,
    stop: Shutdown,
    server: JoinHandle<()>,
}

impl FaultyExecutor {
    /// Starts executor `id` over `catalog` on a free loopback port, healthy.
    pub async fn start(id: &str, catalog: Catalog) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("bound");
        let controls = Arc::new(Controls {
            fault: Mutex::new((Fault::None, None)),
            calls: Mutex::default(),
            cancelled: AtomicUsize::new(0),
        });
        let service = FaultyService {
            inner: ExecutorService::new(catalog, 16, Admission::new(&ExecutorConfig::default())),
            controls: controls.clone(),
        };
        let stop = Shutdown::new();
        let stopping = stop.clone();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(async move {
            let served = Server::builder()
                .add_service(PlanExecutorServer::new(service))
                .serve_with_incoming_shutdown(incoming, async move { stopping.wait().await })
                .await;
            if let Err(error) = served {
                eprintln!("faulty executor stopped: {error}");
            }
        });
        Self { id: id.to_string(), address, controls, stop, server }
    }

    /// Every call from now on meets `fault`.
    pub fn set(&self, fault: Fault) {
        *self.controls.fault.lock().expect("fault") = (fault, None);
    }

    /// The next `calls` calls meet `fault`, the later ones none.
    pub fn set_for(&self, fault: Fault, calls: usize) {
        *self.controls.fault.lock().expect("fault") = (fault, Some(calls));
    }

    /// The calls it got so far.
    pub fn calls(&self) -> Vec<Call> {
        self.controls.calls.lock().expect("calls").clone()
    }

    /// Calls whose caller went away before they were answered.
    pub fn cancelled(&self) -> usize {
        self.controls.cancelled.load(Ordering::Relaxed)
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.controls.calls.lock().expect("calls").clear();
    }

    /// Its id and gRPC address.
    pub fn endpoint(&self) -> ExecutorEndpoint {
        ExecutorEndpoint { id: self.id.clone(), address: format!("http://{}", self.address) }
    }

    /// Stops serving, with calls in flight cut.
    pub async fn stop(self) {
        self.stop.trigger();
        self.server.abort();
        let _ = self.server.await;
    }
}

/// The real service behind the fault.
#[derive(Debug)]
struct FaultyService {
    inner: ExecutorService,
    controls: Arc<Controls>,
}

/// A status as a broken connection leaves it: no `ErrorStatus` in its details.
fn reset() -> Status {
    Status::unknown("h2 protocol error: stream reset by the fault injector")
}

/// Applies `fault` before a call: waits, refuses, or never returns. `ResetMidStream` is
/// the caller's to apply.
async fn before(fault: &Fault) -> Result<(), Status> {
    match fault {
        Fault::None | Fault::ResetMidStream => Ok(()),
        Fault::Delay(pause) => {
            tokio::time::sleep(*pause).await;
            Ok(())
        }
        Fault::Error(code, retry) => Err(ErrorStatus::with_retry(*code, "injected fault", *retry).into_grpc()),
        Fault::Stall => std::future::pending().await,
    }
}

#[tonic::async_trait]
impl PlanExecutor for FaultyService {
    type ExecuteStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn execute(&self, request: Request<PlanFragment>) -> Result<Response<Self::ExecuteStream>, Status> {
        let fault = self.controls.call("execute", request.get_ref());
        let mut answering = Answering { controls: &self.controls, answered: false };
        before(&fault).await?;
        answering.answered = true;
        let answer = self.inner.execute(request).await?.into_inner();
        if fault != Fault::ResetMidStream {
            return Ok(Response::new(answer));
        }
        let broken = answer.take(1).chain(futures::stream::once(async { Err(reset()) }));
        Ok(Response::new(broken.map_err(|status| status).boxed()))
    }

    async fn count(&self, request: Request<PlanFragment>) -> Result<Response<CountReply>, Status> {
        let fault = self.controls.call("count", request.get_ref());
        before(&fault).await?;
        if fault == Fault::ResetMidStream {
            return Err(reset());
        }
        self.inner.count(request).await
    }

    async fn analyze(&self, request: Request<PlanFragment>) -> Result<Response<AnalyzeReply>, Status> {
        let fault = self.controls.call("analyze", request.get_ref());
        before(&fault).await?;
        if fault == Fault::ResetMidStream {
            return Err(reset());
        }
        self.inner.analyze(request).await
    }

    async fn full_text_stats(&self, request: Request<PlanFragment>) -> Result<Response<FullTextStatsReply>, Status> {
        let fault = self.controls.call("full_text_stats", request.get_ref());
        before(&fault).await?;
        if fault == Fault::ResetMidStream {
            return Err(reset());
        }
        self.inner.full_text_stats(request).await
    }
}
