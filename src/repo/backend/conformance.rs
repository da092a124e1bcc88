//! The conformance suite every backend must pass: the same operations give the same results
//! and the same error kinds whatever the storage is. Public (but hidden) so the integration
//! tests run it over `ssh://` as well; it panics on the first difference.

use super::Backend;
use crate::repo::error::RepoError;

/// Runs the suite against an empty backend.
pub fn run(b: &dyn Backend) {
    basics(b);
    empty_and_many(b);
    concurrent_writers(b);
}

fn basics(b: &dyn Backend) {
    assert!(b.put("data/ab/x1", b"hello").unwrap());
    assert!(
        !b.put("data/ab/x1", b"other").unwrap(),
        "put must not overwrite"
    );
    assert_eq!(b.get("data/ab/x1").unwrap(), b"hello");
    assert_eq!(b.get_range("data/ab/x1", 1, 3).unwrap(), b"ell");
    assert_eq!(b.get_range("data/ab/x1", 5, 0).unwrap(), b"");
    assert!(b.get_range("data/ab/x1", 3, 5).unwrap_err().is_corruption());
    assert_eq!(b.size("data/ab/x1").unwrap(), 5);
    assert!(matches!(b.get("data/ab/nope"), Err(RepoError::NotFound(k)) if k == "data/ab/nope"));
    assert!(matches!(
        b.size("data/ab/nope"),
        Err(RepoError::NotFound(_))
    ));
    assert!(matches!(
        b.get_range("data/ab/nope", 0, 1),
        Err(RepoError::NotFound(_))
    ));
    assert!(matches!(
        b.delete("data/ab/nope"),
        Err(RepoError::NotFound(_))
    ));
    b.put("data/cd/x2", b"2").unwrap();
    b.put("index/i1", b"i").unwrap();
    assert_eq!(b.list("data").unwrap(), vec!["data/ab/x1", "data/cd/x2"]);
    assert_eq!(b.list("locks").unwrap(), Vec::<String>::new());
    b.replace("config", b"a").unwrap();
    b.replace("config", b"b").unwrap();
    assert_eq!(b.get("config").unwrap(), b"b");
    b.delete("data/cd/x2").unwrap();
    assert!(!b.exists("data/cd/x2").unwrap());
    assert!(b.exists("data/ab/x1").unwrap());
    // discard: delete without caring whether it was there
    b.replace("locks/l1", b"l").unwrap();
    b.discard("locks/l1").unwrap();
    assert!(!b.exists("locks/l1").unwrap());
    b.discard("locks/l1").unwrap();
    assert!(matches!(b.discard("../x"), Err(RepoError::Invalid(_))));
    for bad in ["../etc/passwd", "/etc/passwd", "data//x", ""] {
        assert!(
            matches!(b.get(bad), Err(RepoError::Invalid(_))),
            "{bad:?} must be an invalid key"
        );
    }
    // Pipelined puts: stored once settled, still never overwriting.
    for i in 0..20 {
        b.put_pipelined(&format!("data/ef/p{i:02}"), &[i as u8; 1000])
            .unwrap();
    }
    b.put_pipelined("data/ab/x1", b"again").unwrap();
    b.settle().unwrap();
    assert_eq!(b.list("data/ef").unwrap().len(), 20);
    assert_eq!(b.get("data/ef/p07").unwrap(), [7u8; 1000]);
    assert_eq!(b.get("data/ab/x1").unwrap(), b"hello");
    // A large object survives the trip intact.
    let big: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
    b.put("data/ff/big", &big).unwrap();
    assert_eq!(b.get("data/ff/big").unwrap(), big);
    assert_eq!(
        b.get_range("data/ff/big", 17 << 20, 4096).unwrap(),
        big[17 << 20..(17 << 20) + 4096]
    );
}

/// An empty object, and more keys than one S3 listing page (1000) holds.
fn empty_and_many(b: &dyn Backend) {
    assert!(b.put("index/empty", b"").unwrap());
    assert_eq!(b.get("index/empty").unwrap(), b"");
    assert_eq!(b.size("index/empty").unwrap(), 0);
    assert_eq!(b.get_range("index/empty", 0, 0).unwrap(), b"");
    for i in 0..1100 {
        b.put_pipelined(&format!("data/{:02x}/many{i:04}", i % 7), &[1])
            .unwrap();
    }
    b.settle().unwrap();
    let listed = b.list("data").unwrap();
    let many: Vec<&String> = listed.iter().filter(|k| k.contains("/many")).collect();
    assert_eq!(many.len(), 1100, "every key listed once");
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
}

/// Writers on several threads: distinct keys all land, and racing puts of one key store
/// exactly one of the (identical) objects.
fn concurrent_writers(b: &dyn Backend) {
    std::thread::scope(|s| {
        for t in 0..4u8 {
            s.spawn(move || {
                for i in 0..25 {
                    b.put(&format!("data/c{t}/k{i}"), &[t; 100]).unwrap();
                    b.put("data/cc/shared", b"same bytes").unwrap();
                }
            });
        }
    });
    for t in 0..4u8 {
        assert_eq!(b.list(&format!("data/c{t}")).unwrap().len(), 25);
        assert_eq!(b.get(&format!("data/c{t}/k24")).unwrap(), [t; 100]);
    }
    assert_eq!(b.get("data/cc/shared").unwrap(), b"same bytes");
}
