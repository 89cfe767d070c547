//! The data folder's permissions: it holds the store (names, dates of birth,
//! NHS numbers in sled's files) and spooled imports and backups, so only the
//! node's own user may enter it. sled creates its files 0644 under a normal
//! umask; a folder others cannot enter keeps them private whatever their
//! mode, so the node makes its folder 0700 and refuses to start with one
//! others can read, as it refuses a key file others can read.

use std::io;
use std::path::Path;

/// Why the data folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "{path} is readable by group or others (mode {mode:o}); run chmod 700 {path} (it holds personal data)"
    )]
    OpenToOthers { path: String, mode: u32 },
    #[error("{path} is not a folder")]
    NotAFolder { path: String },
    #[error("cannot create {path}: {source}")]
    Create { path: String, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Checks an existing data folder: refused if group or others have any
/// access to it. A folder that does not exist yet passes (`prepare` makes it).
pub fn check(data_dir: &Path) -> Result<(), DataDirError> {
    let metadata = match std::fs::metadata(data_dir) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(DataDirError::Read {
                path: shown(data_dir),
                source,
            });
        }
    };
    if !metadata.is_dir() {
        return Err(DataDirError::NotAFolder {
            path: shown(data_dir),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(DataDirError::OpenToOthers {
                path: shown(data_dir),
                mode,
            });
        }
    }
    Ok(())
}

/// Makes `dir` and any missing parents 0700 (an existing one is left as
/// it is).
pub(crate) fn create_private(dir: &Path) -> Result<(), DataDirError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| DataDirError::Create {
        path: shown(dir),
        source,
    })
}

/// Before a node opens its store: refuses a data folder others can read,
/// creates a missing one (and the store folder in it) 0700.
pub fn prepare(data_dir: &Path, store_dir: &Path) -> Result<(), DataDirError> {
    check(data_dir)?;
    create_private(data_dir)?;
    create_private(store_dir)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn a_missing_folder_is_made_private_and_an_open_one_refused() {
        let base = tempfile::tempdir().expect("tempdir");
        let data = base.path().join("a/data");
        prepare(&data, &data.join("store")).expect("prepared");
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("store")), 0o700);
        assert_eq!(mode(&base.path().join("a")), 0o700);

        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        let refused = prepare(&data, &data.join("store"))
            .expect_err("open folder")
            .to_string();
        assert!(
            refused.contains("(mode 750); run chmod 700 ") && refused.contains("/a/data"),
            "{refused}"
        );
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        prepare(&data, &data.join("store")).expect("private again");

        let file = base.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(matches!(check(&file), Err(DataDirError::NotAFolder { .. })));
    }
}
