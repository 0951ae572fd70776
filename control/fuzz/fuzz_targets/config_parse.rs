//! The configuration file parser (`config::parse`, what `mifsec check` and the daemon
//! load): arbitrary text is a configuration or an error naming a place in it, never a
//! panic. A configuration that parses also summarises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_control::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse("fuzz.toml", text) {
        Ok(cfg) => {
            let _ = config::summary(&cfg);
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.toml"));
            if let Some(line) = e.line {
                assert!(
                    line >= 1 && line <= text.matches('\n').count() + 1,
                    "{shown}"
                );
            }
        }
    }
});
