//! The one failpoint style: every failpoint in the code is a [`step`].
//! Failpoints a test can stall without blocking the runtime (the `fail`
//! crate's own `sleep` and `pause` block the worker thread, so a server
//! with four requests stalled would stop answering anything else).
//!
//! Armed as `name=return` the step fails; armed as `name=return(N)` it
//! waits N ms, asynchronously, then goes on — long enough for a crash test
//! to SIGKILL the process right there. Built without the `failpoints`
//! feature, a step is nothing at all.

/// One named step of a use case.
#[cfg(feature = "failpoints")]
pub async fn step(name: &str) -> Result<(), anyhow::Error> {
    match fail::eval(name, |arg| arg.and_then(|ms| ms.parse::<u64>().ok())) {
        None => Ok(()),
        Some(None) => Err(anyhow::anyhow!("failpoint {name}")),
        Some(Some(ms)) => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(())
        }
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn step(_: &str) -> Result<(), anyhow::Error> {
    Ok(())
}
