//! Replays every committed fuzz input through the library's fuzz entry points
//! (`proxborg::fuzz`), on stable, in the normal test suite: the seed corpora in
//! `fuzz/corpus/<target>/` and the crash inputs kept in `fuzz/artifacts/<target>/`. A panic in
//! any of them fails the test and names the file.
//!
//! `PROXBORG_WRITE_SEEDS=1 cargo test --test fuzz_corpus` rewrites the seed files from the
//! encoders (`proxborg::fuzz::seeds`).

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files_of(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_target_has_a_seed_corpus_and_a_fuzz_target() {
    for (name, _) in proxborg::fuzz::TARGETS {
        let corpus = fuzz_dir().join("corpus").join(name);
        assert!(
            !files_of(&corpus).is_empty(),
            "{}: no seed inputs (PROXBORG_WRITE_SEEDS=1 cargo test --test fuzz_corpus)",
            corpus.display()
        );
        let target = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let src = std::fs::read_to_string(&target)
            .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        assert!(
            src.contains(&format!("proxborg::fuzz::{name}(")),
            "{} does not call proxborg::fuzz::{name}",
            target.display()
        );
    }
}

#[test]
fn corpora_and_crash_inputs_replay_without_panic() {
    let mut replayed = 0;
    for kind in ["corpus", "artifacts"] {
        let base = fuzz_dir().join(kind);
        let Ok(rd) = std::fs::read_dir(&base) else {
            continue;
        };
        for dir in rd.filter_map(|e| e.ok().map(|e| e.path())) {
            let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !dir.is_dir() {
                continue;
            }
            for file in files_of(&dir) {
                let data = std::fs::read(&file).unwrap();
                let ran = std::panic::catch_unwind(|| proxborg::fuzz::run(name, &data));
                match ran {
                    Ok(true) => replayed += 1,
                    Ok(false) => panic!("{}: no fuzz target {name:?}", file.display()),
                    Err(_) => panic!("{}: the {name} decoder panicked", file.display()),
                }
            }
        }
    }
    assert!(
        replayed >= proxborg::fuzz::TARGETS.len(),
        "{replayed} inputs"
    );
}

/// The seeds are made by today's encoders, so a format change shows up here.
#[test]
fn seeds_are_up_to_date() {
    let write = std::env::var_os("PROXBORG_WRITE_SEEDS").is_some();
    for (target, name, bytes) in proxborg::fuzz::seeds() {
        let path = fuzz_dir()
            .join("corpus")
            .join(target)
            .join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let have = std::fs::read(&path).unwrap_or_default();
            assert!(
                have == bytes,
                "{} is not what the encoders make now: PROXBORG_WRITE_SEEDS=1 cargo test --test fuzz_corpus",
                path.display()
            );
        }
    }
}
