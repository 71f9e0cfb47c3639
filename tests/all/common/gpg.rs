//! A throwaway GnuPG home for tests: real keys, real detached signatures.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Gpg {
    home: tempfile::TempDir,
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").arg("--homedir").arg(self.home.path()).args(["--kill", "gpg-agent"]).output();
    }
}

impl Gpg {
    pub fn new() -> Self {
        let home = tempfile::Builder::new().prefix("kg").tempdir_in("/tmp").expect("gpg home");
        Self { home }
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg must be installed (apt-get install gnupg)");
        assert!(out.status.success(), "gpg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// Generates a key; `algo` like `ed25519` or `rsa3072`; `faked_time` like
    /// `20200101T000000` makes gpg believe it is that moment. Returns the fingerprint.
    pub fn generate(&self, uid: &str, algo: &str, usage: &str, expire: &str, faked_time: Option<&str>) -> String {
        let mut args = Vec::new();
        let fake;
        if let Some(t) = faked_time {
            fake = format!("{t}!");
            args.extend(["--faked-system-time", fake.as_str()]);
        }
        args.extend(["--quick-gen-key", uid, algo, usage, expire]);
        self.run(&args);
        self.fingerprint(uid)
    }

    /// Adds a subkey to `fpr`.
    pub fn add_subkey(&self, fpr: &str, algo: &str, usage: &str) {
        self.run(&["--quick-add-key", fpr, algo, usage, "1y"]);
    }

    pub fn fingerprint(&self, uid: &str) -> String {
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid])).unwrap();
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:").map(|rest| rest.trim_matches(':').to_string()))
            .expect("fingerprint in listing")
    }

    /// The public certificate, ASCII-armoured.
    pub fn export(&self, fpr: &str) -> Vec<u8> {
        self.run(&["--armor", "--export", fpr])
    }

    pub fn export_secret(&self, fpr: &str) -> Vec<u8> {
        self.run(&["--armor", "--export-secret-keys", fpr])
    }

    /// Revokes the key with the revocation certificate gpg made at generation.
    pub fn revoke(&self, fpr: &str) {
        let rev = self.home.path().join("openpgp-revocs.d").join(format!("{fpr}.rev"));
        let text = std::fs::read_to_string(&rev).expect("revocation certificate");
        let cleaned: PathBuf = self.home.path().join("revoke.asc");
        std::fs::write(&cleaned, text.replace(":-----BEGIN", "-----BEGIN")).unwrap();
        self.run(&["--import", cleaned.to_str().unwrap()]);
    }

    /// The revocation certificate gpg made at generation, as it is on disk (its armour
    /// line starts with ':' so it is not imported by accident).
    pub fn revocation_certificate(&self, fpr: &str) -> Vec<u8> {
        std::fs::read(self.home.path().join("openpgp-revocs.d").join(format!("{fpr}.rev")))
            .expect("revocation certificate")
    }

    /// A detached signature of `file` by `fpr` (armoured unless `binary`).
    pub fn sign(&self, fpr: &str, file: &Path, binary: bool, faked_time: Option<&str>) -> Vec<u8> {
        let user = fpr.to_string();
        let mut args: Vec<String> = Vec::new();
        if let Some(t) = faked_time {
            args.extend(["--faked-system-time".into(), format!("{t}!")]);
        }
        args.extend(["--local-user".into(), user, "--detach-sign".into()]);
        if !binary {
            args.push("--armor".into());
        }
        args.extend(["--output".into(), "-".into(), file.to_str().unwrap().into()]);
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Signs `bytes` (written to a temp file first).
    pub fn sign_bytes(&self, fpr: &str, bytes: &[u8], binary: bool) -> Vec<u8> {
        let file = tempfile::NamedTempFile::new_in(self.home.path()).unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        self.sign(fpr, file.path(), binary, None)
    }
}
