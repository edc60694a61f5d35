//! A pack on disk: the directory holding `model.onnx` and `manifest.json`. The one place
//! hearth-core touches a file system, for the native tools that all keep packs this way (the
//! aggregator's initial pack, xtask's generators, the tests); the browser gets its packs over
//! HTTP and never calls this.

use crate::error::Result;
use crate::model::pack::ModelPack;
use std::path::Path;

/// The graph's file name inside a pack directory.
pub const ONNX_FILE: &str = "model.onnx";
/// The manifest's file name inside a pack directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// A pack's two files as they are on disk, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PackFiles {
    /// The bytes of `model.onnx`.
    pub onnx: Vec<u8>,
    /// The text of `manifest.json`.
    pub manifest: String,
}

impl PackFiles {
    /// Reads both files of the pack in `dir`; an I/O error names the file.
    pub fn read(dir: &Path) -> std::io::Result<PackFiles> {
        let path = dir.join(ONNX_FILE);
        let onnx = std::fs::read(&path).map_err(|e| naming(&path, e))?;
        let path = dir.join(MANIFEST_FILE);
        let manifest = std::fs::read_to_string(&path).map_err(|e| naming(&path, e))?;
        Ok(PackFiles { onnx, manifest })
    }

    /// Checks and loads the pack (see [`ModelPack::load`]).
    pub fn load(&self) -> Result<ModelPack> {
        ModelPack::load(&self.onnx, &self.manifest)
    }
}

/// Writes a pack (as [`ModelPack::write`] returns it) into `dir`, creating the directory.
pub fn write(dir: &Path, onnx: &[u8], manifest: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| naming(dir, e))?;
    let path = dir.join(ONNX_FILE);
    std::fs::write(&path, onnx).map_err(|e| naming(&path, e))?;
    let path = dir.join(MANIFEST_FILE);
    std::fs::write(&path, format!("{}\n", manifest.trim_end())).map_err(|e| naming(&path, e))
}

/// The error with the path it happened at, which `std::io::Error` alone does not say.
fn naming(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
