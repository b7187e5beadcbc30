//! The one JSON shape of a list page: `{items, nextCursor}`.

use poem_openapi::{
    Object,
    types::{ParseFromJSON, ToJSON},
};

use crate::kernel::Page;

/// A page of a list. Ask for the next page with `?after=<nextCursor>`;
/// `nextCursor` is absent on the last page.
#[derive(Debug, Object)]
#[oai(rename = "Page", rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct PageBody<T: ParseFromJSON + ToJSON> {
    pub items: Vec<T>,
    /// Pass as `after` to read the next page; absent on the last page.
    pub next_cursor: Option<i64>,
}

impl<T: ParseFromJSON + ToJSON> PageBody<T> {
    /// The page's items converted to their JSON bodies.
    pub fn from_page<S>(page: Page<S>, body: impl FnMut(S) -> T) -> Self {
        let page = page.map(body);
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}
