//! The order rule of a partition's one reader: an aggregate's events are
//! handled one after the other in stream order, and a later one waits
//! while an earlier one is failing (until it succeeds or is dead-lettered);
//! different aggregates go side by side, and a failing one holds back only
//! its own.

use std::collections::{HashMap, VecDeque};

use super::{Delivery, EntryId};

/// Whose events share a lane: an aggregate, or one undecodable entry alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LaneKey {
    Aggregate(String, String),
    Entry(String),
}

impl LaneKey {
    pub fn of(delivery: &Delivery) -> Self {
        match &delivery.message {
            Ok(m) => {
                LaneKey::Aggregate(m.event.aggregate_type.clone(), m.event.aggregate_id.clone())
            }
            Err(_) => LaneKey::Entry(delivery.id.clone()),
        }
    }
}

/// One aggregate's deliveries not finished yet, in stream order; the head
/// failed and waits until `not_before` when set.
#[derive(Debug)]
struct Lane<T> {
    items: VecDeque<Delivery>,
    not_before: Option<T>,
}

/// The deliveries a reader holds, by lane. `T` is the clock's instant.
#[derive(Debug)]
pub struct Lanes<T> {
    lanes: HashMap<LaneKey, Lane<T>>,
    held: usize,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Self {
            lanes: HashMap::new(),
            held: 0,
        }
    }
}

impl<T: Ord + Copy> Lanes<T> {
    /// Adds a delivery to its lane in stream order: behind what the lane
    /// holds, or before the newer entries it holds when it is an older one
    /// taken over from another consumer.
    pub fn push(&mut self, delivery: Delivery) {
        self.held += 1;
        let items = &mut (self.lanes.entry(LaneKey::of(&delivery)))
            .or_insert_with(|| Lane {
                items: VecDeque::new(),
                not_before: None,
            })
            .items;
        let Some(id) = EntryId::parse(&delivery.id) else {
            items.push_back(delivery);
            return;
        };
        // The head may be mid-retry: an older entry goes right behind it.
        let at = (1..=items.len())
            .rev()
            .find(|&i| i == 1 || EntryId::parse(&items[i - 1].id).is_none_or(|held| held <= id))
            .unwrap_or(items.len());
        items.insert(at, delivery);
    }

    /// Deliveries held, handled or not.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Takes out every lane whose head may be handled at `now` (none
    /// failed, or its retry is due). While out, a lane is the caller's: it
    /// hands back what is left with [`Lanes::put_back`] before pushing more.
    pub fn take_due(&mut self, now: T) -> Vec<(LaneKey, VecDeque<Delivery>)> {
        let due: Vec<LaneKey> = (self.lanes.iter())
            .filter(|(_, lane)| lane.not_before.is_none_or(|at| at <= now))
            .map(|(key, _)| key.clone())
            .collect();
        due.into_iter()
            .filter_map(|key| {
                let lane = self.lanes.remove(&key)?;
                self.held -= lane.items.len();
                Some((key, lane.items))
            })
            .collect()
    }

    /// Hands back what a taken lane left: nothing (it finished), or its
    /// head failed and may be tried again at `not_before` with the rest
    /// behind it.
    pub fn put_back(&mut self, key: LaneKey, rest: VecDeque<Delivery>, not_before: Option<T>) {
        if rest.is_empty() {
            return;
        }
        self.held += rest.len();
        let lane = self.lanes.entry(key).or_insert_with(|| Lane {
            items: VecDeque::new(),
            not_before: None,
        });
        // Anything pushed meanwhile came later in the stream.
        let newer = std::mem::replace(&mut lane.items, rest);
        lane.items.extend(newer);
        lane.not_before = not_before;
    }

    /// When the next lane may be handled: `None` when nothing is held;
    /// `Some(None)` when one may be now.
    pub fn next_due(&self) -> Option<Option<T>> {
        let mut next: Option<Option<T>> = None;
        for lane in self.lanes.values() {
            match (lane.not_before, next) {
                (None, _) => return Some(None),
                (Some(at), Some(Some(earliest))) if earliest <= at => {}
                (Some(at), _) => next = Some(Some(at)),
            }
        }
        next
    }

    /// Drops everything (the reader lost its partition: the next reader
    /// takes the entries over from the bus).
    pub fn clear(&mut self) {
        self.lanes.clear();
        self.held = 0;
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::kernel::events::{BusMessage, EventEnvelope};

    fn delivery(id: &str, aggregate: Option<&str>) -> Delivery {
        Delivery {
            id: id.to_owned(),
            deliveries: 1,
            message: aggregate.map_or_else(
                || Err("undecodable".to_owned()),
                |aggregate| {
                    Ok(BusMessage {
                        outbox_id: None,
                        target: None,
                        event: EventEnvelope {
                            event_id: uuid::Uuid::new_v4(),
                            event_type: "T".into(),
                            aggregate_type: "wallet".into(),
                            aggregate_id: aggregate.to_owned(),
                            occurred_at: Utc::now(),
                            payload: serde_json::Value::Null,
                            traceparent: None,
                        },
                    })
                },
            ),
        }
    }

    fn ids(lanes: &[(LaneKey, VecDeque<Delivery>)]) -> Vec<Vec<&str>> {
        let mut ids: Vec<Vec<&str>> = (lanes.iter())
            .map(|(_, items)| items.iter().map(|d| d.id.as_str()).collect())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn deliveries_split_by_aggregate_each_in_stream_order() {
        let mut lanes = Lanes::<u32>::default();
        for (id, aggregate) in [
            ("1", Some("a")),
            ("2", Some("b")),
            ("3", None),
            ("4", Some("a")),
            ("5", None),
            ("6", Some("b")),
            ("7", Some("a")),
        ] {
            lanes.push(delivery(id, aggregate));
        }
        assert_eq!(lanes.held(), 7);
        let due = lanes.take_due(0);
        assert_eq!(
            ids(&due),
            vec![vec!["1", "4", "7"], vec!["2", "6"], vec!["3"], vec!["5"]]
        );
        assert_eq!(lanes.held(), 0);
        assert_eq!(lanes.next_due(), None);
    }

    #[test]
    fn a_later_event_waits_while_an_earlier_one_of_its_aggregate_is_failing() {
        let mut lanes = Lanes::<u32>::default();
        lanes.push(delivery("1", Some("a")));
        lanes.push(delivery("2", Some("a")));
        lanes.push(delivery("3", Some("b")));
        let mut due = lanes.take_due(0);
        due.sort_by_key(|(_, items)| items[0].id.clone());
        let (b_key, _) = due.pop().unwrap();
        let (a_key, a_items) = due.pop().unwrap();
        // a's head failed: it and what follows wait until 10; b finished.
        lanes.put_back(a_key, a_items, Some(10));
        lanes.put_back(b_key, VecDeque::new(), None);
        // Newer entries of a queue behind; of c, go on at once.
        lanes.push(delivery("4", Some("a")));
        lanes.push(delivery("5", Some("c")));
        assert_eq!(lanes.held(), 4);
        assert_eq!(lanes.next_due(), Some(None), "c may go now");
        assert_eq!(
            ids(&lanes.take_due(5)),
            vec![vec!["5"]],
            "a waits, whatever came after"
        );
        assert_eq!(lanes.next_due(), Some(Some(10)));
        assert!(lanes.take_due(9).is_empty());
        assert_eq!(
            ids(&lanes.take_due(10)),
            vec![vec!["1", "2", "4"]],
            "then a, still in order"
        );
    }

    #[test]
    fn lanes_given_back_keep_what_was_pushed_meanwhile_behind_them() {
        let mut lanes = Lanes::<u32>::default();
        lanes.push(delivery("1", Some("a")));
        let (key, items) = lanes.take_due(0).pop().unwrap();
        lanes.push(delivery("2", Some("a")));
        lanes.put_back(key, items, Some(3));
        assert_eq!(ids(&lanes.take_due(3)), vec![vec!["1", "2"]]);
        lanes.push(delivery("3", Some("a")));
        lanes.clear();
        assert_eq!((lanes.held(), lanes.next_due()), (0, None));
    }

    #[test]
    fn an_older_entry_taken_over_goes_before_the_newer_ones_but_never_before_the_head() {
        let mut lanes = Lanes::<u32>::default();
        for id in ["5-0", "9-0", "12-0"] {
            lanes.push(delivery(id, Some("a")));
        }
        lanes.push(delivery("7-0", Some("a")));
        lanes.push(delivery("1-0", Some("a")));
        lanes.push(delivery("20-0", Some("a")));
        assert_eq!(
            ids(&lanes.take_due(0)),
            vec![vec!["5-0", "1-0", "7-0", "9-0", "12-0", "20-0"]]
        );
    }
}
