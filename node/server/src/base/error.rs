//! The node's one error type for starting, serving and reloading, and the
//! one reader of private-key files (which refuses a key others can read).

use std::path::Path;

use crate::base::config::ConfigError;
use patchwork_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{key}: {message}")]
    KeyMaterial { key: &'static str, message: String },
    #[error("store in {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("serving failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("{key}: {message}")]
    Federation { key: String, message: String },
    #[error("api.reflection: cannot describe the API: {0}")]
    Reflection(String),
    #[error("{key}: {message}")]
    Webhook { key: String, message: String },
    #[error("node.data_dir: {0}")]
    DataDir(#[from] patchwork_store::data_dir::DataDirError),
}

fn key_error(key: &'static str, message: impl Into<String>) -> NodeError {
    NodeError::KeyMaterial {
        key,
        message: message.into(),
    }
}

/// Reads a private key, refusing one other users could read: a node key that
/// leaked lets anyone speak as this council.
pub fn read_private_key(key: &'static str, path: &Path) -> Result<Vec<u8>, NodeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(path)
            .map_err(|e| key_error(key, format!("cannot read {}: {e}", path.display())))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_error(
                key,
                format!(
                    "{} is readable by group or others (mode {mode:o}); run chmod 600 on it",
                    path.display()
                ),
            ));
        }
    }
    std::fs::read(path).map_err(|e| key_error(key, format!("cannot read {}: {e}", path.display())))
}
