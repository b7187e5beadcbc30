//! The issue ledger in process memory, for the embedded shape: the same
//! answers as the Redis ledger, under one lock. Lost on restart and then
//! rebuilt from the database like a flushed Redis.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

use crate::{
    coupon::{
        domain::{
            Campaign, CouponError, LedgerDrift, LedgerEntry, LedgerSnapshot, LedgerStep, Winner,
        },
        ports::{CouponLedger, IssueRequest},
    },
    kernel::{CouponId, UserId},
};

#[derive(Debug, Default)]
struct Book {
    quantity: u32,
    /// Highest number handed out so far.
    seq: u32,
    /// Numbers given back by revocations, handed out before new ones.
    free: Vec<u32>,
    holders: HashMap<UserId, (u32, Option<DateTime<Utc>>)>,
}

#[derive(Clone, Default)]
pub struct MemoryCouponLedger {
    books: Arc<Mutex<HashMap<CouponId, Book>>>,
}

impl MemoryCouponLedger {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<CouponId, Book>) -> T) -> Result<T, CouponError> {
        let mut books = self
            .books
            .lock()
            .map_err(|_| anyhow::anyhow!("coupon ledger lock poisoned"))?;
        Ok(f(&mut books))
    }
}

impl CouponLedger for MemoryCouponLedger {
    async fn issue(&self, request: IssueRequest<'_>) -> Result<LedgerStep, CouponError> {
        let IssueRequest {
            campaign,
            user,
            now,
            ..
        } = request;
        self.with(|books| {
            let Some(book) = books.get_mut(&campaign.id) else {
                return LedgerStep::Missing;
            };
            if book.holders.contains_key(&user) {
                return LedgerStep::AlreadyIssued;
            }
            if book.holders.len() >= book.quantity as usize {
                return LedgerStep::SoldOut;
            }
            let number = match book.free.pop() {
                Some(number) => number,
                None if book.seq < book.quantity => {
                    book.seq += 1;
                    book.seq
                }
                None => return LedgerStep::SoldOut,
            };
            book.holders.insert(user, (number, Some(now)));
            LedgerStep::Issued(number)
        })
    }

    async fn revoke(&self, winner: &Winner, free_number: bool) -> Result<bool, CouponError> {
        self.with(|books| {
            let Some(book) = books.get_mut(&winner.coupon) else {
                return false;
            };
            if book.holders.get(&winner.user).map(|(n, _)| *n) != Some(winner.number) {
                return false;
            }
            book.holders.remove(&winner.user);
            if free_number {
                book.free.push(winner.number);
            }
            true
        })
    }

    async fn load(
        &self,
        campaign: &Campaign,
        holders: &[(UserId, u32)],
    ) -> Result<bool, CouponError> {
        self.with(|books| {
            if books.contains_key(&campaign.id) {
                return false;
            }
            let seq = holders.iter().map(|(_, n)| *n).max().unwrap_or(0);
            let used: std::collections::HashSet<u32> = holders.iter().map(|(_, n)| *n).collect();
            books.insert(
                campaign.id,
                Book {
                    quantity: campaign.quantity,
                    seq,
                    free: (1..=seq).rev().filter(|n| !used.contains(n)).collect(),
                    holders: holders.iter().map(|(u, n)| (*u, (*n, None))).collect(),
                },
            );
            true
        })
    }

    async fn snapshot(&self, coupon: CouponId) -> Result<Option<LedgerSnapshot>, CouponError> {
        self.with(|books| {
            books.get(&coupon).map(|book| {
                let mut entries: Vec<LedgerEntry> = book
                    .holders
                    .iter()
                    .map(|(user, (number, issued_at))| LedgerEntry {
                        user: *user,
                        number: *number,
                        issued_at: *issued_at,
                    })
                    .collect();
                entries.sort_by_key(|e| e.number);
                LedgerSnapshot {
                    quantity: book.quantity,
                    entries,
                }
            })
        })
    }

    async fn repair(&self, coupon: CouponId, drift: &LedgerDrift) -> Result<(), CouponError> {
        let LedgerDrift { add, remove } = drift;
        self.with(|books| {
            let Some(book) = books.get_mut(&coupon) else {
                return;
            };
            for entry in remove {
                if book.holders.get(&entry.user) == Some(&(entry.number, entry.issued_at)) {
                    book.holders.remove(&entry.user);
                    if !add.iter().any(|(_, n)| *n == entry.number) {
                        book.free.push(entry.number);
                    }
                }
            }
            for (user, number) in add {
                book.holders.insert(*user, (*number, None));
                book.free.retain(|n| n != number);
                // Numbers between the old high mark and this one are free.
                while book.seq < *number {
                    book.seq += 1;
                    if book.seq != *number {
                        book.free.push(book.seq);
                    }
                }
            }
        })
    }

    async fn issued(&self, coupon: CouponId) -> Result<Option<u64>, CouponError> {
        self.with(|books| books.get(&coupon).map(|b| b.holders.len() as u64))
    }

    async fn issued_many(&self, coupons: &[CouponId]) -> Result<Vec<Option<u64>>, CouponError> {
        self.with(|books| {
            coupons
                .iter()
                .map(|c| books.get(c).map(|b| b.holders.len() as u64))
                .collect()
        })
    }
}
