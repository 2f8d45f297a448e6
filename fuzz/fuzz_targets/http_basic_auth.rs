//! The `Authorization` header of an HTTP request to the metrics server, decoded
//! before any password is checked: anyone who can reach the port sends it.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((user, password)) = agent::fuzzing::basic_auth_credentials(data) {
        assert!(!user.contains(':'), "{user:?}");
        // The same credentials, encoded again, read back the same.
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let again = agent::fuzzing::basic_auth_credentials(format!("Basic {encoded}").as_bytes());
        assert_eq!(again, Some((user, password)));
    }
});
