//! The payload image, built here: an OCI image layout archive (`oci-layout`, `index.json` naming the image in
//! `io.containerd.image.name`, a manifest, a config with no Entrypoint/Cmd and `Env PATH=/`, one uncompressed layer
//! holding `/payload`), plus a Docker `manifest.json` so that `docker load` takes the same file.
use std::path::Path;

use sha2::{Digest, Sha256};

/// The name containerd gives the image on `ctr images import`.
pub const IMAGE: &str = "docker.io/shimcompat/payload:1";
/// The same image as Docker names it.
pub const DOCKER_IMAGE: &str = "shimcompat/payload:1";

/// Tar archive builder (ustar; regular files and directories only), enough for a layer and an image archive.
#[derive(Default)]
pub struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    pub fn dir(&mut self, name: &str) {
        let name = if name.ends_with('/') { name.to_owned() } else { format!("{name}/") };
        self.entry(&name, 0o755, b'5', &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, mode, b'0', data);
    }

    fn entry(&mut self, name: &str, mode: u32, kind: u8, data: &[u8]) {
        assert!(name.len() < 100, "tar name too long: {name}");
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{:0width$o}\0", value, width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], data.len() as u64);
        octal(&mut header[136..148], 1_700_000_000);
        header[148..156].copy_from_slice(b"        ");
        header[156] = kind;
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[265..269].copy_from_slice(b"root");
        header[297..301].copy_from_slice(b"root");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        self.bytes
    }
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The archive's bytes for an image whose only layer holds `files` (path without leading `/`, mode, contents).
pub fn archive(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut layer = Tar::default();
    for (path, mode, data) in files {
        layer.file(path, *mode, data);
    }
    let layer = layer.finish();
    let layer_digest = digest(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": ["PATH=/"] },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": "shimcompat daemon tests" }],
    })
    .to_string()
    .into_bytes();
    let config_digest = digest(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = digest(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": { "io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1" },
        }],
    })
    .to_string()
    .into_bytes();
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let docker_manifest = serde_json::json!([{
        "Config": blob(&config_digest),
        "RepoTags": [DOCKER_IMAGE],
        "Layers": [blob(&layer_digest)],
    }])
    .to_string()
    .into_bytes();

    let mut tar = Tar::default();
    tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    tar.file("index.json", 0o644, &index);
    tar.file("manifest.json", 0o644, &docker_manifest);
    tar.dir("blobs");
    tar.dir("blobs/sha256");
    tar.file(&blob(&config_digest), 0o644, &config);
    tar.file(&blob(&manifest_digest), 0o644, &manifest);
    tar.file(&blob(&layer_digest), 0o644, &layer);
    tar.finish()
}

/// The payload image ([`IMAGE`]): `/payload` is [`crate::bundle::PAYLOAD`].
pub fn payload_archive() -> Vec<u8> {
    archive(&[("payload", 0o755, crate::bundle::PAYLOAD)])
}

/// Writes the payload image archive to `path`.
pub fn write_payload_archive(path: &Path) -> std::io::Result<()> {
    std::fs::write(path, payload_archive())
}

impl super::Lab {
    /// Builds the payload image and imports it (`ctr images import`); returns its name ([`IMAGE`]).
    pub fn import_payload_image(&self) -> Result<&'static str, String> {
        let archive = self.path("payload-image.tar");
        write_payload_archive(&archive).map_err(|e| format!("writing {}: {e}", archive.display()))?;
        let archive = archive.to_string_lossy().into_owned();
        self.ctr_with(&["images", "import", &archive], None, std::time::Duration::from_secs(60)).ok()?;
        Ok(IMAGE)
    }
}
