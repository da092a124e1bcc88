//! A real three-node Garage cluster on 127.0.0.1 for the S3 tests: replication factor 3, one
//! zone per node, its own temp dir, started here and killed on drop. The binary is the one
//! `tests/run` builds into `/var/cache/proxborg-garage` (`PROXBORG_GARAGE` names another).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const GARAGE_BIN: &str = "/var/cache/proxborg-garage/bin/garage";
pub const REGION: &str = "garage";
const RPC_SECRET: &str = "5d1c1a5e2f0b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d";

pub struct Node {
    pub conf: PathBuf,
    pub s3_port: u16,
    pub rpc_port: u16,
    child: Option<Child>,
}

pub struct Garage {
    /// Removed when the cluster is dropped.
    _dir: tempfile::TempDir,
    bin: PathBuf,
    pub nodes: Vec<Node>,
    pub key_id: String,
    pub secret: String,
}

/// A free loopback port never handed out before in this process: tests run in parallel
/// threads, and a port one cluster released (or will bind again on restart) must not go to
/// another cluster, whose node would then fail to bind while the port looks open.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Garage {
    pub fn start() -> Garage {
        let bin = std::env::var_os("PROXBORG_GARAGE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(GARAGE_BIN));
        assert!(
            bin.exists(),
            "{} missing: tests/run builds it (cargo install garage --root /var/cache/proxborg-garage)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("pxb-garage-")
            .tempdir()
            .unwrap();
        let mut nodes = Vec::new();
        for n in 0..3 {
            let d = dir.path().join(format!("n{n}"));
            std::fs::create_dir_all(&d).unwrap();
            let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
            let conf = d.join("garage.toml");
            std::fs::write(
                &conf,
                format!(
                    "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"lmdb\"\n\
                     replication_factor = 3\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\nrpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                     rpc_secret = \"{RPC_SECRET}\"\n\
                     [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\
                     [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
                    d = d.display()
                ),
            )
            .unwrap();
            nodes.push(Node {
                conf,
                s3_port,
                rpc_port,
                child: None,
            });
        }
        let mut g = Garage {
            _dir: dir,
            bin,
            nodes,
            key_id: String::new(),
            secret: String::new(),
        };
        for n in 0..3 {
            g.start_node(n);
        }
        let ids: Vec<String> = (0..3)
            .map(|n| {
                let out = g.cli(n, &["node", "id", "-q"]);
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            })
            .collect();
        for id in &ids[1..] {
            g.cli(0, &["node", "connect", id]);
        }
        for (n, id) in ids.iter().enumerate() {
            let short = id.split('@').next().unwrap();
            g.cli(
                0,
                &[
                    "layout",
                    "assign",
                    "-z",
                    &format!("zone{n}"),
                    "-c",
                    "1G",
                    short,
                ],
            );
        }
        g.cli(0, &["layout", "apply", "--version", "1"]);
        let out = g.cli(0, &["json-api", "CreateKey", r#"{"name":"proxborg-test"}"#]);
        let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        g.key_id = key["accessKeyId"].as_str().unwrap().to_string();
        g.secret = key["secretAccessKey"].as_str().unwrap().to_string();
        g.cli(0, &["key", "allow", "--create-bucket", &g.key_id.clone()]);
        // Every node must know the layout before S3 requests succeed everywhere.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = (0..3).all(|n| {
                let out = g.try_cli(n, &["status"]);
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout).matches("zone").count() >= 3
            });
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle: {}",
                g.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        g
    }

    fn start_node(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.conf.with_file_name("server.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.conf)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
        wait_for_port(node.rpc_port, "garage");
        wait_for_port(node.s3_port, "garage");
        // An open port could still be someone else's: the node must be running.
        std::thread::sleep(Duration::from_millis(200));
        let exited = self.nodes[n]
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        assert!(exited.is_none(), "garage node {n} exited: {}", self.logs());
    }

    fn try_cli(&self, n: usize, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[n].conf)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `garage` against node `n`, retrying while the cluster is still forming.
    pub fn cli(&self, n: usize, args: &[&str]) -> Output {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.try_cli(n, args);
            if out.status.success() {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The repository URL of `bucket/prefix` through node `n`'s S3 endpoint.
    pub fn url(&self, n: usize, bucket_and_prefix: &str) -> String {
        format!(
            "s3:http://127.0.0.1:{}/{bucket_and_prefix}",
            self.nodes[n].s3_port
        )
    }

    /// The S3 backend of `bucket/prefix` through node `n`, for looking into a repository.
    pub fn backend(
        &self,
        n: usize,
        bucket_and_prefix: &str,
    ) -> proxborg::repo::backend::s3::S3Backend {
        use proxborg::repo::location::{parse, Location};
        let Ok(Location::S3(url)) = parse(std::path::Path::new(&self.url(n, bucket_and_prefix)))
        else {
            panic!("not an s3 url")
        };
        proxborg::repo::backend::s3::S3Backend::new(
            url,
            proxborg::repo::backend::s3::S3Access {
                key_id: self.key_id.clone(),
                secret: zeroize::Zeroizing::new(self.secret.clone()),
                region: REGION.into(),
            },
        )
        .unwrap()
    }

    /// Waits until the repository at `bucket/prefix` holds a pack.
    pub fn wait_for_a_pack(&self, bucket_and_prefix: &str) {
        use proxborg::repo::backend::Backend;
        let b = self.backend(0, bucket_and_prefix);
        let deadline = Instant::now() + Duration::from_secs(120);
        while b.list("data").map(|l| l.is_empty()).unwrap_or(true) {
            assert!(Instant::now() < deadline, "no pack arrived");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The credentials and region for a proxborg command (through the environment).
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", REGION);
    }

    /// SIGKILL, as a crash or a pulled plug would.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut c) = self.nodes[n].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, n: usize) {
        self.kill(n);
        self.start_node(n);
    }

    pub fn logs(&self) -> String {
        (0..3)
            .map(|n| {
                let p = self.nodes[n].conf.with_file_name("server.log");
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "--- node {n}:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for n in 0..self.nodes.len() {
            self.kill(n);
        }
    }
}
