//! `--user` resolved as Docker does it: `user[:group]`, names or numbers,
//! against the image's `/etc/passwd` and `/etc/group` (or a running
//! container's, read inside its root).

use crate::runtime::image::{self, ImageRecord};
use crate::runtime::{Error, Paths, Result};
use std::path::Path;

/// A passwd or group file parsed into (name, fields).
fn read_colon_file(path: Option<&Path>) -> Vec<Vec<String>> {
    let Some(path) = path else { return Vec::new() };
    parse_colon_file(&std::fs::read_to_string(path).unwrap_or_default())
}

fn parse_colon_file(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Resolved user: uid, gid, supplementary groups, home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory (for `HOME`).
    pub home: String,
}

/// Resolves `user[:group]` against the image's `/etc/passwd` and `/etc/group`.
pub fn resolve_user(paths: &Paths, image: &ImageRecord, spec: &str) -> Result<ResolvedUser> {
    let passwd =
        read_colon_file(image::find_in_layers(paths, &image.layers, "etc/passwd").as_deref());
    let group =
        read_colon_file(image::find_in_layers(paths, &image.layers, "etc/group").as_deref());
    resolve_user_in(&passwd, &group, spec)
}

fn resolve_user_in(
    passwd: &[Vec<String>],
    group: &[Vec<String>],
    spec: &str,
) -> Result<ResolvedUser> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = passwd
        .iter()
        .find(|f| f.len() >= 4 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let (uid, mut gid, name, home) = match (entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>().map_err(bad_entry("passwd", user))?,
            f[3].parse::<u32>().map_err(bad_entry("passwd", user))?,
            Some(f[0].clone()),
            f.get(5).cloned().unwrap_or_else(|| "/".into()),
        ),
        (None, Ok(uid)) => (uid, 0, None, "/".to_string()),
        (None, Err(_)) => {
            return Err(Error::NotFound(format!(
                "unknown user {user:?}: not in the image's /etc/passwd"
            )));
        }
    };
    if let Some(g) = grp {
        gid = match group.iter().find(|f| f.len() >= 3 && f[0] == g) {
            Some(f) => f[2].parse().map_err(bad_entry("group", g))?,
            None => g.parse().map_err(|_| {
                Error::NotFound(format!(
                    "unknown group {g:?}: not in the image's /etc/group"
                ))
            })?,
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = &name {
        for f in group {
            if f.len() >= 4
                && f[3].split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && !groups.contains(&g)
            {
                groups.push(g);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
    })
}

fn bad_entry(file: &'static str, name: &str) -> impl Fn(std::num::ParseIntError) -> Error {
    move |source| Error::BadEntry {
        file,
        name: name.to_string(),
        source,
    }
}

/// Resolves `user[:group]` against `/etc/passwd` and `/etc/group` of a running
/// container, read through its `/proc/<pid>/root` with links resolved inside it
/// (an image's `/etc/passwd -> /etc/shadow` names the container's, not the host's).
pub fn resolve_user_under(root: &Path, spec: &str) -> Result<ResolvedUser> {
    let read = |name: &str| -> Result<Vec<Vec<String>>> {
        let data = crate::runtime::sys::read_in_root(root, name)?.unwrap_or_default();
        Ok(parse_colon_file(&String::from_utf8_lossy(&data)))
    };
    resolve_user_in(&read("etc/passwd")?, &read("etc/group")?, spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_passwd_and_group() {
        let split = |s: &str| -> Vec<Vec<String>> {
            s.lines()
                .map(|l| l.split(':').map(str::to_string).collect())
                .collect()
        };
        let passwd = split(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false",
        );
        let group = split("root:x:0:\nnogroup:x:65534:\nstaff:x:50:nobody");
        let u = resolve_user_in(&passwd, &group, "nobody").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone()),
            (65534, 65534, vec![65534, 50])
        );
        let u = resolve_user_in(&passwd, &group, "1000:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(resolve_user_in(&passwd, &group, "").unwrap().home, "/root");
        assert!(resolve_user_in(&passwd, &group, "ghost").is_err());
        assert!(resolve_user_in(&passwd, &group, "root:ghosts").is_err());
    }
}
