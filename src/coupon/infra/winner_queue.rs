//! The winners' queue in process: an unbounded channel whose receiving end
//! hands the winners' writer everyone waiting at once.

use tokio::sync::mpsc;

use crate::coupon::ports::{QueuedWinner, WinnerBatches, WinnerQueue};

/// A winners' queue and its receiving end.
pub fn winner_queue() -> (WinnerSender, WinnerReceiver) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (WinnerSender(sender), WinnerReceiver(receiver))
}

pub struct WinnerSender(mpsc::UnboundedSender<QueuedWinner>);

impl WinnerQueue for WinnerSender {
    type Batches = WinnerReceiver;

    fn push(&self, winner: QueuedWinner) -> Result<(), QueuedWinner> {
        self.0.send(winner).map_err(|refused| refused.0)
    }
}

pub struct WinnerReceiver(mpsc::UnboundedReceiver<QueuedWinner>);

impl WinnerBatches for WinnerReceiver {
    async fn next_batch(&mut self, max: usize) -> Vec<QueuedWinner> {
        let mut batch = Vec::with_capacity(max);
        self.0.recv_many(&mut batch, max).await;
        batch
    }
}
