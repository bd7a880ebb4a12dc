//! `cargo xtask image`: the container image users run, built without a registry or a Docker
//! engine. A statically linked release binary (`-C target-feature=+crt-static`, so the image
//! needs no libc) and the build machine's CA bundle are staged as the build context of
//! `Containerfile` (FROM scratch), which `buildah` builds as root with the vfs storage driver.
//! The result is then checked: its config (entrypoint, user, labels), and that the binary in
//! its root filesystem runs there alone (chrooted, as uid 65532). The image is also written as
//! an OCI archive (`target/omniscale-image.tar`) for `skopeo copy` / `crane push` to a registry.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The image name the manifests use (`manifests/03-deployment.yaml`, `manifests/Kustomization`).
pub const REPOSITORY: &str = "ghcr.io/omniscale/omniscale";
const TARGET: &str = "x86_64-unknown-linux-gnu";
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

type Result<T> = std::result::Result<T, String>;

fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn buildah(args: &[&str]) -> Result<String> {
    run(Command::new("buildah").arg("--storage-driver").arg("vfs").args(args))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

/// Builds, checks and archives the image; returns its tag.
pub fn image(root: &Path) -> Result<String> {
    let tag = format!("{REPOSITORY}:{}", env!("CARGO_PKG_VERSION"));
    if Command::new("buildah").arg("--version").output().is_err() {
        return Err("buildah is not installed (Debian: apt-get install buildah)".into());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building a static release binary (target {TARGET})");
    // With --target, RUSTFLAGS reach only the target's code, not build scripts or proc macros
    // (which cannot be static).
    let status = Command::new(cargo)
        .current_dir(root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--release", "--locked", "-p", "omniscale-operator", "--bin", "omniscale", "--target", TARGET])
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build failed".into());
    }
    let target = target_dir(root);
    let binary = target.join(TARGET).join("release").join("omniscale");
    let context = target.join("image-context");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context).map_err(|e| format!("{}: {e}", context.display()))?;
    let staged = context.join("omniscale");
    std::fs::copy(&binary, &staged).map_err(|e| format!("{}: {e}", binary.display()))?;
    // Symbols are three quarters of the binary; panics still name their file and line.
    if let Err(e) = run(Command::new("strip").arg("--strip-all").arg(&staged)) {
        eprintln!("warning: the binary is not stripped ({e})");
    }
    std::fs::copy(CA_BUNDLE, context.join("ca-certificates.crt"))
        .map_err(|e| format!("{CA_BUNDLE}: {e} (Debian: apt-get install ca-certificates)"))?;
    let containerfile = root.join("Containerfile");
    eprintln!("building {tag}");
    buildah(&[
        "build",
        "--layers=false",
        "-f",
        &containerfile.to_string_lossy(),
        "-t",
        &tag,
        &context.to_string_lossy(),
    ])?;
    check(&tag)?;
    let archive = target.join("omniscale-image.tar");
    let _ = std::fs::remove_file(&archive);
    buildah(&["push", &tag, &format!("oci-archive:{}:{tag}", archive.display())])?;
    eprintln!(
        "wrote {} (push it with `skopeo copy oci-archive:{} docker://REGISTRY/omniscale:TAG`)",
        archive.display(),
        archive.display()
    );
    Ok(tag)
}

/// The checks a release must pass: the config, and the binary running alone in the rootfs.
fn check(tag: &str) -> Result<()> {
    // The whole inspection (buildah before 1.30 has no `json` template function).
    let inspect = buildah(&["inspect", "--type", "image", tag])?;
    let config: ImageConfig = parse_config(&inspect)?;
    config.validate()?;
    let container = buildah(&["from", "--pull=never", tag])?;
    let result = (|| {
        let rootfs = buildah(&["mount", &container])?;
        // No shell, no libc in there: only a static binary starts.
        let out = run(Command::new("chroot").args(["--userspec=65532:65532", &rootfs, "/omniscale", "version"]))?;
        if !out.starts_with(&format!("omniscale {}", env!("CARGO_PKG_VERSION"))) {
            return Err(format!("unexpected `omniscale version` output in the image: {out}"));
        }
        let certs = Path::new(&rootfs).join("etc/ssl/certs/ca-certificates.crt");
        let pem = std::fs::read_to_string(&certs).map_err(|e| format!("{}: {e}", certs.display()))?;
        if !pem.contains("BEGIN CERTIFICATE") {
            return Err("the image's CA bundle holds no certificate".into());
        }
        eprintln!("checked: {out}; user {}, entrypoint {:?}", config.user, config.entrypoint);
        Ok(())
    })();
    let _ = buildah(&["rm", &container]);
    result
}

/// The fields of an OCI image config the checks read.
#[derive(Debug, PartialEq)]
pub struct ImageConfig {
    pub user: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub title: Option<String>,
}

/// Reads the OCI config out of `buildah inspect --type image` output.
pub fn parse_config(inspect: &str) -> Result<ImageConfig> {
    let v: serde_json::Value =
        serde_json::from_str(inspect).map_err(|e| format!("buildah inspect printed no JSON: {e}"))?;
    let config = &v["OCIv1"]["config"];
    if !config.is_object() {
        return Err("buildah inspect shows no OCIv1.config".into());
    }
    let list = |key: &str| -> Vec<String> {
        config[key].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
    };
    Ok(ImageConfig {
        user: config["User"].as_str().unwrap_or_default().to_owned(),
        entrypoint: list("Entrypoint"),
        cmd: list("Cmd"),
        title: config["Labels"]["org.opencontainers.image.title"].as_str().map(str::to_owned),
    })
}

impl ImageConfig {
    pub fn validate(&self) -> Result<()> {
        if self.user != "65532:65532" {
            return Err(format!("the image runs as {:?}, not 65532:65532", self.user));
        }
        if self.entrypoint != ["/omniscale"] || self.cmd != ["run"] {
            return Err(format!("entrypoint {:?} cmd {:?}, not [/omniscale] [run]", self.entrypoint, self.cmd));
        }
        if self.title.as_deref() != Some("omniscale") {
            return Err(format!("label org.opencontainers.image.title is {:?}", self.title));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `buildah inspect --type image` (1.28), trimmed; the Docker section comes
    /// after the OCI one and is not read.
    const INSPECTED: &str = r#"{"Type":"buildah 0.0.1","FromImage":"ghcr.io/omniscale/omniscale:0.1.0",
        "OCIv1":{"created":"2026-12-07T17:40:00Z","architecture":"amd64","os":"linux",
            "config":{"User":"65532:65532","ExposedPorts":{"8080/tcp":{},"9443/tcp":{}},
                "Env":["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"Entrypoint":["/omniscale"],"Cmd":["run"],
                "Labels":{"io.buildah.version":"1.28.2","org.opencontainers.image.title":"omniscale"}}},
        "Docker":{"config":{"User":"0"}}}"#;

    #[test]
    fn the_config_buildah_reports_is_read_and_checked() {
        let c = parse_config(INSPECTED).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.user, "65532:65532");
        assert_eq!(c.entrypoint, ["/omniscale"]);
        assert!(c.validate().is_ok());
        let root = parse_config(&INSPECTED.replace("65532:65532", "0")).unwrap_or_else(|e| panic!("{e}"));
        assert!(root.validate().is_err_and(|e| e.contains("runs as")));
        let shell = parse_config(&INSPECTED.replace(r#"["/omniscale"]"#, r#"["/bin/sh","-c"]"#))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(shell.validate().is_err());
        assert!(parse_config("Error: no such image").is_err());
        assert!(parse_config(r#"{"OCIv1":{}}"#).is_err_and(|e| e.contains("OCIv1.config")));
    }

    #[test]
    fn the_containerfile_and_the_manifests_agree_on_the_image() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cf = std::fs::read_to_string(root.join("Containerfile")).unwrap_or_default();
        assert!(cf.contains("FROM scratch") && cf.contains("USER 65532:65532"), "{cf}");
        assert!(cf.contains(r#"ENTRYPOINT ["/omniscale"]"#) && cf.contains(r#"CMD ["run"]"#));
        let tag = format!("image: {REPOSITORY}:{}", env!("CARGO_PKG_VERSION"));
        let deployment = std::fs::read_to_string(root.join("manifests/03-deployment.yaml")).unwrap_or_default();
        assert!(deployment.contains(&tag), "03-deployment.yaml runs {tag}");
        assert!(deployment.contains("readOnlyRootFilesystem: true") && deployment.contains("runAsUser: 65532"));
        let kustomization = std::fs::read_to_string(root.join("manifests/Kustomization")).unwrap_or_default();
        assert!(kustomization.contains(&format!("name: {REPOSITORY}")));
        assert!(kustomization.contains(&format!("newTag: {}", env!("CARGO_PKG_VERSION"))));
    }
}
