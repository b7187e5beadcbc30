//! The one JSON shape of a list page (`{items, nextCursor}`) and the page
//! size a list is asked for.

use poem::{Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions, Object,
    error::ParseParamError,
    param::Query,
    registry::{MetaParamIn, MetaSchemaRef},
    types::{ParseFromJSON, ToJSON, Type},
    validation::{Maximum, Minimum, Validator, ValidatorMeta},
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

/// The `limit` of a list operation: 1 to `MAX` items, `DEFAULT` when the
/// query leaves it out. Read, documented and refused exactly as a
/// `Query<Option<u64>>` with a `minimum(1)`/`maximum(MAX)` validator, so
/// each operation names its bounds once, as the domain's constants.
#[derive(Debug, Clone, Copy)]
pub struct PageSize<const MAX: u64, const DEFAULT: u64>(u64);

impl<const MAX: u64, const DEFAULT: u64> PageSize<MAX, DEFAULT> {
    pub fn get(self) -> u64 {
        self.0
    }

    /// The size asked for, or the validator's words for why not.
    fn checked(size: Option<u64>) -> Result<Self, String> {
        let Some(size) = size else {
            return Ok(Self(DEFAULT));
        };
        let minimum = Minimum::new(1.0, false);
        let maximum = Maximum::new(MAX as f64, false);
        if !minimum.check(&size) {
            return Err(format!("verification failed. {minimum}"));
        }
        if !maximum.check(&size) {
            return Err(format!("verification failed. {maximum}"));
        }
        Ok(Self(size))
    }
}

impl<'a, const MAX: u64, const DEFAULT: u64> ApiExtractor<'a> for PageSize<MAX, DEFAULT> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::Parameter];
    const PARAM_IS_REQUIRED: bool = false;

    type ParamType = Option<u64>;
    type ParamRawType = u64;

    fn param_in() -> Option<MetaParamIn> {
        Some(MetaParamIn::Query)
    }

    fn param_schema_ref() -> Option<MetaSchemaRef> {
        let mut schema = <u64 as Type>::schema_ref();
        if let MetaSchemaRef::Inline(schema) = &mut schema {
            Minimum::new(1.0, false).update_meta(schema);
            Maximum::new(MAX as f64, false).update_meta(schema);
        }
        Some(schema)
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        param_opts: ExtractParamOptions<Option<u64>>,
    ) -> poem::Result<Self> {
        let name = param_opts.name;
        let Query(size) = Query::<Option<u64>>::from_request(request, body, param_opts).await?;
        Self::checked(size).map_err(|reason| ParseParamError { name, reason }.into())
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::registry::MetaSchema;

    use super::*;

    type Size = PageSize<200, 50>;

    #[test]
    fn an_absent_limit_is_the_default_and_a_given_one_is_kept() {
        assert_eq!(Size::checked(None).unwrap().get(), 50);
        assert_eq!(Size::checked(Some(1)).unwrap().get(), 1);
        assert_eq!(Size::checked(Some(200)).unwrap().get(), 200);
    }

    #[test]
    fn refuses_in_the_words_of_the_validators() {
        assert_eq!(
            Size::checked(Some(0)).unwrap_err(),
            "verification failed. minimum(1, exclusive: false)"
        );
        assert_eq!(
            Size::checked(Some(201)).unwrap_err(),
            "verification failed. maximum(200, exclusive: false)"
        );
    }

    #[test]
    fn documented_as_an_optional_bounded_u64_in_the_query() {
        let Some(MetaSchemaRef::Inline(schema)) = Size::param_schema_ref() else {
            panic!("an inline schema");
        };
        let mut expected = MetaSchema::new_with_format("integer", "uint64");
        expected.minimum = Some(1.0);
        expected.maximum = Some(200.0);
        assert_eq!(*schema, expected);
        assert_eq!(Size::param_in(), Some(MetaParamIn::Query));
    }
}
