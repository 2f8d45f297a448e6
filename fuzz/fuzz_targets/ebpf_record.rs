//! Ring-buffer records: what the kernel side writes, as bytes of any length and
//! content. Decoding never reads past the record (the decoder is `unsafe` inside:
//! run under AddressSanitizer), and every string stays within its field's bound.

#![no_main]

use agent::ebpf::events::{
    ARGS_LEN, CGROUP_NAME_LEN, COMM_LEN, DecodeError, EVENT_CGROUP_MKDIR, Event, FILENAME_LEN,
    FSTYPE_LEN, OOM_LEVELS, PATH_LEN, ProcessInfo, RawCgroupMkdirEvent, RawExecEvent, RawExitEvent,
    RawHeader, RawMountEvent, RawOomEvent, Record, decode, decode_record,
};
use libfuzzer_sys::fuzz_target;
use std::mem::size_of;

/// A C string field decoded: no NUL, at most one character per byte.
fn field(s: &str, bound: usize) {
    assert!(!s.contains('\0'), "{s:?}");
    assert!(
        s.chars().count() <= bound,
        "{} chars for {bound} bytes",
        s.chars().count()
    );
}

fn process(p: &ProcessInfo) {
    field(&p.comm, COMM_LEN);
}

fuzz_target!(|data: &[u8]| {
    let record = decode_record(data);
    match &record {
        Ok(Record::Event(Event::Exec(p, e))) => {
            assert!(data.len() >= size_of::<RawExecEvent>());
            process(p);
            field(&e.filename, FILENAME_LEN);
            let chars: usize = e.argv.iter().map(|a| a.chars().count() + 1).sum();
            assert!(chars <= ARGS_LEN + 1, "{chars} chars of arguments");
            for a in &e.argv {
                assert!(!a.contains('\0'));
            }
        }
        Ok(Record::Event(Event::Mount(p, m))) => {
            assert!(data.len() >= size_of::<RawMountEvent>());
            process(p);
            for (s, bound) in [
                (&m.source, PATH_LEN),
                (&m.target, PATH_LEN),
                (&m.fstype, FSTYPE_LEN),
            ] {
                if let Some(s) = s {
                    assert!(!s.is_empty(), "an empty string is None");
                    field(s, bound);
                }
            }
        }
        Ok(Record::Event(Event::Exit(p, x))) => {
            assert!(data.len() >= size_of::<RawExitEvent>());
            process(p);
            // Exactly one of code and signal.
            assert_ne!(x.code().is_some(), x.signal().is_some());
        }
        Ok(Record::Event(Event::Oom(p, o))) => {
            assert!(data.len() >= size_of::<RawOomEvent>());
            process(p);
            assert!(o.chain.len() <= OOM_LEVELS);
            for m in &o.chain {
                field(&m.name, CGROUP_NAME_LEN);
            }
            if let Some(i) = o.trigger_level() {
                assert!(i < o.chain.len());
                let _ = o.path(i);
            }
        }
        Ok(Record::CgroupMkdir(p, c)) => {
            assert!(data.len() >= size_of::<RawCgroupMkdirEvent>());
            process(p);
            field(&c.path, PATH_LEN);
        }
        Err(DecodeError::TooShort { len, .. }) => assert_eq!(*len, data.len()),
        Err(DecodeError::UnknownKind(k)) => {
            assert!(data.len() >= size_of::<RawHeader>() && *k != EVENT_CGROUP_MKDIR)
        }
        Err(DecodeError::UnknownMountOp(_)) => assert!(data.len() >= size_of::<RawMountEvent>()),
        Err(DecodeError::UnknownOomHook(_)) => assert!(data.len() >= size_of::<RawOomEvent>()),
    }
    // `decode` is `decode_record` without the cgroup records.
    match (&record, decode(data)) {
        (Ok(Record::Event(a)), Ok(b)) => assert_eq!(a, &b),
        // Cgroup records, whole or cut short, are not `decode`'s.
        (
            Ok(Record::CgroupMkdir(..)) | Err(DecodeError::TooShort { .. }),
            Err(DecodeError::UnknownKind(k)),
        ) if k == EVENT_CGROUP_MKDIR => {}
        (Err(a), Err(b)) => assert_eq!(a, &b),
        (a, b) => panic!("decode_record {a:?}, decode {b:?}"),
    }
});
