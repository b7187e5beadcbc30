//! The admins' list of waiting rooms: a page of rooms with their sizes and
//! settings.

use super::QueueService;
use crate::{
    kernel::{Clock, Page, PageRequest},
    queue::{
        domain::{MAX_ROOM_PAGE, QueueError, QueueSettings, QueueStats},
        ports::{QueuePorts, QueueStore},
    },
};

impl<P: QueuePorts> QueueService<P> {
    /// A page of the listed rooms in concert order, each with its sizes and
    /// settings (the list holds ids only; sizes are read for this page).
    pub async fn stats(
        &self,
        asked: PageRequest,
    ) -> Result<Page<(QueueStats, QueueSettings)>, QueueError> {
        let now = self.clock.now();
        let request = asked.at_most(MAX_ROOM_PAGE);
        let mut concerts = self.store.concerts().await?;
        concerts.sort();
        concerts.retain(|concert| request.after.is_none_or(|after| concert.value() > after));
        concerts.truncate(request.fetch() as usize);
        let page = Page::of(concerts, request, |concert| concert.value());
        let mut items = Vec::with_capacity(page.items.len());
        for concert in page.items {
            items.push((
                self.store.stats(concert, now).await?,
                self.settings_for(concert).await?,
            ));
        }
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use crate::{
        kernel::PageRequest,
        queue::usecase::fake::{
            ALICE, BOB, HALL, OTHER_HALL, defaults, harness, slow, unavailable,
        },
    };

    #[tokio::test]
    async fn stats_list_every_entered_room_in_concert_order_with_its_settings() {
        let h = harness();
        h.settings.stored.lock().unwrap().insert(OTHER_HALL, slow());
        h.service.enter(ALICE, OTHER_HALL).await.unwrap();
        h.service.enter(ALICE, HALL).await.unwrap();
        h.admitted(BOB, HALL, TimeDelta::minutes(1)).await;

        let stats = h.service.stats(PageRequest::asked(None, 50)).await.unwrap();
        let rows: Vec<_> = stats
            .items
            .iter()
            .map(|(room, settings)| (room.concert, room.waiting, room.active, *settings))
            .collect();
        assert_eq!(
            rows,
            vec![(HALL, 1, 1, defaults()), (OTHER_HALL, 1, 0, slow())]
        );
        assert_eq!(stats.next_cursor, None);

        // A page at a time: the cursor is the last room's concert.
        let first = h.service.stats(PageRequest::asked(None, 1)).await.unwrap();
        assert_eq!(first.items.len(), 1);
        assert_eq!(first.items[0].0.concert, HALL);
        assert_eq!(first.next_cursor, Some(HALL.value()));
        let next = PageRequest::asked(first.next_cursor, 1);
        let second = h.service.stats(next).await.unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0].0.concert, OTHER_HALL);
        assert_eq!(second.next_cursor, None);
    }

    #[tokio::test]
    async fn stats_without_any_room_are_empty_and_fail_when_the_store_is_down() {
        let h = harness();
        let all = PageRequest::asked(None, 50);
        assert!(h.service.stats(all).await.unwrap().items.is_empty());
        h.store.0.lock().unwrap().down = true;
        assert!(unavailable(h.service.stats(all).await));
    }
}
