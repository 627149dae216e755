//! The runtime calls that `glue.js` batches: a list crosses the wasm boundary once, as
//! one text, instead of one call (and one copy of each string) per item. Header sets and
//! `request.cf` reads were about a tenth of the gateway's own work per request in a CPU
//! profile on raw workerd.

use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{self, JsValue};
use worker::web_sys;

#[wasm_bindgen(module = "/src/edge/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = headersFrom)]
    fn headers_from(text: &str) -> web_sys::Headers;

    #[wasm_bindgen(js_name = cfFields)]
    fn cf_fields(request: &JsValue, names: &str) -> Option<String>;
}

/// Headers gathered in wasm, made into the runtime's `Headers` by one call.
pub struct Head(String);

/// A header value the runtime refuses (and that would break the line list).
#[derive(Debug)]
pub struct InvalidValue;

impl Head {
    pub fn new() -> Head {
        Head(String::with_capacity(256))
    }

    /// Sets `name` (a later value of a name replaces an earlier one, as `Headers.set` does).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), InvalidValue> {
        if value.contains(['\n', '\r', '\0']) {
            return Err(InvalidValue);
        }
        for part in [name, "\n", value, "\n"] {
            self.0.push_str(part);
        }
        Ok(())
    }

    pub fn build(&self) -> web_sys::Headers {
        headers_from(&self.0)
    }
}

/// The `request.cf` fields residency reads, in the lines `CfFields::from_lines` takes;
/// `None` when `cf` is not an object, or a field is of a type the gateway does not read.
pub fn cf_lines(request: &web_sys::Request) -> Option<String> {
    thread_local! {
        static NAMES: String = crate::model::geo::CfFields::NAMES.join("\n");
    }
    NAMES.with(|names| cf_fields(request, names))
}
