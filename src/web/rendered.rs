//! A JSON body rendered once and sent many times: documented in the spec
//! as the type it was rendered from, sent as its bytes.

use std::marker::PhantomData;

use bytes::Bytes;
use poem::{IntoResponse, Response};
use poem_openapi::{
    payload::{Json, Payload},
    registry::{MetaSchemaRef, Registry},
    types::{ToJSON, Type},
};

/// `T` as JSON bytes, with the entity tag of those bytes.
pub struct RenderedJson<T> {
    body: Bytes,
    etag: String,
    _doc: PhantomData<fn() -> T>,
}

impl<T: ToJSON> RenderedJson<T> {
    /// Renders `value` exactly as `Json<T>` would answer it, and tags it
    /// with a hash of the bytes (the same on every instance of a build).
    pub fn render(value: &T) -> Self {
        use std::hash::{Hash, Hasher};
        let body = Bytes::from(serde_json::to_vec(&value.to_json()).unwrap_or_default());
        let mut hasher = std::hash::DefaultHasher::new();
        body.hash(&mut hasher);
        Self {
            etag: format!("\"{:016x}\"", hasher.finish()),
            body,
            _doc: PhantomData,
        }
    }
}

impl<T> RenderedJson<T> {
    pub fn etag(&self) -> &str {
        &self.etag
    }
}

impl<T> Clone for RenderedJson<T> {
    fn clone(&self) -> Self {
        Self {
            body: self.body.clone(),
            etag: self.etag.clone(),
            _doc: PhantomData,
        }
    }
}

impl<T: Type> Payload for RenderedJson<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for RenderedJson<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(self.body)
    }
}

/// A rendered body weighs its bytes and its tag (what the seat-map cache
/// counts against its budget).
impl<T> crate::kernel::cache::Weighed for RenderedJson<T> {
    fn weight(&self) -> usize {
        self.body.len() + self.etag.capacity()
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::Object;

    use super::*;

    #[derive(Object)]
    struct Thing {
        name: String,
        n: u32,
    }

    #[tokio::test]
    async fn the_bytes_are_what_json_answers_and_the_tag_follows_them() {
        let thing = Thing {
            name: "a \"seat\"".into(),
            n: 7,
        };
        let rendered = RenderedJson::render(&thing);
        let sent = rendered.clone().into_response();
        assert_eq!(
            sent.headers()["content-type"],
            "application/json; charset=utf-8"
        );
        let by_json = Json(thing)
            .into_response()
            .into_body()
            .into_vec()
            .await
            .unwrap();
        assert_eq!(sent.into_body().into_vec().await.unwrap(), by_json);
        let other = RenderedJson::render(&Thing {
            name: "b".into(),
            n: 7,
        });
        assert_ne!(rendered.etag(), other.etag());
        assert_eq!(
            rendered.etag(),
            RenderedJson::<Thing>::render(&Thing {
                name: "a \"seat\"".into(),
                n: 7
            })
            .etag()
        );
    }
}
