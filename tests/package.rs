//! The Debian package: built with packaging/build-deb from the test binary, listed, unpacked
//! into a scratch root, its binary run, and its systemd units verified.

mod common;
use common::*;

#[test]
fn deb_contains_everything_installs_and_verifies() {
    let s = Scratch::new();
    let root = env!("CARGO_MANIFEST_DIR");
    let deb = sh(&format!(
        "{root}/packaging/build-deb --fast --binary {} --out {}",
        env!("CARGO_BIN_EXE_proxborg"),
        s.path("out").display()
    ));
    let deb = deb.trim();
    let listing = sh(&format!("dpkg-deb -c {deb}"));
    for path in [
        "./usr/bin/proxborg",
        "./usr/share/proxborg/proxborg-vzdump-hook",
        "./usr/share/perl5/PVE/Storage/Custom/ProxborgPlugin.pm",
        "./usr/share/doc/proxborg/examples/proxborg.conf",
        "./usr/share/man/man1/proxborg.1.gz",
        "./usr/share/man/man1/proxborg-create.1.gz",
        "./usr/share/bash-completion/completions/proxborg",
        "./usr/share/zsh/vendor-completions/_proxborg",
        "./usr/share/fish/vendor_completions.d/proxborg.fish",
        "./lib/systemd/system/proxborg-backup@.service",
        "./lib/systemd/system/proxborg-backup@.timer",
        "./lib/systemd/system/proxborg-check.service",
        "./lib/systemd/system/proxborg-check.timer",
    ] {
        assert!(
            listing.contains(path),
            "{path} missing from the package:\n{listing}"
        );
    }
    let scratch_root = s.path("root");
    sh(&format!("dpkg -x {deb} {}", scratch_root.display()));
    let version = sh(&format!(
        "{}/usr/bin/proxborg --version",
        scratch_root.display()
    ));
    assert_eq!(
        version.trim(),
        format!("proxborg {}", env!("CARGO_PKG_VERSION"))
    );
    // The example config must pass its own check.
    let out = run(proxborg()
        .args(["config", "check"])
        .arg(scratch_root.join("usr/share/doc/proxborg/examples/proxborg.conf")));
    assert!(out.status.success(), "{}", stderr(&out));
    // systemd-analyze wants ExecStart's binary at its real path: give it one in a private
    // mount namespace (an overlay on /usr/bin), leaving the host untouched.
    let which = std::process::Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .unwrap();
    assert!(
        which.status.success(),
        "systemd-analyze missing: apt-get install systemd"
    );
    sh(&format!(
        "d={scratch}; mkdir -p {tmp}/up {tmp}/work; unshare -m bash -euc \"\
         mount -t overlay overlay -o lowerdir=/usr/bin,upperdir={tmp}/up,workdir={tmp}/work /usr/bin; \
         cp $d/usr/bin/proxborg /usr/bin/proxborg; \
         systemd-analyze verify --man=no $d/lib/systemd/system/proxborg-*\"",
        scratch = scratch_root.display(),
        tmp = s.path("ovl").display()
    ));
}
