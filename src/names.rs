//! Enums that users choose by name (models, conditions, presets, optimizers, …): one trait so
//! that front ends (the CLI, a config file) list and parse them the same way.

/// A closed set of named choices.
pub trait Named: Sized + Copy + 'static {
    /// Every choice, in the order they are listed.
    const ALL: &'static [Self];
    /// The name a user types.
    fn name(&self) -> &'static str;

    /// The choice called `s`, or an error listing the valid names.
    fn parse_name(s: &str) -> Result<Self, crate::Error> {
        Self::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
            crate::Error::Config(format!("unknown value '{s}' (expected one of: {})", names.join(", ")))
        })
    }
}

/// Implements [`Named`], `FromStr` and `Display` for a field-less enum from its names.
#[macro_export]
macro_rules! named_enum {
    ($t:ident { $($v:ident => $n:literal),+ $(,)? }) => {
        impl $crate::names::Named for $t {
            const ALL: &'static [Self] = &[$($t::$v),+];
            fn name(&self) -> &'static str {
                match self { $($t::$v => $n),+ }
            }
        }
        impl ::std::str::FromStr for $t {
            type Err = $crate::Error;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                <Self as $crate::names::Named>::parse_name(s)
            }
        }
        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::names::Named::name(self))
            }
        }
    };
}
