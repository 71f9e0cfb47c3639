//! Extism's side of the ladder's shared echo guest: `invoke` answers its input.
use extism_pdk::{FnResult, plugin_fn};

#[plugin_fn]
pub fn invoke(input: String) -> FnResult<String> {
    Ok(input)
}
