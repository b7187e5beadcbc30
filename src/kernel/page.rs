//! Cursor paging, the one way every list is read: a page starts after a
//! cursor (the id of the previous page's last item), holds at most a
//! bounded number of items, and names the cursor of the next page only
//! when another page follows.

/// Which page to read: items after `after`, at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRequest {
    pub after: Option<i64>,
    pub limit: u64,
}

impl PageRequest {
    /// A request with `limit` kept within 1..=`max`.
    pub fn new(after: Option<i64>, limit: u64, max: u64) -> Self {
        Self {
            after,
            limit: limit.clamp(1, max.max(1)),
        }
    }

    /// The page a client asked for, not yet bounded: the use case that
    /// reads it keeps it [`at_most`](Self::at_most) its own maximum.
    pub fn asked(after: Option<i64>, limit: u64) -> Self {
        Self { after, limit }
    }

    /// The same request with `limit` kept within 1..=`max`.
    pub fn at_most(self, max: u64) -> Self {
        Self::new(self.after, self.limit, max)
    }

    /// How many rows to read: one more than the page, which tells whether
    /// another page follows without a count.
    pub fn fetch(&self) -> u64 {
        self.limit + 1
    }

    /// The page asked for, at most `max` items: `read` is given the bounded
    /// request and returns up to its [`fetch`](Self::fetch) rows in list
    /// order; `cursor` names an item's position (its id).
    pub async fn read<T, E, Rows>(
        self,
        max: u64,
        read: impl FnOnce(Self) -> Rows,
        cursor: impl Fn(&T) -> i64,
    ) -> Result<Page<T>, E>
    where
        Rows: Future<Output = Result<Vec<T>, E>>,
    {
        let page = self.at_most(max);
        Ok(Page::of(read(page).await?, page, cursor))
    }
}

/// One page of items in list order, and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<i64>,
}

impl<T> Page<T> {
    /// The page out of up to [`PageRequest::fetch`] rows read in list
    /// order; `cursor` names an item's position (its id).
    pub fn of(mut rows: Vec<T>, request: PageRequest, cursor: impl Fn(&T) -> i64) -> Self {
        let more = rows.len() as u64 > request.limit;
        rows.truncate(request.limit as usize);
        let next_cursor = if more { rows.last().map(cursor) } else { None };
        Self {
            items: rows,
            next_cursor,
        }
    }

    /// The same page with every item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_stays_between_one_and_the_maximum() {
        assert_eq!(PageRequest::new(None, 0, 50).limit, 1);
        assert_eq!(PageRequest::new(None, 20, 50).limit, 20);
        assert_eq!(PageRequest::new(None, u64::MAX, 50).limit, 50);
        assert_eq!(PageRequest::new(Some(7), 10, 50).fetch(), 11);
        assert_eq!(
            PageRequest::asked(Some(7), 80).at_most(50),
            PageRequest::new(Some(7), 50, 50)
        );
    }

    #[test]
    fn a_next_cursor_only_when_more_rows_follow() {
        let request = PageRequest::new(None, 3, 50);
        let full = Page::of(vec![1, 2, 3, 4], request, |n| *n);
        assert_eq!(full.items, vec![1, 2, 3]);
        assert_eq!(full.next_cursor, Some(3));

        let exact = Page::of(vec![1, 2, 3], request, |n| *n);
        assert_eq!(exact.items, vec![1, 2, 3]);
        assert_eq!(
            exact.next_cursor, None,
            "a full last page names no next page"
        );

        let empty = Page::of(Vec::<i64>::new(), request, |n| *n);
        assert!(empty.items.is_empty());
        assert_eq!(empty.next_cursor, None);
    }

    #[tokio::test]
    async fn a_read_asks_for_the_bounded_page_and_cuts_what_it_gets() {
        let mut read_with = None;
        let page = PageRequest::asked(Some(9), 500)
            .read(
                2,
                |request| {
                    read_with = Some(request);
                    std::future::ready(Ok::<_, ()>(vec![8, 7, 6]))
                },
                |n| *n,
            )
            .await
            .unwrap();
        assert_eq!(read_with, Some(PageRequest::new(Some(9), 2, 2)));
        assert_eq!(page.items, vec![8, 7]);
        assert_eq!(page.next_cursor, Some(7));
    }

    #[test]
    fn mapping_keeps_the_cursor() {
        let page = Page::of(vec![5, 4, 3], PageRequest::new(None, 2, 50), |n| *n);
        let mapped = page.map(|n| n * 10);
        assert_eq!(mapped.items, vec![50, 40]);
        assert_eq!(mapped.next_cursor, Some(4));
    }
}
