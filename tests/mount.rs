//! `proxborg mount` and `umount`: the metadata-rich test tree read back through the FUSE
//! mount (bytes, owners, modes, times, ACLs, xattrs, hard links, holes), random reads of a
//! large file, the whole-repository view, refused writes, and the ways a mount ends.
//! Needs /dev/fuse and root (mount(2)); `tests/run` installs acl and attr.

mod common;
use common::*;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `proxborg mount`; dropping it unmounts (lazily, so a failed test never leaves a
/// busy mount behind) and reaps the process.
struct Mounted {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

fn is_mount(p: &Path) -> bool {
    std::process::Command::new("mountpoint")
        .arg("-q")
        .arg(p)
        .status()
        .expect("mountpoint missing: apt-get install util-linux")
        .success()
}

impl Mounted {
    fn start(s: &Scratch, args: &[&str], mnt: &Path) -> Mounted {
        std::fs::create_dir_all(mnt).unwrap();
        let log = s.path(&format!(
            "mount-{}.log",
            mnt.file_name().unwrap().to_string_lossy()
        ));
        let child = s
            .cmd()
            .arg("mount")
            .args(args)
            .arg(mnt)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mounted {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mount(mnt) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("proxborg mount exited ({st}): {}", m.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "not mounted after 60 s: {}",
                m.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to end on its own and returns its exit code.
    fn wait(&mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "proxborg mount still running after unmount: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mount(&self.mnt) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mnt)
                .status();
        }
        if let Some(mut c) = self.child.take() {
            if c.wait_timeout_or_kill() {
                let _ = c.wait();
            }
        }
    }
}

trait WaitOrKill {
    fn wait_timeout_or_kill(&mut self) -> bool;
}

impl WaitOrKill for Child {
    /// Gives the process 10 s to end, then kills it; true when it must still be reaped.
    fn wait_timeout_or_kill(&mut self) -> bool {
        for _ in 0..200 {
            if matches!(self.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.kill();
        true
    }
}

/// `tree_dump` with directory sizes blanked: tmpfs counts entries in them, a mount cannot.
fn dump(root: &Path) -> String {
    tree_dump(root)
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split('|').collect();
            if l.starts_with('.') && f.len() >= 10 && f[1] == "d" {
                f[5] = "-";
            }
            f.join("|") + "\n"
        })
        .collect()
}

#[test]
fn the_test_tree_reads_back_through_the_mount_with_all_metadata() {
    let s = Scratch::new();
    s.init("repokey");
    let src = s.path("src");
    build_tree(&src, 0);
    // A large file over many chunks, and an owner beyond 16 and 31 bits.
    let large = noise(64 << 20, 7);
    std::fs::write(src.join("srv/large"), &large).unwrap();
    sh(&format!(
        "chown 4000000000:3000000000 '{0}/srv/large' && touch -d '1999-12-31 23:59:59.5' '{0}/srv/large'",
        src.display()
    ));
    s.ok(&["create", "t", src.to_str().unwrap()]);

    let mnt = s.path("mnt");
    let mut m = Mounted::start(&s, &["t"], &mnt);
    let (a, b) = (dump(&src), dump(&mnt));
    assert_dumps_equal(&a, &b, "the mounted tree differs from the source");
    assert_eq!(a.lines().count(), b.lines().count());
    assert!(b.contains("user:33:r-x"), "ACL missing through the mount");
    assert!(b.contains("default:user:33:r-x"), "default ACL missing");
    assert!(b.contains("user.bin=0x00ff10fe") && b.contains("security.capability="));

    // Owners, modes and times as stored; hard links share an inode.
    let meta = std::fs::metadata(mnt.join("srv/large")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4000000000, 3000000000));
    assert_eq!(meta.mtime(), 946684799);
    assert_eq!(meta.mtime_nsec(), 500_000_000);
    let small = std::fs::metadata(mnt.join("usr/bin/small")).unwrap();
    assert_eq!(small.mode() & 0o7777, 0o4755);
    let (big, link) = (
        std::fs::metadata(mnt.join("usr/bin/big")).unwrap(),
        std::fs::metadata(mnt.join("usr/bin/big-hardlink")).unwrap(),
    );
    assert_eq!(big.ino(), link.ino());
    assert_eq!(big.nlink(), 2);
    assert_ne!(big.ino(), small.ino());

    // Holes: SEEK_DATA skips the 2 GiB hole, SEEK_HOLE finds it, the bytes are right.
    let sparse = std::fs::File::open(mnt.join("srv/sparse")).unwrap();
    assert_eq!(sparse.metadata().unwrap().len(), 2 << 30);
    let hole = rustix::fs::seek(&sparse, rustix::fs::SeekFrom::Hole(0)).unwrap();
    assert!((5..1 << 20).contains(&hole), "SEEK_HOLE gave {hole}");
    let data = rustix::fs::seek(&sparse, rustix::fs::SeekFrom::Data(4096)).unwrap();
    assert!(
        ((2 << 30) - 4096..2 << 30).contains(&data),
        "SEEK_DATA gave {data}"
    );
    assert!(
        blocks(&mnt.join("srv/sparse")) < 64,
        "st_blocks counts the hole"
    );
    let mut tail = [0u8; 3];
    sparse.read_exact_at(&mut tail, (2 << 30) - 3).unwrap();
    assert_eq!(&tail, b"END");
    let mut mid = [1u8; 100];
    sparse.read_exact_at(&mut mid, 1 << 30).unwrap();
    assert_eq!(mid, [0u8; 100]);

    // Random reads of the large file, across chunk boundaries, equal the source.
    let f = std::fs::File::open(mnt.join("srv/large")).unwrap();
    let mut state = 12345u64;
    for _ in 0..300 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (state >> 16) as usize % large.len();
        let len = ((state >> 5) as usize % (3 << 20)).min(large.len() - off);
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf == large[off..off + len], "bytes differ at {off}+{len}");
    }
    drop((f, sparse));

    // Read-only: writes, new files, chmod and setfattr fail with EROFS.
    let erofs = |r: std::io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(30));
    erofs(std::fs::write(mnt.join("new"), b"x"));
    erofs(
        std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("etc/hostname"))
            .map(drop),
    );
    erofs(std::fs::remove_file(mnt.join("etc/hostname")));
    erofs(std::fs::create_dir(mnt.join("d")));
    let out = std::process::Command::new("setfattr")
        .args(["-n", "user.x", "-v", "1"])
        .arg(mnt.join("etc/hostname"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));

    // `proxborg umount` ends it: exit 0 from both, nothing left mounted.
    s.ok(&["umount", mnt.to_str().unwrap()]);
    assert_eq!(m.wait(), 0, "{}", m.stderr());
    assert!(!is_mount(&mnt));
    let again = s.run(&["umount", mnt.to_str().unwrap()]);
    assert_eq!(code(&again), 2);
    assert!(
        stderr(&again).contains("no proxborg mount"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn the_whole_repository_shows_one_directory_per_archive() {
    let s = Scratch::new();
    s.init("none");
    let src = s.path("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hosts"), b"yesterday\n").unwrap();
    s.ok(&["create", "dump-100-yesterday", src.to_str().unwrap()]);
    std::fs::write(src.join("etc/hosts"), b"today\n").unwrap();
    s.ok(&["create", "dump-100-today", src.to_str().unwrap()]);
    assert_eq!(
        s.create_stdin("stream", b"from stdin").status.code(),
        Some(0)
    );
    // A disk image (fixed 4 MiB chunks, zero chunks stored as holes): data, zeros, data.
    let mut disk = vec![0u8; 20 << 20];
    disk[..5 << 20].copy_from_slice(&noise(5 << 20, 1));
    disk[(12 << 20)..(13 << 20) + 100].copy_from_slice(&noise((1 << 20) + 100, 2));
    let img = s.path("disk.raw");
    std::fs::write(&img, &disk).unwrap();
    s.ok(&["create", "vm", img.to_str().unwrap()]);

    let mnt = s.path("all");
    let mut m = Mounted::start(&s, &[], &mnt);
    let mut names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["dump-100-today", "dump-100-yesterday", "stream", "vm"]
    );
    // Browse yesterday's /etc and copy one file out.
    let out = s.path("hosts.restored");
    std::fs::copy(mnt.join("dump-100-yesterday/etc/hosts"), &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"yesterday\n");
    assert_eq!(
        std::fs::read(mnt.join("dump-100-today/etc/hosts")).unwrap(),
        b"today\n"
    );
    // (Collected paths, not entries: a DirEntry keeps its directory open, the mount busy.)
    let stream: Vec<PathBuf> = std::fs::read_dir(mnt.join("stream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stream.len(), 1);
    assert_eq!(std::fs::read(&stream[0]).unwrap(), b"from stdin");
    assert!(std::fs::metadata(mnt.join("nonexistent")).is_err());
    // The image reads back at any offset; SEEK_DATA skips its zero chunks.
    let image: Vec<PathBuf> = std::fs::read_dir(mnt.join("vm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(image.len(), 1, "{image:?}");
    let f = std::fs::File::open(&image[0]).unwrap();
    assert_eq!(f.metadata().unwrap().len(), disk.len() as u64);
    for (off, len) in [
        (0, 100),
        ((4 << 20) - 7, 4096),
        ((5 << 20) - 1, 9 << 20),
        ((13 << 20) + 50, 7 << 20),
    ] {
        let mut buf = vec![1u8; len];
        let n = f.read_at(&mut buf, off as u64).unwrap();
        assert_eq!(&buf[..n], &disk[off..(off + n)], "image bytes at {off}");
    }
    let data = rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(8 << 20)).unwrap();
    assert_eq!(data, 12 << 20, "the zero chunk at 8 MiB is a hole");
    drop(f);
    assert_eq!(
        std::fs::write(mnt.join("dump-100-today/x"), b"")
            .unwrap_err()
            .raw_os_error(),
        Some(30)
    );

    // SIGTERM unmounts cleanly too.
    let pid = m.child.as_ref().unwrap().id();
    sh(&format!("kill -TERM {pid}"));
    assert_eq!(m.wait(), 0, "{}", m.stderr());
    assert!(!is_mount(&mnt));

    // Refusals: no such archive, a mount point that is not a directory.
    let bad = s.run(&["mount", "nope", mnt.to_str().unwrap()]);
    assert_eq!(code(&bad), 2);
    assert!(stderr(&bad).contains("nope"), "{}", stderr(&bad));
    let bad = s.run(&["mount", "dump-100-today", "/nonexistent/dir"]);
    assert_eq!(code(&bad), 2);
    assert!(!is_mount(&mnt));
}
