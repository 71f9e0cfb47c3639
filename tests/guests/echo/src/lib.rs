//! The smallest `kiosk:app` guest: `invoke` answers its input, every other export does
//! nothing. The shared guest of the per-call benchmark ladder (`host/benches/ladder.rs`),
//! so each rung measures the host's cost of a call, not the app's work. Never shipped.

// The bindings wit-bindgen generates for the canonical ABI are `unsafe` inside.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../../wit/app@0.1.0",
    world: "app",
});

use exports::kiosk::app::{calls, lifecycle, usage};
use kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};

struct Echo;

impl lifecycle::Guest for Echo {
    fn install(_ctx: CallContext, _config: String) -> Result<(), AppError> {
        Ok(())
    }

    fn validate_config(_ctx: CallContext, _config: String) -> Result<(), AppError> {
        Ok(())
    }

    fn configure(_ctx: CallContext, _old: String, _new: String) -> Result<(), AppError> {
        Ok(())
    }

    fn upgrade(_ctx: CallContext, _from: String, _config: String) -> Result<(), AppError> {
        Ok(())
    }

    fn uninstall(_ctx: CallContext) -> Result<(), AppError> {
        Ok(())
    }
}

impl calls::Guest for Echo {
    fn invoke(_ctx: CallContext, _operation: String, input: String) -> Result<String, AppError> {
        Ok(input)
    }
}

impl usage::Guest for Echo {
    fn report(_ctx: CallContext, _window: UsageWindow) -> Result<Vec<UsageRecord>, AppError> {
        Ok(Vec::new())
    }
}

export!(Echo);
