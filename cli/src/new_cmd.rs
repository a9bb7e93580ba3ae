//! `garden new`: a module's starting point in Rust, Python or JavaScript
//! (source, unit test, build script, README), written from the templates
//! in `cli/templates/`.
//!
//! The templates name the SDK and the WIT by path: by default the ones of
//! the garden checkout this binary was built from, or `--sdk`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A module's language.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with `garden-guest-sdk`.
    Rust,
    /// Python, with `guest-sdk/python` and componentize-py.
    Python,
    /// JavaScript, with `guest-sdk/js` and jco (QuickJS).
    Js,
}

/// Options of `garden new`.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The module's name: lower-case letters, digits and `-`, starting with a letter.
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where to create the module's directory (default: here).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// The SDK to build against (default: the one of the garden checkout
    /// this binary was built from).
    #[arg(long, value_name = "DIR")]
    sdk: Option<PathBuf>,
}

/// The checkout this binary was built from.
const CHECKOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

type Template = (&'static str, &'static str);

const RUST: &[Template] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    ("build.sh", include_str!("../templates/rust/build.sh")),
    ("README.md", include_str!("../templates/rust/README.md")),
];

const PYTHON: &[Template] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    (
        "test_app.py",
        include_str!("../templates/python/test_app.py"),
    ),
    (
        "conftest.py",
        include_str!("../templates/python/conftest.py"),
    ),
    ("build.sh", include_str!("../templates/python/build.sh")),
    ("README.md", include_str!("../templates/python/README.md")),
];

const JS: &[Template] = &[
    ("module.js", include_str!("../templates/js/module.js")),
    ("app.js", include_str!("../templates/js/app.js")),
    (
        "garden-sdk.js",
        include_str!("../templates/js/garden-sdk.js"),
    ),
    (
        "test/module.test.js",
        include_str!("../templates/js/test/module.test.js"),
    ),
    ("build.sh", include_str!("../templates/js/build.sh")),
    ("README.md", include_str!("../templates/js/README.md")),
];

/// `garden new`: write the module's directory; refuse to touch an existing one.
pub fn new(args: NewArgs) -> Result<()> {
    check_name(&args.name)?;
    let (templates, sdk_default) = match args.lang {
        Lang::Rust => (RUST, "guest-sdk"),
        Lang::Python => (PYTHON, "guest-sdk/python"),
        Lang::Js => (JS, "guest-sdk/js"),
    };
    let sdk = args
        .sdk
        .unwrap_or_else(|| Path::new(CHECKOUT).join(sdk_default));
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the SDK is not at {}: pass --sdk DIR (a garden checkout's {sdk_default})",
            sdk.display()
        )
    })?;
    let wit = Path::new(CHECKOUT)
        .join("wit")
        .canonicalize()
        .unwrap_or_else(|_| sdk.join("wit"));
    let target = args.dir.join(&args.name);
    if target.exists() {
        bail!(
            "{} exists already: choose another name or --dir",
            target.display()
        );
    }
    let fill = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{class}}", &class_name(&args.name))
            .replace("{{crate}}", &args.name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.display().to_string())
            .replace("{{wit}}", &wit.display().to_string())
    };
    for (path, text) in templates {
        let file = target.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&file, fill(text)).with_context(|| format!("writing {}", file.display()))?;
        if path.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(EXECUTABLE))?;
        }
    }
    println!(
        "wrote {} ({:?}): test it, then ./build.sh",
        target.display(),
        args.lang
    );
    Ok(())
}

/// Mode of the build script.
const EXECUTABLE: u32 = 0o755;

fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "`{name}` is not a module name: use 1 to 64 lower-case letters, digits and `-`, starting with a letter"
        );
    }
    Ok(())
}

/// `rsi-watch` -> `RsiWatch`.
fn class_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}
