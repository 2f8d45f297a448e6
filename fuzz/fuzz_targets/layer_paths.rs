//! A layer entry's path and type, as the unpacker classifies them: sanitized (no
//! `..`, no root), then an ordinary entry, an opaque marker, or a whiteout of one
//! plain name. Input: the entry type byte, then the path's bytes.

#![no_main]

use agent::fuzzing::{Whiteout, classify_entry};
use libfuzzer_sys::fuzz_target;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, path)) = data.split_first() else {
        return;
    };
    let kind = tar::EntryType::new(kind);
    let raw = Path::new(OsStr::from_bytes(path));
    let Some((rel, class)) = classify_entry(raw, kind) else {
        assert!(raw.components().any(|c| c == Component::ParentDir));
        return;
    };
    // Sanitizing keeps the plain names, in order, and nothing else.
    assert!(rel.is_relative());
    assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
    let plain: PathBuf = raw
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    assert_eq!(rel, plain);
    let Some(class) = class else {
        assert!(rel.as_os_str().is_empty());
        return;
    };
    let last = rel.file_name().expect("a file name").as_bytes();
    let whiteout_dir = rel
        .parent()
        .is_some_and(|p| p.iter().any(|n| n.as_bytes().starts_with(b".wh.")));
    match class {
        Ok(Whiteout::No) => {
            assert!(!last.starts_with(b".wh."));
            assert!(!whiteout_dir);
        }
        Ok(Whiteout::Opaque) => {
            assert_eq!(last, b".wh..wh..opq");
            assert!(kind.is_file() || kind.is_hard_link());
            assert!(!whiteout_dir);
        }
        Ok(Whiteout::Hide(name)) => {
            let name = name.as_bytes();
            assert!(!name.is_empty() && name != b"." && name != b"..");
            assert!(!name.contains(&b'/') && !name.starts_with(b".wh."));
            assert_eq!(last, [b".wh.", name].concat());
            assert!(kind.is_file() || kind.is_hard_link());
            assert!(!whiteout_dir);
        }
        Err(why) => {
            assert!(!why.contains('\n'));
            assert!(last.starts_with(b".wh.") || whiteout_dir);
        }
    }
});
