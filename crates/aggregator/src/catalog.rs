//! The ad catalog the operator publishes beside the model. Every device downloads the same
//! whole document, so fetching it reveals nothing about the visitor; the ETag lets devices
//! revalidate it for the price of a 304.

use hearth_core::device::catalog::Ad;
use hearth_core::model::pack::sha256_hex;
use serde::Deserialize;
use std::path::Path;

/// Largest catalog served; devices refuse bigger ones too (www/hearth/store.js).
pub const MAX_CATALOG_BYTES: usize = 8 << 20;

pub struct PublishedCatalog {
    pub body: Vec<u8>,
    pub etag: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file cannot be read (operator's path or permissions).
    #[error("cannot read the catalog {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The file is not a catalog hearth-core accepts (operator's catalog).
    #[error("catalog {path}: {detail}")]
    Invalid { path: String, detail: String },
}

/// The document's shape as devices check it: ads in hearth-core's form and one creative per ad
/// (the creative's own fields are the device's to check).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    ads: Vec<Ad>,
    creatives: std::collections::HashMap<String, serde_json::Value>,
}

impl PublishedCatalog {
    pub fn read(path: &Path) -> Result<PublishedCatalog, CatalogError> {
        let shown = path.display().to_string();
        let body = std::fs::read(path).map_err(|source| CatalogError::Read { path: shown.clone(), source })?;
        let invalid = |detail: String| CatalogError::Invalid { path: shown.clone(), detail };
        if body.len() > MAX_CATALOG_BYTES {
            return Err(invalid(format!("{} bytes, more than {MAX_CATALOG_BYTES}", body.len())));
        }
        let doc: Document = serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
        if let Some(ad) = doc.ads.iter().find(|a| !doc.creatives.contains_key(&a.id)) {
            return Err(invalid(format!("ad {:?} has no creative", ad.id)));
        }
        let etag = format!("\"{}\"", &sha256_hex(&body)[..32]);
        Ok(PublishedCatalog { body, etag })
    }
}
