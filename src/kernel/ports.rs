//! A module's ports trait and its adapter bundle, declared together.

/// Declares a module's ports trait (the adapters its use cases run over, as
/// associated types; `Clone + Send + Sync + 'static` like every port) and
/// the bundle that implements it with those adapters as its type
/// parameters, in the order of the trait's types. The composition root's
/// wiring and the tests' fakes are each one alias of the bundle, and every
/// adapter's bound is written once: in the trait.
macro_rules! ports_bundle {
    (
        $(#[$trait_meta:meta])*
        pub trait $ports:ident for $bundle:ident<$($param:ident),+> {
            $(
                $(#[$type_meta:meta])*
                type $name:ident: $bound:path;
            )+
        }
    ) => {
        $(#[$trait_meta])*
        pub trait $ports: Clone + Send + Sync + 'static {
            $(
                $(#[$type_meta])*
                type $name: $bound;
            )+
        }

        #[doc = concat!(
            "[`", stringify!($ports), "`] over the adapters its type parameters name."
        )]
        pub struct $bundle<$($param),+>(::std::marker::PhantomData<($($param,)+)>);

        /// By hand: the bundle is only a name, cloneable whatever it names.
        impl<$($param),+> Clone for $bundle<$($param),+> {
            fn clone(&self) -> Self {
                Self(::std::marker::PhantomData)
            }
        }

        impl<$($param),+> $ports for $bundle<$($param),+>
        where
            $($param: $bound,)+
        {
            $(type $name = $param;)+
        }
    };
}

pub(crate) use ports_bundle;
