//! Enums stored by name in a database column (statuses, kinds).

/// Gives an enum deriving `strum::EnumString` and `strum::IntoStaticStr`
/// the two ways its column is read and written: `as_str`, the name stored,
/// and `parse`, `None` for a name it does not know.
macro_rules! stored_name {
    ($name:ty) => {
        impl $name {
            pub fn as_str(self) -> &'static str {
                self.into()
            }

            pub fn parse(value: &str) -> Option<Self> {
                value.parse().ok()
            }
        }
    };
}
pub(crate) use stored_name;
