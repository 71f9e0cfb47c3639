//! `kiosk new`: a starter app a partner builds and runs unchanged — the manifest, the
//! WIT world, the source in the chosen language, a build script and a `kiosk run`
//! invocation. The templates are in `host/templates/`, compiled into the binary.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use kiosk_domain::ids::AppId;

/// The language of a new app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with wit-bindgen, built by cargo for wasm32-wasip2.
    Rust,
    /// Python, built by componentize-py.
    Python,
    /// JavaScript, built by ComponentizeJS.
    #[value(alias = "javascript")]
    Js,
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The app: `partner/name`, or `name` with `--partner`.
    app: String,
    /// The app's language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Your partner id (the operator assigns it), when the app is given as `name`.
    #[arg(long, default_value = "example")]
    partner: String,
    /// Where to write the app (default: ./<name>); must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
}

const WORLD: &str = include_str!("../../wit/app@0.2.0/world.wit");
/// The WASI 0.2 packages the world imports (`wasi:http` and what it uses), so that
/// wit-bindgen, componentize-py and ComponentizeJS resolve it offline.
const DEPS: [(&str, &str); 7] = [
    ("wit/app@0.2.0/deps/cli.wit", include_str!("../../wit/app@0.2.0/deps/cli.wit")),
    ("wit/app@0.2.0/deps/clocks.wit", include_str!("../../wit/app@0.2.0/deps/clocks.wit")),
    ("wit/app@0.2.0/deps/filesystem.wit", include_str!("../../wit/app@0.2.0/deps/filesystem.wit")),
    ("wit/app@0.2.0/deps/http.wit", include_str!("../../wit/app@0.2.0/deps/http.wit")),
    ("wit/app@0.2.0/deps/io.wit", include_str!("../../wit/app@0.2.0/deps/io.wit")),
    ("wit/app@0.2.0/deps/random.wit", include_str!("../../wit/app@0.2.0/deps/random.wit")),
    ("wit/app@0.2.0/deps/sockets.wit", include_str!("../../wit/app@0.2.0/deps/sockets.wit")),
];
const MANIFEST: &str = include_str!("../templates/manifest.json");
const README: &str = include_str!("../templates/README.md");
const TRY: &str = include_str!("../templates/try.sh");

/// The files of a `lang` app, as (path, template, executable).
fn files(lang: Lang) -> Vec<(&'static str, &'static str, bool)> {
    let mut files = vec![
        ("manifest.json", MANIFEST, false),
        ("README.md", README, false),
        ("try.sh", TRY, true),
        ("wit/app@0.2.0/world.wit", WORLD, false),
    ];
    files.extend(DEPS.map(|(path, text)| (path, text, false)));
    files.extend(match lang {
        Lang::Rust => [
            ("Cargo.toml", include_str!("../templates/rust/Cargo.toml"), false),
            ("src/lib.rs", include_str!("../templates/rust/lib.rs"), false),
            ("build.sh", include_str!("../templates/rust/build.sh"), true),
            (".gitignore", include_str!("../templates/rust/gitignore"), false),
        ]
        .to_vec(),
        Lang::Python => [
            ("app.py", include_str!("../templates/python/app.py"), false),
            ("build.sh", include_str!("../templates/python/build.sh"), true),
            (".gitignore", include_str!("../templates/python/gitignore"), false),
        ]
        .to_vec(),
        Lang::Js => [
            ("app.js", include_str!("../templates/js/app.js"), false),
            ("package.json", include_str!("../templates/js/package.json"), false),
            ("build.sh", include_str!("../templates/js/build.sh"), true),
            (".gitignore", include_str!("../templates/js/gitignore"), false),
        ]
        .to_vec(),
    });
    files
}

/// Writes the starter app; returns where.
pub fn new_app(args: &NewArgs) -> anyhow::Result<PathBuf> {
    let id = match args.app.split_once('/') {
        Some(_) => AppId::parse(&args.app),
        None => AppId::new(&args.partner, &args.app),
    }
    .map_err(|e| {
        anyhow::anyhow!("{e}: partner and name are lower-case letters, digits and '-' (e.g. acme/spend-report)")
    })?;
    let name = id.name().to_string();
    // A Cargo package name cannot start with a digit; an app name can.
    let krate = if name.starts_with(|c: char| c.is_ascii_digit()) { format!("app-{name}") } else { name.clone() };
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&name));
    match std::fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} exists and is not empty: choose another --dir", dir.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot use {} for the app: {e}", dir.display()),
    }
    let title = name
        .split('-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ");
    let (lang, build) = match args.lang {
        Lang::Rust => ("Rust", "cargo for wasm32-wasip2, with wit-bindgen"),
        Lang::Python => ("Python", "componentize-py 0.25"),
        Lang::Js => ("JavaScript", "ComponentizeJS 0.23, installed by npm on first build"),
    };
    let fill = |text: &str| {
        text.replace("{{app}}", &id.to_string())
            .replace("{{title}}", &title)
            .replace("{{crate}}", &krate)
            .replace("{{crate_file}}", &krate.replace('-', "_"))
            .replace("{{lang}}", lang)
            .replace("{{build}}", build)
    };
    for (path, template, executable) in files(args.lang) {
        write(&dir.join(path), &fill(template), executable)?;
    }
    Ok(dir)
}

fn write(path: &Path, text: &str, executable: bool) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    Ok(())
}
