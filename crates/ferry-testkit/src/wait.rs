//! Waiting for a condition instead of sleeping.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `condition` every 50 ms until it returns `Some`, or fails with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut condition: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_the_condition_and_times_out_with_what_it_waited_for() {
        let mut calls = 0;
        let value = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            let done = calls >= 3;
            async move { done.then_some(42) }
        })
        .await;
        assert_eq!(value, Ok(42));
        let error = wait_until("nothing", Duration::from_millis(120), || async {
            None::<()>
        })
        .await
        .unwrap_err();
        assert!(error.contains("waiting for nothing"), "{error}");
    }
}
