//! Removing what the harness created without ever reaching through a mount.
//!
//! A shim is free to mount anything anywhere in its bundle (its rootfs, a bind mount of a host directory left after
//! Delete); `remove_dir_all` would follow that mount and delete the mount's source. `remove_tree` first detaches
//! every mount it can see under the tree (deepest first), then walks the tree by file descriptor: it never follows
//! a symlink, and never enters a directory that lies on another mount than the tree's root (statx mount id, and the
//! device as a fallback) or that is still a mount point. Whatever it could not remove, it says.
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What `remove_tree` did beyond deleting files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Mounts found under the tree and detached (a leak by whoever mounted them).
    pub detached: Vec<String>,
    /// Paths left in place, with why: a mount that would not go, a directory on another mount, an error.
    pub kept: Vec<String>,
}

impl Removal {
    /// One line per finding, for a run's "left after teardown" list.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.detached.iter().map(|m| format!("mount {m} (detached)")).collect();
        lines.extend(self.kept.iter().map(|k| format!("kept {k}")));
        lines
    }
}

/// Mount points at or under `dir`, as the kernel lists them (octal escapes decoded).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
        .filter(|point| Path::new(point).starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches every mount at or under `root`, deepest first. Mounts can be stacked on one point (each detach
/// uncovers the next), so it goes round until none is left or none will go. Returns what it detached.
pub fn detach_all(root: &Path) -> Vec<String> {
    let mut detached = Vec::new();
    for _ in 0..64 {
        let mut mounts = mounts_under(root);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        let before = detached.len();
        for mount in mounts {
            if nix::mount::umount2(mount.as_str(), nix::mount::MntFlags::MNT_DETACH).is_ok() {
                detached.push(mount);
            }
        }
        if detached.len() == before {
            break;
        }
    }
    detached
}

/// Removes `root` and everything under it that is on root's own mount. Missing `root` is not an error.
pub fn remove_tree(root: &Path) -> Removal {
    let mut removal = Removal { detached: detach_all(root), kept: Vec::new() };
    for still in mounts_under(root) {
        removal.kept.push(format!("{still} (still mounted)"));
    }
    walk_and_remove(root, &mut removal);
    removal
}

/// The walk alone: removes what is on root's mount, enters nothing else (a mount that appeared after the detach,
/// or one that would not go).
fn walk_and_remove(root: &Path, removal: &mut Removal) {
    let Some(parent) = root.parent() else {
        removal.kept.push(format!("{} (no parent)", root.display()));
        return;
    };
    let Some(name) = root.file_name() else {
        removal.kept.push(format!("{} (no name)", root.display()));
        return;
    };
    let parent_fd = match open_dir(libc::AT_FDCWD, &path_c(parent)) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
        Err(e) => {
            removal.kept.push(format!("{} ({e})", root.display()));
            return;
        }
    };
    let name_c = CString::new(name.as_bytes()).expect("file names hold no NUL");
    let Ok(stat) = stat_at(parent_fd.as_raw_fd(), &name_c) else { return };
    if stat.stx_mode as u32 & libc::S_IFMT != libc::S_IFDIR {
        // A file or a symlink: remove it, never what it points to.
        if let Err(e) = unlink_at(parent_fd.as_raw_fd(), &name_c, false) {
            removal.kept.push(format!("{} ({e})", root.display()));
        }
        return;
    }
    let home =
        Home { mnt_id: stat.stx_mnt_id, has_mnt_id: stat.stx_mask & libc::STATX_MNT_ID != 0, dev: dev_of(&stat) };
    remove_dir_entry(parent_fd.as_raw_fd(), &name_c, root, &home, removal);
}

struct Home {
    mnt_id: u64,
    has_mnt_id: bool,
    dev: (u32, u32),
}

impl Home {
    fn owns(&self, stat: &libc::statx) -> bool {
        if self.has_mnt_id && stat.stx_mask & libc::STATX_MNT_ID != 0 && stat.stx_mnt_id != self.mnt_id {
            return false;
        }
        dev_of(stat) == self.dev && stat.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 == 0
    }
}

fn dev_of(stat: &libc::statx) -> (u32, u32) {
    (stat.stx_dev_major, stat.stx_dev_minor)
}

/// Removes the directory `name` in `parent` (shown as `shown`), its contents first.
fn remove_dir_entry(parent: i32, name: &CStr, shown: &Path, home: &Home, removal: &mut Removal) {
    let dir = match open_dir(parent, name) {
        Ok(fd) => fd,
        Err(e) => {
            removal.kept.push(format!("{} ({e})", shown.display()));
            return;
        }
    };
    // The directory as opened (not as named): if it is on another mount, it is not ours to empty.
    match stat_fd(dir.as_raw_fd()) {
        Ok(stat) if home.owns(&stat) => {}
        Ok(_) => {
            removal.kept.push(format!("{} (on another mount: not entered)", shown.display()));
            return;
        }
        Err(e) => {
            removal.kept.push(format!("{} ({e})", shown.display()));
            return;
        }
    }
    for entry in list(&dir) {
        let entry_c = CString::new(entry.clone()).expect("file names hold no NUL");
        let path = shown.join(OsStr::from_bytes(&entry));
        let Ok(stat) = stat_at(dir.as_raw_fd(), &entry_c) else { continue };
        if stat.stx_mode as u32 & libc::S_IFMT == libc::S_IFDIR {
            if home.owns(&stat) {
                remove_dir_entry(dir.as_raw_fd(), &entry_c, &path, home, removal);
            } else {
                removal.kept.push(format!("{} (on another mount: not entered)", path.display()));
            }
        } else if let Err(e) = unlink_at(dir.as_raw_fd(), &entry_c, false) {
            removal.kept.push(format!("{} ({e})", path.display()));
        }
    }
    drop(dir);
    if let Err(e) = unlink_at(parent, name, true) {
        // A directory kept because something in it was kept says nothing new.
        if e.raw_os_error() != Some(libc::ENOTEMPTY)
            || !removal.kept.iter().any(|k| k.starts_with(&*shown.to_string_lossy()))
        {
            removal.kept.push(format!("{} ({e})", shown.display()));
        }
    }
}

fn path_c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("paths hold no NUL")
}

fn open_dir(parent: i32, name: &CStr) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain openat; the fd is owned from here on.
    let fd = unsafe {
        libc::openat(parent, name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn statx_raw(dirfd: i32, name: &CStr, flags: i32) -> std::io::Result<libc::statx> {
    // SAFETY: statx writes into the zeroed struct we own.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    let mask = libc::STATX_TYPE | libc::STATX_MNT_ID;
    let rc = unsafe { libc::statx(dirfd, name.as_ptr(), flags, mask, &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat)
}

fn stat_at(dirfd: i32, name: &CStr) -> std::io::Result<libc::statx> {
    statx_raw(dirfd, name, libc::AT_SYMLINK_NOFOLLOW)
}

fn stat_fd(fd: i32) -> std::io::Result<libc::statx> {
    statx_raw(fd, c"", libc::AT_EMPTY_PATH)
}

fn unlink_at(dirfd: i32, name: &CStr, dir: bool) -> std::io::Result<()> {
    // SAFETY: a plain unlinkat.
    let rc = unsafe { libc::unlinkat(dirfd, name.as_ptr(), if dir { libc::AT_REMOVEDIR } else { 0 }) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The names in an open directory (not `.` or `..`).
fn list(dir: &OwnedFd) -> Vec<Vec<u8>> {
    // fdopendir takes the fd over, so give it a duplicate.
    // SAFETY: dup of an fd we own; fdopendir/readdir/closedir on the stream we own.
    unsafe {
        let dup = libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0);
        if dup < 0 {
            return Vec::new();
        }
        let stream = libc::fdopendir(dup);
        if stream.is_null() {
            libc::close(dup);
            return Vec::new();
        }
        let mut names = Vec::new();
        loop {
            let entry = libc::readdir(stream);
            if entry.is_null() {
                break;
            }
            let name = CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        libc::closedir(stream);
        names
    }
}

/// Paths a removal should not have touched, for tests: every file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// Removes the socket a shim named, and only if it is a socket: an address is the shim's word, and a shim that
/// printed `unix:///etc/passwd` must not make the harness delete that file. Returns whether it removed one.
pub fn remove_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_fields() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn removes_a_tree_and_never_follows_a_symlink() {
        let base = std::env::temp_dir().join(format!("fstree-test-{}", std::process::id()));
        let outside = base.join("outside");
        let tree = base.join("tree");
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        std::fs::write(outside.join("deep/keep"), b"x").unwrap();
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), b"y").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        let removal = remove_tree(&tree);
        assert!(removal.kept.is_empty(), "{removal:?}");
        assert!(!tree.exists());
        assert!(outside.join("deep/keep").exists());
        assert_eq!(remove_tree(&tree), Removal::default(), "a missing tree is no error");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn never_removes_through_a_bind_mount() {
        if !crate::host::is_root() {
            eprintln!("skipped: needs root to bind mount");
            return;
        }
        let base = std::env::temp_dir().join(format!("fstree-bind-{}", std::process::id()));
        let source = base.join("source");
        let tree = base.join("tree");
        std::fs::create_dir_all(source.join("sub")).unwrap();
        std::fs::write(source.join("sub/precious"), b"z").unwrap();
        std::fs::create_dir_all(tree.join("rootfs/leak")).unwrap();
        nix::mount::mount(
            Some(&source),
            &tree.join("rootfs/leak"),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let removal = remove_tree(&tree);
        assert_eq!(removal.detached, vec![tree.join("rootfs/leak").display().to_string()]);
        assert!(!tree.exists());
        assert!(source.join("sub/precious").exists());

        // A mount the detach did not take (one that appeared after it): the walk does not enter it.
        std::fs::create_dir_all(tree.join("rootfs/leak")).unwrap();
        nix::mount::mount(
            Some(&source),
            &tree.join("rootfs/leak"),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let mut walked = Removal::default();
        walk_and_remove(&tree, &mut walked);
        let _ = nix::mount::umount2(&tree.join("rootfs/leak"), nix::mount::MntFlags::MNT_DETACH);
        assert!(source.join("sub/precious").exists(), "the walk reached through a mount");
        assert!(walked.kept.iter().any(|k| k.contains("on another mount")), "{walked:?}");
        std::fs::remove_dir_all(&tree).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }
}
