//! The `open_enum!` macro: IANA registries as Rust enums that keep unknown values.
//!
//! Every IKEv2 registry (payload types, notify types, transform IDs, ...) grows over time,
//! so a parser must not reject a value only because it has no name for it. An open enum has
//! one variant per value we know plus `Unknown(raw)`; `From<raw>` and `From<Enum> for raw`
//! convert both ways, and equality and hashing compare the raw wire value, so
//! `Unknown(20)` equals the named variant for 20 (though `From` never produces it).

/// Defines an open enum over an unsigned integer type.
///
/// ```text
/// open_enum! {
///     /// Doc for the enum.
///     pub enum Foo: u8 {
///         /// Doc for the variant.
///         Bar = 1,
///     }
/// }
/// ```
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $repr:ty {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:literal
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )*
            /// A value without a name here, kept verbatim so it survives a round trip.
            Unknown($repr),
        }

        impl $name {
            /// The value as it is written on the wire.
            pub const fn to_raw(self) -> $repr {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Unknown(raw) => raw,
                }
            }

            /// The variant for a wire value: a named one if there is one, else `Unknown`.
            pub const fn from_raw(raw: $repr) -> Self {
                match raw {
                    $( $value => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }

            /// Whether this value has a name here (it is not `Unknown`, or an `Unknown`
            /// holding a value that has a name).
            pub const fn is_known(self) -> bool {
                !matches!(Self::from_raw(self.to_raw()), Self::Unknown(_))
            }
        }

        impl From<$repr> for $name {
            fn from(raw: $repr) -> Self {
                Self::from_raw(raw)
            }
        }

        impl From<$name> for $repr {
            fn from(value: $name) -> $repr {
                value.to_raw()
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.to_raw() == other.to_raw()
            }
        }

        impl Eq for $name {}

        impl core::hash::Hash for $name {
            fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
                self.to_raw().hash(state);
            }
        }
    };
}
