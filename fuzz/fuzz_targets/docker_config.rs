//! Docker's `containers/<id>/config.v2.json`, read for the name, image and label
//! series of a container (Docker writes it, but from what `docker run` was given).

#![no_main]

use agent::container::metadata::{MAX_LABELS, docker_config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Two allow-listed variables: only they may come out, with their values.
    let keys = ["PATH".to_string(), "A".to_string()];
    let Ok(meta) = docker_config(data, &keys) else {
        assert!(serde_json::from_slice::<serde_json::Value>(data).is_err());
        return;
    };
    assert!(meta.labels.len() <= MAX_LABELS);
    assert!(!meta.name.starts_with('/'));
    let v: serde_json::Value = serde_json::from_slice(data).expect("parsed once already");
    let labels = v.pointer("/Config/Labels").and_then(|l| l.as_object());
    for (k, val) in &meta.labels {
        let raw = labels.and_then(|l| l.get(k)).and_then(|l| l.as_str());
        assert_eq!(raw, Some(val.as_str()), "label {k:?}");
    }
    let image = v.pointer("/Config/Image").and_then(|i| i.as_str());
    assert_eq!(image.unwrap_or_default(), meta.image);
    for (k, val) in &meta.env {
        assert!(keys.contains(k), "variable {k:?} was not allow-listed");
        let pair = format!("{k}={val}");
        let env = v.pointer("/Config/Env").and_then(|e| e.as_array());
        assert!(
            env.into_iter().flatten().any(|e| e.as_str() == Some(&pair)),
            "{pair:?} is not in Config.Env"
        );
    }
});
