//! A `kiosk:app@0.1.0` test guest that imports `wasi:http/outgoing-handler` anyway
//! (through the wasip2 crate): 0.1.0 has no network, so Kiosk must refuse to link it
//! and name the import. Never shipped.

// The bindings wit-bindgen generates for the canonical ABI are `unsafe` inside.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../../wit/app@0.1.0",
    world: "app",
});

use exports::kiosk::app::{calls, lifecycle, usage};
use kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};

struct NetV1;

impl lifecycle::Guest for NetV1 {
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

impl calls::Guest for NetV1 {
    fn invoke(_ctx: CallContext, _operation: String, input: String) -> Result<String, AppError> {
        let request = wasip2::http::types::OutgoingRequest::new(wasip2::http::types::Fields::new());
        let _ = request.set_authority(Some(&input));
        match wasip2::http::outgoing_handler::handle(request, None) {
            Ok(_) => Ok("sent".into()),
            Err(e) => Err(AppError { code: "refused".into(), message: format!("{e:?}") }),
        }
    }
}

impl usage::Guest for NetV1 {
    fn report(_ctx: CallContext, _window: UsageWindow) -> Result<Vec<UsageRecord>, AppError> {
        Ok(Vec::new())
    }
}

export!(NetV1);
