//! The success answer most operations share, declared once because
//! poem-openapi wants every answer an `ApiResponse` type.

use poem_openapi::{
    ApiResponse,
    payload::Json,
    types::{ParseFromJSON, ToJSON},
};

use super::paging::PageBody;
use crate::kernel::Page;

/// 200 with a JSON body, for an operation whose success needs no words of
/// its own in the document.
#[derive(ApiResponse)]
pub enum Success<T: ToJSON> {
    #[oai(status = 200)]
    Ok(Json<T>),
}

impl<T: ToJSON> Success<T> {
    pub fn json(body: T) -> Self {
        Self::Ok(Json(body))
    }
}

impl<T: ParseFromJSON + ToJSON> Success<PageBody<T>> {
    /// A list page, each item converted to its JSON body.
    pub fn page<S>(page: Page<S>, body: impl FnMut(S) -> T) -> Self {
        Self::json(PageBody::from_page(page, body))
    }
}

/// 201 with a JSON body, for a creation whose answer needs no words of its
/// own in the document.
#[derive(ApiResponse)]
pub enum Created<T: ToJSON> {
    #[oai(status = 201)]
    Created(Json<T>),
}

/// 200 with a page of a list whose newest items come first.
#[derive(ApiResponse)]
pub enum NewestFirst<T: ParseFromJSON + ToJSON> {
    /// Newest first.
    #[oai(status = 200)]
    Ok(Json<PageBody<T>>),
}

impl<T: ParseFromJSON + ToJSON> NewestFirst<T> {
    /// A list page, each item converted to its JSON body.
    pub fn page<S>(page: Page<S>, body: impl FnMut(S) -> T) -> Self {
        Self::Ok(Json(PageBody::from_page(page, body)))
    }
}
