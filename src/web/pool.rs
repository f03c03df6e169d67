//! A bounded pool for CPU-heavy requests (rendering, thumbnails, occlusion heatmaps): at most
//! `size` run at once on the blocking threads; when all are busy a request is refused at once
//! with 503 and Retry-After instead of queueing without limit behind the others.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::error::HttpError;

/// Seconds a refused client is asked to wait before retrying.
pub const RETRY_AFTER_SECS: u32 = 1;

/// A pool of `size` slots for CPU-heavy work.
#[derive(Clone, Debug)]
pub struct CpuPool {
    slots: Arc<Semaphore>,
    what: &'static str,
}

impl CpuPool {
    /// A pool of `size` slots (at least one) for work described as `what` in refusals.
    pub fn new(size: usize, what: &'static str) -> Self {
        CpuPool {
            slots: Arc::new(Semaphore::new(size.max(1))),
            what,
        }
    }

    /// The configured size, or the number of cores when it is 0.
    pub fn size_or_cores(configured: usize) -> usize {
        if configured > 0 {
            configured
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }

    /// Runs `f` on a blocking thread if a slot is free, else refuses with 503. The slot is held
    /// until `f` returns, even if the client has gone.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HttpError> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            metrics::counter!("tramy_http_busy_total", "pool" => self.what).increment(1);
            return Err(HttpError::busy(format!(
                "too many {} requests at once; retry in {RETRY_AFTER_SECS} s",
                self.what
            )));
        };
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f()
        })
        .await
        .map_err(HttpError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[tokio::test]
    async fn a_full_pool_refuses_at_once_with_503_and_retry_after() {
        let pool = CpuPool::new(1, "rendering");
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = pool.clone();
        let first = tokio::spawn(async move { busy.run(move || wait.recv().is_ok()).await });
        // Let the first job take the slot.
        while pool.slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = pool.run(|| ()).await.expect_err("the pool is full");
        let response = refused.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        release.send(()).unwrap();
        assert!(first.await.unwrap().unwrap());
        // The slot is free again.
        pool.run(|| ()).await.expect("a free slot");
    }
}
