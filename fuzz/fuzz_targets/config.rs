//! The config parser and its cross-field validation: any text is either a
//! config or an error naming the key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patchwork_server::NodeConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = NodeConfig::from_toml(text, std::path::Path::new("/nonexistent/patchwork-fuzz"));
    }
});
