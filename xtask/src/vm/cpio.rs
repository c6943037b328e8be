//! A cpio archive in the "newc" format, the one the kernel unpacks as an
//! initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//! Written here rather than by piping `find` into cpio(1): no extra tool,
//! and the archive is exactly the list of files rootfs.rs adds.

use std::collections::BTreeSet;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

#[derive(Clone, Default)]
pub struct Archive {
    buf: Vec<u8>,
    dirs: BTreeSet<String>,
    ino: u32,
}

impl Archive {
    /// A regular file at absolute `path`; missing parent directories first.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parents(path);
        self.entry(path, S_IFREG | mode, data);
    }

    pub fn dir(&mut self, path: &str) {
        let path = path.trim_end_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        self.parents(path);
        self.dirs.insert(path.to_owned());
        self.entry(path, S_IFDIR | 0o755, &[]);
    }

    fn parents(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8]) {
        // Names are relative to the root, as the kernel expects.
        let name = path.trim_start_matches('/');
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            u32::try_from(data.len()).expect("initramfs files are under 4 GiB"),
            0, // dev major, minor
            0,
            0, // rdev major, minor
            0,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_parents_come_first() {
        let mut a = Archive::default();
        a.file("/a/b/c", 0o644, b"hello");
        let buf = a.finish();
        assert_eq!(buf.len() % 4, 0);
        let text = String::from_utf8_lossy(&buf);
        let (a_at, ab_at, c_at) = (
            text.find("a\0").unwrap(),
            text.find("a/b\0").unwrap(),
            text.find("a/b/c\0").unwrap(),
        );
        assert!(a_at < ab_at && ab_at < c_at);
        assert!(text.contains("hello"));
        assert!(buf.ends_with(b"TRAILER!!!\0\0\0\0"));
        // Header: magic + 13 fields of 8 hex digits.
        assert_eq!(&buf[..6], b"070701");
        assert_eq!(&buf[6 + 8..6 + 16], b"000041ed"); // dir 0755
    }
}
