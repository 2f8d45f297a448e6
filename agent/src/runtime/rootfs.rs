//! A container's own overlay layer, as Docker's overlay2 driver makes it:
//! `overlay2/<container-id>/{diff,work,merged,link,lower}`, with `diff` as the
//! overlay upperdir and the image layers (through their `overlay2/l/` short links,
//! so deep images fit in one page of mount options) as lowerdirs.
//!
//! Unlike Docker, the overlay is mounted only inside the container's own mount
//! namespace. When the container's last process exits the kernel drops the mount,
//! so a crashed supervisor can never leave a mount behind on the host.

use super::image::{self, ImageRecord};
use super::{Error, IoContext, Paths, Result, sys};
use std::path::PathBuf;

/// The directories of a container's layer.
#[derive(Debug, Clone)]
pub struct ContainerLayer {
    /// `overlay2/<id>`.
    pub dir: PathBuf,
    /// The writable upper layer.
    pub upper: PathBuf,
    /// overlayfs work directory.
    pub work: PathBuf,
    /// Where the overlay is mounted.
    pub merged: PathBuf,
    /// Lower layers as `l/<short>` (relative to `overlay2/`), top-most first.
    pub lower_links: Vec<String>,
    /// Lower layers' `diff` directories, top-most first.
    pub lowerdirs: Vec<PathBuf>,
    /// Mount with overlayfs' `volatile`: no sync of the upper layer, ever — not
    /// even the one that unmounting would do when the container's mount namespace
    /// dies (tens of milliseconds on a busy disk). For `--rm` containers, whose
    /// layer is deleted right after, as podman does.
    pub volatile: bool,
    id: String,
}

impl ContainerLayer {
    /// Creates the container's layer on top of `image`.
    pub fn create(paths: &Paths, id: &str, image: &ImageRecord) -> Result<Self> {
        let dir = paths.overlay().join(id);
        let layer = Self::open(paths, id, image)?;
        std::fs::create_dir(&dir).at("create layer directory", &dir)?;
        let made = (|| {
            for d in [&layer.upper, &layer.work, &layer.merged] {
                std::fs::create_dir(d).at("create directory", d)?;
            }
            image::register_layer(paths, id, &image.layers)?;
            Ok(())
        })();
        if let Err(e) = made {
            let _ = image::remove_layer_dir(paths, id);
            return Err(e);
        }
        Ok(layer)
    }

    /// The layer of container `id` (without touching the disk).
    pub fn open(paths: &Paths, id: &str, image: &ImageRecord) -> Result<Self> {
        let dir = paths.overlay().join(id);
        for l in &image.layers {
            let diff = image::layer_dir(paths, l).join("diff");
            if !diff.is_dir() {
                return Err(Error::NotFound(format!(
                    "layer {l} of image {} is missing from {}",
                    image.id,
                    paths.overlay().display()
                )));
            }
        }
        Ok(ContainerLayer {
            upper: dir.join("diff"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            lower_links: image::lower_links(paths, &image.layers)?,
            lowerdirs: image
                .layers
                .iter()
                .rev()
                .map(|l| image::layer_dir(paths, l).join("diff"))
                .collect(),
            dir,
            volatile: false,
            id: id.to_string(),
        })
    }

    /// overlayfs mount data, relative to `overlay2/` (the mount is made from there).
    pub fn mount_data(&self) -> String {
        self.mount_data_with(&self.lower_links)
    }

    fn mount_data_with(&self, lowers: &[String]) -> String {
        format!(
            "lowerdir={},upperdir={id}/diff,workdir={id}/work{}",
            lowers.join(":"),
            if self.volatile { ",volatile" } else { "" },
            id = self.id
        )
    }

    /// Mounts the overlay on `merged` (run inside the container's mount namespace).
    pub fn mount(&self, paths: &Paths) -> Result<()> {
        self.mount_with_lowers(paths, &self.lower_links)
    }

    /// Mounts the overlay with `lowers` (relative to `overlay2/`, top-most first) in
    /// place of the image's layers.
    pub fn mount_with_lowers(&self, paths: &Paths, lowers: &[String]) -> Result<()> {
        let overlay = paths.overlay();
        std::env::set_current_dir(&overlay).at("chdir", &overlay)?;
        let data = self.mount_data_with(lowers);
        if data.len() >= 4096 {
            return Err(Error::Invalid(format!(
                "image has too many layers ({}) for one overlay mount",
                lowers.len()
            )));
        }
        // nodev: device nodes inside the image or made by the container stay inert
        // (the real ones are bind-mounted onto /dev).
        sys::mount(
            Some("overlay"),
            &self.merged,
            Some("overlay"),
            libc::MS_NODEV,
            Some(&data),
        )
    }
}

/// Removes a container's layer directory and short link.
pub fn remove(paths: &Paths, id: &str) -> Result<()> {
    image::remove_layer_dir(paths, id)
}
