//! The database's files are readable by the server's user only: the embedded SQLite database
//! and its WAL hold every conversation, and a backup is the same data.
//!
//! SQLite creates a database file with mode 0644 (less the umask), so under the usual umask
//! anyone on the machine could read the record; it gives the `-wal` and `-shm` files the mode
//! of the database file. So the database file is created here, 0600, before SQLite opens it
//! (and an existing one readable by others is narrowed to 0600, once, with a log line), and a
//! backup is created empty, 0600, before `VACUUM INTO` fills it. A directory made for them is
//! 0700. An existing directory is left as its owner set it.

use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Mode of the files: owner read and write.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each new one 0700.
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)
}

/// Makes sure the SQLite database at `path` exists and only its owner can read it.
pub(crate) fn prepare_database(path: &Path) -> io::Result<()> {
    match create_empty(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => narrow(path),
        Err(err) => Err(err),
    }
}

/// Creates `path` as a new empty file only its owner can read; fails if it exists.
pub(crate) fn create_empty(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(FILE_MODE);
    options.open(path).map(drop)
}

/// Narrows an existing database file (and its WAL and shared-memory files, which SQLite made
/// with its mode) to the owner alone.
fn narrow(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    for file in [
        path.to_owned(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
    ] {
        let Ok(metadata) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(FILE_MODE))?;
            tracing::info!(
                path = %file.display(),
                was = format!("{mode:o}"),
                "the database file was readable by others; now 0600"
            );
        }
    }
    Ok(())
}

#[cfg(unix)]
fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_files_and_directories_are_the_owners_alone() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("data/nested");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&scratch.path().join("data")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let db = dir.join("courtchat.db");
        prepare_database(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
        assert!(create_empty(&db).is_err(), "never over an existing file");
    }

    #[test]
    fn an_existing_database_readable_by_others_is_narrowed() {
        let scratch = tempfile::tempdir().unwrap();
        let db = scratch.path().join("courtchat.db");
        for file in [&db, &sibling(&db, "-wal")] {
            std::fs::write(file, b"x").unwrap();
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        prepare_database(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&sibling(&db, "-wal")), 0o600);
        assert_eq!(
            std::fs::read(&db).unwrap(),
            b"x",
            "the content is untouched"
        );
    }
}
