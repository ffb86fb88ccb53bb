//! The deployment artefacts under `deploy/`, checked with the real tools:
//!
//! - the OCI image: `deploy/build-image.sh` builds it with podman around the release binary;
//!   its filesystem, exported, holds exactly the binary, the libraries `ldd` names and the /etc
//!   files, and runs `geoprov --version`, `geoprov serve --demo` (answering /healthz over TCP)
//!   and `geoprov emit --server http://localhost:…` (host names resolve) as the image's user,
//!   under chroot on a read-only bind mount of itself (as Kubernetes' readOnlyRootFilesystem),
//!   since `podman run` is refused setrlimit in this sandbox;
//! - the kustomize overlays: `kubectl kustomize` renders each and every object validates
//!   offline against the Kubernetes schemas (`kubernetes-validate --strict`);
//! - the systemd units: `systemd-analyze verify` and its offline security score.
//!
//! A missing tool skips the test with `skipped: <why>`, and fails it under
//! `GEOPROV_REQUIRE_SERVICES=1` (`.ci/run` installs them all and builds the release binary).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::geoprov_bin;

/// The user the image runs as (`deploy/image/stage-rootfs.sh`).
const IMAGE_UID: u32 = 65532;
/// Images larger than this fail the issue's size budget (60 MB).
const IMAGE_MAX_BYTES: u64 = 60_000_000;
/// The metric the worker autoscaler reads; the image's /metrics must export it.
const QUEUE_DEPTH_METRIC: &str = "geoprov_queue_depth";
/// The dataset the demo pipeline publishes (README "Quick start").
const DEMO_PUBLISHED: &str = "ef9a8eca-f983-44f4-8dfd-2ccc8a745f35";
/// geoprov's worst-case SIGTERM shutdown in seconds, as the manifests and units explain it
/// (pool wait + connect, one broker call, the final checkpoint's and nodes' pool waits, AMQP
/// close); their grace periods must exceed it.
const SHUTDOWN_BOUND_SECS: u64 = 132;
/// Kubernetes versions whose schemas the rendered overlays must satisfy.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Skip (print and return) or fail, per `GEOPROV_REQUIRE_SERVICES`.
fn missing(what: &str) {
    crate::support::require_or_skip(what);
}

/// `name` on PATH, or the file an environment variable names.
fn find_tool(name: &str, env_var: Option<&str>) -> Option<PathBuf> {
    if let Some(path) = env_var.and_then(std::env::var_os) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Run to completion; panic with the command's output unless it exits 0.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET over plain HTTP/1.0 (no chunked answers): status and body.
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The libraries `ldd` resolves for `bin`, as absolute paths (none for a static binary).
fn ldd_libraries(bin: &Path) -> BTreeSet<String> {
    let out = Command::new("ldd").arg(bin).output().expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.contains("linux-vdso") {
            continue;
        }
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest,
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default();
        if path.starts_with('/') {
            libs.insert(path.to_owned());
        }
    }
    libs
}

/// Every non-directory under `root`, as `/relative/path`; panics on a symlink or a special file.
fn files_under(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let rel = format!(
                "/{}",
                path.strip_prefix(root).expect("under root").display()
            );
            if meta.is_dir() {
                dirs.push(path);
            } else {
                assert!(meta.is_file(), "{rel} in the image is not a regular file");
                found.insert(rel);
            }
        }
    }
    found
}

/// A podman whose storage and state live in `dir` (vfs, cgroupfs, file events: what works in
/// this sandbox), leaving the machine's own storage alone.
struct Podman {
    bin: PathBuf,
    storage_conf: PathBuf,
    containers_conf: PathBuf,
}

impl Podman {
    fn new(bin: PathBuf, dir: &Path) -> Podman {
        let storage_conf = dir.join("storage.conf");
        let containers_conf = dir.join("containers.conf");
        std::fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        )
        .expect("storage.conf");
        std::fs::write(
            &containers_conf,
            format!(
                "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 events_logfile_path = \"{0}/events.log\"\ntmp_dir = \"{0}/libpod\"\n",
                dir.display()
            ),
        )
        .expect("containers.conf");
        Podman {
            bin,
            storage_conf,
            containers_conf,
        }
    }

    /// Set the configuration variables on any command that runs podman.
    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .env("CONTAINERS_CONF", &self.containers_conf)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        self.env(&mut cmd).args(args);
        run_ok(&mut cmd)
    }
}

/// A directory of the host mounted into the image (its mount point must exist there).
struct Bind<'a> {
    host: &'a Path,
    image: &'a str,
    writable: bool,
}

/// The image's `/data` volume, writable.
fn data_volume(host: &Path) -> Bind<'_> {
    Bind {
        host,
        image: "/data",
        writable: true,
    }
}

/// A command that runs `args` as the image would: as the image's user, with the image's
/// environment only (plus `extra_env`), under chroot on a private read-only bind mount of
/// `rootfs` (Kubernetes' readOnlyRootFilesystem), with `binds` mounted into it (volumes) and a
/// tmpfs on /tmp (an emptyDir). The mounts live in a mount namespace of the command's own.
fn in_image(image: &Image, binds: &[Bind], extra_env: &[(&str, &str)], args: &[&str]) -> Command {
    let script = format!(
        "set -e\nr=$1; shift\nmount --bind \"$r\" \"$r\"\nmount -o remount,bind,ro \"$r\"\n\
         while [ \"$1\" != -- ]; do\n  mount --bind \"$1\" \"$r$2\"\n  \
         [ \"$3\" = rw ] || mount -o remount,bind,ro \"$r$2\"\n  shift 3\ndone\nshift\n\
         mount -t tmpfs -o mode=1777 tmpfs \"$r/tmp\"\n\
         exec chroot --userspec={IMAGE_UID}:{IMAGE_UID} \"$r\" \"$@\""
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(script)
        .arg("sh")
        .arg(&image.rootfs);
    for bind in binds {
        cmd.arg(bind.host)
            .arg(bind.image)
            .arg(if bind.writable { "rw" } else { "ro" });
    }
    cmd.arg("--")
        .args(args)
        .env_clear()
        .envs(image.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra_env.iter().copied())
        // The host's sh, mount and chroot need a PATH; geoprov ignores it.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    cmd
}

/// `geoprov serve --demo` in the image on a port the system chooses (`--listen 127.0.0.1:0`),
/// read back from the `--ready-file` it writes into the data volume.
fn serve_in_image(image: &Image, data: &Path, log: &Path) -> (Running, u16) {
    let _ = std::fs::remove_file(data.join("serve.ready"));
    let mut serve = Running::spawn(
        in_image(
            image,
            &[data_volume(data)],
            &[],
            &[
                "/geoprov",
                "serve",
                "--demo",
                "--listen",
                "127.0.0.1:0",
                "--ready-file",
                "/data/serve.ready",
            ],
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file")),
    );
    let port = crate::support::wait_ready(
        &mut serve.0,
        &data.join("serve.ready"),
        log,
        Duration::from_secs(30),
    );
    let up = wait_for(Duration::from_secs(30), || {
        matches!(http_get(port, "/healthz"), Ok((200, _))).then_some(())
    });
    assert!(
        up.is_some(),
        "serve in the image did not answer /healthz; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    (serve, port)
}

/// A child process that is killed when dropped (when an assertion fails, say).
struct Running(Child);

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        Running(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
        )
    }

    /// SIGTERM, then its exit code (None if it did not exit within 30 s, or by a signal).
    fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let status = wait_for(Duration::from_secs(30), || self.0.try_wait().ok().flatten());
        status.and_then(|s| s.code())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The release binary the image is built around: `GEOPROV_RELEASE_BIN`, or `release/geoprov`
/// beside the test build's `debug/geoprov`.
fn release_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GEOPROV_RELEASE_BIN") {
        return PathBuf::from(path);
    }
    let debug = Path::new(geoprov_bin());
    debug
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("release").join("geoprov"))
        .unwrap_or_else(|| repo().join("target/release/geoprov"))
}

fn cargo_license() -> String {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("license = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("license in Cargo.toml")
}

/// The image built by `deploy/build-image.sh`, exported and unpacked in a temporary folder.
struct Image {
    /// Holds the podman storage, the export and the test's volumes.
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    /// The image's `Config.Env`, as a runtime would set it.
    env: Vec<(String, String)>,
    version: String,
}

/// Build the image with podman around the release binary, check its configuration, export
/// its filesystem from a container that is never started and check that it holds exactly the
/// binary, the libraries `ldd` names and the /etc files. `None` (skipped) without the tools.
fn build_and_export() -> Option<Image> {
    let Some(podman) = find_tool("podman", None) else {
        missing("podman is not installed (apt-get install podman)");
        return None;
    };
    for tool in ["unshare", "chroot", "mount", "tar", "ldd"] {
        if find_tool(tool, None).is_none() {
            missing(&format!("{tool} is not installed"));
            return None;
        }
    }
    if !is_root() {
        missing("the image tests need root (chroot and bind mounts)");
        return None;
    }
    let bin = release_binary();
    if !bin.is_file() {
        missing(&format!(
            "no release binary at {}: run cargo build --release first (.ci/run does)",
            bin.display()
        ));
        return None;
    }
    let version = stdout_of(&run_ok(Command::new(&bin).arg("--version")));
    let version = version
        .trim()
        .strip_prefix("geoprov ")
        .expect("version")
        .to_owned();

    let dir = tempfile::tempdir().expect("tempdir");
    let podman = Podman::new(podman, dir.path());
    let tag = format!(
        "localhost/geoprov:deploy-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let source = "https://example.invalid/geoprov.git";
    let mut build = Command::new(repo().join("deploy/build-image.sh"));
    podman
        .env(&mut build)
        .arg(&tag)
        .env("GEOPROV_BIN", &bin)
        .env("CONTAINER_ENGINE", "podman")
        .env("GEOPROV_IMAGE_SOURCE", source);
    let built = run_ok(&mut build);
    assert_eq!(
        stdout_of(&built).trim(),
        tag,
        "build-image.sh prints the tag"
    );

    // The image's configuration.
    let inspect: Value =
        serde_json::from_slice(&podman.run(&["image", "inspect", &tag]).stdout).expect("json");
    let config = &inspect[0]["Config"];
    let user = config["User"].as_str().unwrap_or_default();
    assert_eq!(user, format!("{IMAGE_UID}:{IMAGE_UID}"), "configured user");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(!["", "0", "root"].contains(&uid), "the image runs as root");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/geoprov"]));
    assert!(config["ExposedPorts"].get("8700/tcp").is_some(), "{config}");
    assert!(config["Volumes"].get("/data").is_some(), "{config}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version.as_str());
    assert_eq!(labels["org.opencontainers.image.source"], source);
    assert_eq!(labels["org.opencontainers.image.licenses"], cargo_license());
    assert!(labels["org.opencontainers.image.revision"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    let size = inspect[0]["Size"].as_u64().expect("image size");
    assert!(size < IMAGE_MAX_BYTES, "image is {size} bytes");
    eprintln!(
        "image {tag}: {size} bytes, around a {}-byte binary",
        std::fs::metadata(&bin).expect("binary").len()
    );
    let env: Vec<(String, String)> = config["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(|v| v.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(
        env.contains(&("GEOPROV_DATA_DIR".into(), "/data".into())),
        "{env:?}"
    );

    // Its filesystem, exported from a container that is never started.
    let container = stdout_of(&podman.run(&["create", &tag])).trim().to_owned();
    let tar = dir.path().join("rootfs.tar");
    podman.run(&[
        "export",
        "--output",
        tar.to_str().expect("utf-8"),
        &container,
    ]);
    podman.run(&["rm", &container]);
    podman.run(&["rmi", "--force", &tag]);
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("rootfs dir");
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&rootfs),
    );

    // Exactly the binary, its libraries and the /etc files: no shell, no package manager.
    let mut expected: BTreeSet<String> = [
        "/geoprov",
        "/etc/passwd",
        "/etc/group",
        "/etc/nsswitch.conf",
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    expected.extend(ldd_libraries(&bin));
    assert_eq!(files_under(&rootfs), expected, "files in the image");
    assert!(!rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin/sh").exists());
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("geoprov:x:{IMAGE_UID}:{IMAGE_UID}:"))),
        "{passwd}"
    );
    let data_meta = std::fs::metadata(rootfs.join("data")).expect("/data");
    assert_eq!((data_meta.uid(), data_meta.gid()), (IMAGE_UID, IMAGE_UID));
    let tmp_mode = std::fs::metadata(rootfs.join("tmp"))
        .expect("/tmp")
        .permissions()
        .mode();
    assert_eq!(tmp_mode & 0o7777, 0o1777, "/tmp mode");

    // What a container runtime adds to the image: /etc/hosts.
    std::fs::write(
        rootfs.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )
    .expect("hosts");
    Some(Image {
        dir,
        rootfs,
        env,
        version,
    })
}

/// A fresh directory owned by the image's user, for a volume.
fn volume_dir(image: &Image, name: &str) -> PathBuf {
    let dir = image.dir.path().join(name);
    std::fs::create_dir(&dir).expect("volume dir");
    std::os::unix::fs::chown(&dir, Some(IMAGE_UID), Some(IMAGE_UID)).expect("chown volume");
    dir
}

#[test]
fn image_builds_with_podman_and_serves_the_demo_from_its_exported_filesystem() {
    let Some(image) = build_and_export() else {
        return;
    };
    let data = volume_dir(&image, "data");
    let shown = run_ok(&mut in_image(
        &image,
        &[data_volume(&data)],
        &[],
        &["/geoprov", "--version"],
    ));
    assert_eq!(
        stdout_of(&shown).trim(),
        format!("geoprov {}", image.version)
    );

    let log = image.dir.path().join("serve.log");
    let (mut serve, port) = serve_in_image(&image, &data, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let lineage = format!("/v1/datasets/{DEMO_PUBLISHED}/lineage?direction=upstream");
    let edges = wait_for(Duration::from_secs(30), || {
        let (status, body) = http_get(port, &lineage).ok()?;
        let graph: Value = serde_json::from_str(&body).ok()?;
        let n = graph["edges"].as_array().map_or(0, Vec::len);
        (status == 200 && n > 0).then_some(n)
    });
    assert!(
        edges.is_some(),
        "the demo's lineage never appeared; log:\n{}",
        log_text()
    );
    let (status, metrics) = http_get(port, "/metrics").expect("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.lines().any(|l| l.starts_with(QUEUE_DEPTH_METRIC)),
        "no {QUEUE_DEPTH_METRIC} in /metrics:\n{metrics}"
    );

    // Host names resolve in the image (glibc's files backend, nsswitch.conf, /etc/hosts).
    let dataset = uuid::Uuid::new_v4();
    std::fs::write(
        data.join("one.json"),
        format!(
            r#"{{"dataset_uuid": "{dataset}", "operation": "publish", "processor_id": "deploy-test"}}"#
        ),
    )
    .expect("event file");
    let server = format!("http://localhost:{port}");
    let emitted = run_ok(&mut in_image(
        &image,
        &[data_volume(&data)],
        &[],
        &["/geoprov", "emit", "--server", &server, "/data/one.json"],
    ));
    let event_id = stdout_of(&emitted).trim().to_owned();
    assert_eq!(event_id.len(), 64, "emit printed {event_id:?}");
    let stored = wait_for(Duration::from_secs(30), || {
        matches!(
            http_get(port, &format!("/v1/events/{event_id}")),
            Ok((200, _))
        )
        .then_some(())
    });
    assert!(
        stored.is_some(),
        "the emitted event was not stored; log:\n{}",
        log_text()
    );

    assert_eq!(
        serve.terminate(),
        Some(0),
        "serve's exit; log:\n{}",
        log_text()
    );
    assert!(log_text().contains("Stopped cleanly."), "{}", log_text());
    for file in ["lineage.db", "log-signing.key"] {
        let meta = std::fs::metadata(data.join(file)).expect(file);
        assert_eq!(meta.uid(), IMAGE_UID, "{file} is not the image user's");
    }
    let key_mode = std::fs::metadata(data.join("log-signing.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
}

/// The scaled overlay's processes in the image: `migrate`, then a `worker` on Redis Streams and
/// PostgreSQL with no writable volume at all (only the signing key mounted read-only, as the
/// Secret is), fed by `emit`; the worker's checkpoints verify with the key's verifier key.
#[test]
fn image_runs_migrate_and_a_worker_with_a_read_only_root_and_a_mounted_key() {
    let Some(redis) = crate::redis_support::redis_url() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(schema) = runtime.block_on(crate::support::pg::TestSchema::create()) else {
        return;
    };
    let Some(image) = build_and_export() else {
        return;
    };
    let store = schema.url();
    let queue = crate::redis_support::unique("deploy");
    let _cleanup = crate::redis_support::KeyCleanup {
        url: redis.clone(),
        patterns: vec![format!("geoprov:{queue}*")],
    };

    // The key, made outside with `geoprov keygen`, mounted where the Secret is.
    let keys = volume_dir(&image, "keys");
    let key_file = keys.join("log-signing.key");
    let made = run_ok(
        Command::new(geoprov_bin())
            .args(["keygen", "--name", "geoprov/deploy-test", "--log-key"])
            .arg(&key_file),
    );
    let verifier = stdout_of(&made).trim().to_owned();
    std::os::unix::fs::chown(&key_file, Some(IMAGE_UID), Some(IMAGE_UID)).expect("chown key");
    std::fs::create_dir(image.rootfs.join("etc/geoprov")).expect("mount point");
    let key_mount = [Bind {
        host: &keys,
        image: "/etc/geoprov",
        writable: false,
    }];
    let settings = [
        ("GEOPROV_BROKER", redis.as_str()),
        ("GEOPROV_QUEUE", queue.as_str()),
        ("GEOPROV_STORE", store.as_str()),
        ("GEOPROV_LOG_KEY", "/etc/geoprov/log-signing.key"),
        ("GEOPROV_CHECKPOINT_INTERVAL", "1s"),
    ];

    let migrated = run_ok(&mut in_image(
        &image,
        &[],
        &settings,
        &["/geoprov", "migrate"],
    ));
    assert!(
        stdout_of(&migrated).contains("schema version"),
        "{}",
        stdout_of(&migrated)
    );

    let log = image.dir.path().join("worker.log");
    let mut worker = Running::spawn(
        in_image(&image, &key_mount, &settings, &["/geoprov", "worker"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file")),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // A three-step lineage a -> b -> c, enqueued by `emit` in the image.
    let [a, b, c] = [(); 3].map(|()| uuid::Uuid::new_v4());
    let events = format!(
        "{{\"dataset_uuid\": \"{b}\", \"operation\": \"reproject\", \"processor_id\": \"deploy-test\", \"inputs\": [\"{a}\"]}}\n\
         {{\"dataset_uuid\": \"{c}\", \"operation\": \"tile\", \"processor_id\": \"deploy-test\", \"inputs\": [\"{b}\"]}}\n"
    );
    let mut emit = in_image(&image, &[], &settings, &["/geoprov", "emit"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn emit in the image");
    emit.stdin
        .take()
        .expect("stdin")
        .write_all(events.as_bytes())
        .expect("write events");
    let emitted = emit.wait_with_output().expect("emit");
    assert!(
        emitted.status.success(),
        "emit in the image: {}",
        String::from_utf8_lossy(&emitted.stderr)
    );

    let upstream = || {
        let out = Command::new(geoprov_bin())
            .args(["lineage", &c.to_string(), "--upstream", "--format", "json"])
            .args(["--store", &store])
            .output()
            .ok()?;
        let graph: Value = serde_json::from_slice(&out.stdout).ok()?;
        let n = graph["edges"].as_array().map_or(0, Vec::len);
        (n == 2).then_some(())
    };
    assert!(
        wait_for(Duration::from_secs(30), upstream).is_some(),
        "the worker in the image did not store the lineage; log:\n{}",
        log_text()
    );
    // A checkpoint after the commit (interval 1 s), then a clean stop with a final one.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        worker.terminate(),
        Some(0),
        "worker's exit; log:\n{}",
        log_text()
    );
    assert!(log_text().contains("Stopped cleanly."), "{}", log_text());
    assert!(
        !log_text().contains("Read-only file system"),
        "the worker wrote to its root filesystem:\n{}",
        log_text()
    );
    run_ok(
        Command::new(geoprov_bin())
            .args(["verify", "--key", &verifier, "--store", &store])
            .env("GEOPROV_DATA_DIR", image.dir.path().join("no-data")),
    );
}

#[test]
fn dockerfile_and_local_containerfile_share_the_runtime_half() {
    let block = |path: &str| {
        let text = std::fs::read_to_string(repo().join(path)).expect(path);
        let start = text.find("# --- runtime:").expect("runtime marker");
        let end = text.find("# --- end of runtime ---").expect("end marker");
        text[start..end].to_owned()
    };
    assert_eq!(
        block("deploy/Dockerfile"),
        block("deploy/image/Containerfile")
    );
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains(&format!("ARG VERSION={}\n", env!("CARGO_PKG_VERSION"))),
        "deploy/Dockerfile's default VERSION is not the crate's"
    );
    assert!(dockerfile.contains(&format!("ARG LICENSES={}\n", cargo_license())));
}

/// YAML documents as JSON, through the validator's Python (PyYAML is its dependency).
fn yaml_docs(python: &Path, yaml: &Path) -> Vec<Value> {
    let out = run_ok(
        Command::new(python)
            .args([
                "-c",
                "import json, sys, yaml\n\
                 json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
            ])
            .arg(yaml),
    );
    serde_json::from_slice(&out.stdout).expect("documents as JSON")
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {}", workload["metadata"]["name"]))
}

fn env_secret(container: &Value, var: &str) -> Option<(String, String)> {
    let env = container["env"].as_array()?;
    let entry = env.iter().find(|e| e["name"] == var)?;
    let secret = &entry["valueFrom"]["secretKeyRef"];
    Some((
        secret["name"].as_str()?.to_owned(),
        secret["key"].as_str()?.to_owned(),
    ))
}

fn env_value<'a>(container: &'a Value, var: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == var)?["value"]
        .as_str()
}

/// What every pod of both overlays must have: non-root, read-only root filesystem, no
/// privilege escalation, measured memory requests and limits, this release's image, and a
/// grace period above geoprov's bounded shutdown.
fn check_pod_template(workload: &Value) {
    let name = workload["metadata"]["name"].as_str().unwrap_or_default();
    let pod = &workload["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    assert!(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .is_some_and(|u| u != 0),
        "{name}"
    );
    if workload["kind"] != "Job" {
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        assert!(
            grace > SHUTDOWN_BOUND_SECS,
            "{name}: grace period {grace} s"
        );
    }
    let image = format!("geoprov:{}", env!("CARGO_PKG_VERSION"));
    let all = pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten();
    for c in all {
        let cname = c["name"].as_str().unwrap_or_default();
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}/{cname}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}/{cname}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}/{cname}"
        );
        for side in ["requests", "limits"] {
            assert!(
                c["resources"][side]["memory"].is_string(),
                "{name}/{cname}: no memory {side}"
            );
        }
        assert_eq!(c["image"], image.as_str(), "{name}/{cname}");
    }
}

fn check_embedded(objects: &[Value]) {
    let serve = object(objects, "Deployment", "geoprov-serve");
    check_pod_template(serve);
    assert_eq!(serve["spec"]["replicas"], 1);
    assert_eq!(serve["spec"]["strategy"]["type"], "Recreate");
    let c = container(serve, "geoprov");
    assert_eq!(c["args"], serde_json::json!(["serve"]));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
    }
    assert_eq!(env_value(c, "GEOPROV_DATA_DIR"), Some("/data"));
    assert_eq!(
        env_secret(c, "GEOPROV_TOKEN"),
        Some(("geoprov-api".into(), "token".into()))
    );
    let pvc = object(objects, "PersistentVolumeClaim", "geoprov-data");
    assert_eq!(
        pvc["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"])
    );
    let volumes = serve["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    let data = volumes
        .iter()
        .find(|v| v["persistentVolumeClaim"]["claimName"] == "geoprov-data")
        .expect("the claim as a volume");
    assert!(c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .any(|m| m["name"] == data["name"] && m["mountPath"] == "/data"));
    object(objects, "Service", "geoprov");
    assert!(!objects
        .iter()
        .any(|o| o["metadata"]["name"] == "geoprov-worker"));
}

fn check_scaled(objects: &[Value]) {
    let backends = |key: &str| Some(("geoprov-backends".to_owned(), key.to_owned()));
    let serve = object(objects, "Deployment", "geoprov-serve");
    check_pod_template(serve);
    assert!(serve["spec"]["replicas"].as_u64().is_some_and(|r| r >= 2));
    let c = container(serve, "geoprov");
    assert_eq!(c["args"], serde_json::json!(["serve", "--no-workers"]));
    assert_eq!(env_secret(c, "GEOPROV_BROKER"), backends("broker-url"));
    assert_eq!(env_secret(c, "GEOPROV_STORE"), backends("store-url"));
    assert!(env_secret(c, "GEOPROV_TOKEN").is_some());

    let worker = object(objects, "Deployment", "geoprov-worker");
    check_pod_template(worker);
    let w = container(worker, "geoprov");
    assert_eq!(w["args"], serde_json::json!(["worker"]));
    assert_eq!(env_secret(w, "GEOPROV_BROKER"), backends("broker-url"));
    assert_eq!(env_secret(w, "GEOPROV_STORE"), backends("store-url"));
    // The signing key: a file from a Secret volume.
    let key_path = env_value(w, "GEOPROV_LOG_KEY").expect("GEOPROV_LOG_KEY");
    let mount = w["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| key_path.starts_with(m["mountPath"].as_str().unwrap_or("-")))
        .expect("the key's mount");
    let volume = worker["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the key's volume");
    assert_eq!(volume["secret"]["secretName"], "geoprov-log-key");

    // Both wait for the schema before they start.
    for workload in [serve, worker] {
        let init = workload["spec"]["template"]["spec"]["initContainers"]
            .as_array()
            .expect("initContainers");
        assert!(init.iter().any(|c| c["name"] == "wait-for-schema"
            && env_secret(c, "GEOPROV_STORE") == backends("store-url")));
    }
    let migrate = object(objects, "Job", "geoprov-migrate");
    check_pod_template(migrate);
    let m = container(migrate, "migrate");
    assert_eq!(m["args"], serde_json::json!(["migrate"]));
    assert_eq!(
        env_secret(m, "GEOPROV_STORE"),
        backends("migrate-store-url")
    );

    let hpa = object(objects, "HorizontalPodAutoscaler", "geoprov-worker");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "geoprov-worker");
    let metric = &hpa["spec"]["metrics"][0];
    assert_eq!(metric["type"], "External");
    assert_eq!(metric["external"]["metric"]["name"], QUEUE_DEPTH_METRIC);
    for name in ["geoprov-serve", "geoprov-worker"] {
        object(objects, "PodDisruptionBudget", name);
    }
    object(objects, "Service", "geoprov");
}

#[test]
fn kustomize_overlays_render_and_validate_against_the_kubernetes_schemas() {
    let Some(kubectl) = find_tool("kubectl", Some("GEOPROV_KUBECTL")) else {
        return missing("kubectl is not installed (see .ci/run)");
    };
    let venv = std::env::var_os("GEOPROV_DEPLOY_VENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/geoprov-deploy-venv")
        },
        PathBuf::from,
    );
    let validator = find_tool("kubernetes-validate", Some("GEOPROV_KUBERNETES_VALIDATE"))
        .or_else(|| Some(venv.join("bin/kubernetes-validate")).filter(|p| p.is_file()));
    let Some(validator) = validator else {
        return missing("kubernetes-validate is not installed (pip install kubernetes-validate)");
    };
    let python = validator
        .parent()
        .map(|d| d.join("python"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"));
    let tmp = tempfile::tempdir().expect("tempdir");

    // The validator rejects what it should (a misspelled field), so a pass means something.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 1\n  \
         selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    \
         spec: {containers: [{name: c, image: i}]}\n",
    )
    .expect("bad.yaml");
    let refused = Command::new(&validator)
        .args(["--strict", "-k", KUBERNETES_VERSIONS[0]])
        .arg(&bad)
        .output()
        .expect("run kubernetes-validate");
    assert!(
        !refused.status.success(),
        "kubernetes-validate accepted spec.replica"
    );

    for overlay in ["embedded", "scaled"] {
        let dir = repo().join("deploy/kubernetes/overlays").join(overlay);
        let rendered = run_ok(Command::new(&kubectl).arg("kustomize").arg(&dir));
        let file = tmp.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &rendered.stdout).expect("rendered yaml");
        let objects = yaml_docs(&python, &file);
        assert!(!objects.is_empty(), "{overlay} rendered nothing");
        for version in KUBERNETES_VERSIONS {
            let out = run_ok(
                Command::new(&validator)
                    .args(["--strict", "-k", version])
                    .arg(&file),
            );
            let report = stdout_of(&out) + &String::from_utf8_lossy(&out.stderr);
            let passed = report.matches(" passed for resource ").count();
            assert_eq!(
                passed,
                objects.len(),
                "{overlay} against {version}: not every object passed:\n{report}"
            );
            assert!(
                !report.contains("WARN") && !report.contains("ERROR"),
                "{report}"
            );
        }
        match overlay {
            "embedded" => check_embedded(&objects),
            _ => check_scaled(&objects),
        }
    }

    // The Prometheus adapter rule serves the metric the autoscaler asks for.
    let rules = yaml_docs(
        &python,
        &repo().join("deploy/kubernetes/monitoring/prometheus-adapter-values.yaml"),
    );
    assert_eq!(
        rules[0]["rules"]["external"][0]["name"]["as"],
        QUEUE_DEPTH_METRIC
    );
}

#[test]
fn systemd_units_pass_systemd_analyze() {
    let Some(analyze) = find_tool("systemd-analyze", None) else {
        return missing("systemd-analyze is not installed (apt-get install systemd)");
    };
    let units = ["geoprov-serve.service", "geoprov-worker@.service"];
    let texts: Vec<String> = units
        .iter()
        .map(|u| std::fs::read_to_string(repo().join("deploy/systemd").join(u)).expect(u))
        .collect();
    for (unit, text) in units.iter().zip(&texts) {
        for line in [
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "Restart=on-failure",
        ] {
            assert!(text.lines().any(|l| l == line), "{unit} lacks {line}");
        }
        for key in ["StateDirectory=", "EnvironmentFile="] {
            assert!(
                text.lines().any(|l| l.starts_with(key)),
                "{unit} lacks {key}"
            );
        }
        let stop = text
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .and_then(|v| v.trim_end_matches('s').parse::<u64>().ok())
            .expect("TimeoutStopSec in seconds");
        assert!(stop > SHUTDOWN_BOUND_SECS, "{unit}: TimeoutStopSec={stop}");
    }
    assert!(texts[1].contains("EnvironmentFile=/etc/geoprov/worker-%i.env"));

    // An image of the target system: the distribution's units, ours in /etc, and geoprov where
    // the units run it (the test build's binary, hard-linked).
    let tmp = tempfile::Builder::new()
        .prefix("deploy-systemd")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir");
    let root = tmp.path();
    let system = root.join("etc/systemd/system");
    std::fs::create_dir_all(&system).expect("etc");
    std::fs::create_dir_all(root.join("usr/local/bin")).expect("bin");
    std::fs::create_dir_all(root.join("usr/lib/systemd")).expect("lib");
    let vendor = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|d| Path::new(d).is_dir())
        .expect("the distribution's unit directory");
    run_ok(
        Command::new("cp")
            .args(["-a", vendor])
            .arg(root.join("usr/lib/systemd/system")),
    );
    let installed = root.join("usr/local/bin/geoprov");
    if std::fs::hard_link(geoprov_bin(), &installed).is_err() {
        std::fs::copy(geoprov_bin(), &installed).expect("copy geoprov");
    }
    for unit in units {
        std::fs::copy(repo().join("deploy/systemd").join(unit), system.join(unit)).expect(unit);
    }
    // A unit with a typo, to show that the check below catches one.
    std::fs::write(
        system.join("geoprov-broken.service"),
        "[Service]\nExecStart=/usr/local/bin/geoprov serve\nProtectSystem=strikt\n",
    )
    .expect("broken unit");

    let verify = |unit: &str| {
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(format!("/etc/systemd/system/{unit}"))
            .output()
            .expect("run systemd-analyze verify");
        let text = stdout_of(&out) + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (_, complaint) = verify("geoprov-broken.service");
    assert!(
        complaint.contains("geoprov-broken.service") && complaint.contains("strikt"),
        "systemd-analyze verify let ProtectSystem=strikt through: {complaint}"
    );
    for unit in units {
        let (ok, text) = verify(unit);
        let ours: Vec<&str> = text.lines().filter(|l| l.contains("geoprov")).collect();
        assert!(
            ok && ours.is_empty(),
            "systemd-analyze verify {unit}:\n{text}"
        );
    }
    // The hardening, scored offline: exposure at most 2.0 of 10 ("OK").
    for unit in ["geoprov-serve.service", "geoprov-worker@lineage.service"] {
        let out = Command::new(&analyze)
            .args(["security", "--offline=yes", "--threshold=20"])
            .arg(format!("--root={}", root.display()))
            .arg(unit)
            .output()
            .expect("run systemd-analyze security");
        assert!(
            out.status.success(),
            "{unit} is exposed more than 2.0:\n{}",
            stdout_of(&out)
        );
    }
}
