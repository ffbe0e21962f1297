//! The YAML configuration loader over any text: a validated config (whose
//! tasks then resolve) or a `ConfigError`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netspectra_model::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Variables resolve to a fixed value: `${X}` expansion is exercised too.
    let env = |name: &str| (name.len() < 8).then(|| "42".to_string());
    if let Ok(config) = Config::from_yaml(text, &env) {
        let _ = netspectra_model::task::configured_tasks(&config);
    }
});
