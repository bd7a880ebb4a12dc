//! The live side: GETs against the aggregated metrics APIs through the operator's kube client,
//! so authentication, TLS and retries are the same as for every other request.

use crate::Error;
use crate::cache::Cache;
use crate::query::{Answer, Query};
use futures::StreamExt;
use tracing::debug;

/// How many metrics requests run at once; the API server's priority and fairness still
/// applies, this only bounds one cycle's burst.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Reads the metrics APIs.
#[derive(Clone)]
pub struct Client {
    kube: kube::Client,
    concurrency: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("concurrency", &self.concurrency).finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(kube: kube::Client) -> Self {
        Self { kube, concurrency: DEFAULT_CONCURRENCY }
    }

    /// Bounds how many requests [`Client::fill`] runs at once (at least one).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Makes one query.
    pub async fn get(&self, q: &Query) -> Result<Answer, Error> {
        let path = q.path();
        let req = http::Request::get(&path)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|source| Error::Request { path: path.clone(), source })?;
        let text = self.kube.request_text(req).await.map_err(|source| Error::Api { api: q.api(), source })?;
        Answer::parse(q, text.as_bytes()).map_err(|message| Error::Malformed { api: q.api(), message })
    }

    /// Fetches everything pending in `cache`, concurrently; failures become the cycle's answer
    /// for that query.
    pub async fn fill(&self, cache: &mut Cache) {
        let pending = cache.take_pending();
        let results: Vec<(Query, Result<Answer, String>)> = futures::stream::iter(pending)
            .map(|q| async move {
                let r = self.get(&q).await.map_err(|e| {
                    debug!(query = %q.path(), error = %e, "metrics query failed");
                    e.to_string()
                });
                (q, r)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for (q, r) in results {
            cache.put(q, r);
        }
    }
}
