//! The `--web.config.file` YAML (exporter-toolkit's format): TLS settings and
//! basic-auth users. Relative paths resolve against an empty directory, so any
//! certificate named is missing; what is checked is the YAML and the settings.

#![no_main]

use agent::server::web_config::WebConfig;
use libfuzzer_sys::fuzz_target;
use std::error::Error;
use std::sync::OnceLock;

fn empty_dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match WebConfig::parse(text, empty_dir()) {
        Ok(config) => {
            // TLS needs a certificate, and there is none below the empty directory
            // (an absolute path to a real one is possible, but never both halves).
            let _ = config.describe();
        }
        Err(e) => {
            let mut cur: Option<&dyn Error> = Some(&e);
            while let Some(err) = cur {
                let _ = err.to_string();
                cur = err.source();
            }
        }
    }
});
