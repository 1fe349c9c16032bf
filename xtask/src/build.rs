//! `cargo xtask build`: patch, configure, compile and install jemalloc against a target
//! Debian sysroot, then prove the result before reporting success:
//! configure chose a safe unwinder, every `DT_NEEDED` library and `GLIBC_x.y` version is
//! provided by the target, and a program run by the target's own loader with the library
//! preloaded writes a heap profile that the built `jeprof` reads.
//!
//! Work happens in `<cache>/build/<key>`; the installed tree is staged beside the output
//! and renamed over it only after every gate passed.

pub(crate) mod elf;
pub mod gates;
mod logged;
mod smoke;
pub mod sysroot;
pub(crate) mod toolchain;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use xshell::{cmd, Shell};

use crate::digest::{key_of, Sha256Hex};
use crate::download::Downloader;
use crate::fetch::{self, SourceArgs};
use crate::progress::{self, Step};
use crate::project::{self, Cache};
use crate::spec::{DebianSpec, JemallocSpec};
use crate::unpack;
use gates::Unwinder;
use logged::run_logged;
use sysroot::Sysroot;
use toolchain::Toolchain;

#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Debian suite whose glibc the library must run on (see images/debian.toml).
    #[arg(long, default_value = "bullseye")]
    pub suite: String,
    /// The target platform (see images/debian.toml): linux/amd64, or linux/arm64, cross-built
    /// on an x86-64 machine with Debian's cross compiler and smoke-run under qemu [default:
    /// this machine's, linux/amd64 on x86-64].
    #[arg(long, default_value = crate::spec::native_platform())]
    pub platform: String,
    /// Debian mirror holding `dists/<suite>` [default: the suite's in images/debian.toml].
    #[arg(long)]
    pub mirror: Option<String>,
    /// Sysroot packages, comma-separated, instead of the suite's list in images/debian.toml.
    #[arg(long, value_delimiter = ',')]
    pub sysroot_packages: Option<Vec<String>>,
    /// Where the installed tree (bin/, lib/, include/) goes
    /// [default: <cache>/dist/jemalloc-<version>-<suite>, `-arm64` after it for linux/arm64].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also install the static archives (lib/libjemalloc.a, ...).
    #[arg(long = "static")]
    pub static_libs: bool,
    /// Parallel make jobs [default: the number of CPUs].
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Rebuild even when the output is up to date.
    #[arg(long)]
    pub force: bool,
    /// Cache and work directory [default: target/flink-jemalloc, or $FLINK_JEMALLOC_CACHE].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Exact sysroot packages (from an image lock file).
    #[arg(skip)]
    pub sysroot_pins: Option<Vec<sysroot::Pinned>>,
    /// OpenPGP keyring the suite's Release file must be signed by; without it the index is
    /// verified by digest only.
    #[arg(long)]
    pub keyring: Option<PathBuf>,
}

impl BuildArgs {
    /// Returns a build of `source` for `suite` from `mirror` into the default output of
    /// `cache_dir`, with every other option at its default.
    pub fn new(source: SourceArgs, suite: &str, mirror: &str, cache_dir: &Path) -> BuildArgs {
        BuildArgs {
            source,
            suite: suite.to_string(),
            platform: crate::spec::native_platform().to_string(),
            mirror: Some(mirror.to_string()),
            sysroot_packages: None,
            out: None,
            static_libs: false,
            jobs: None,
            force: false,
            cache_dir: Some(cache_dir.to_path_buf()),
            sysroot_pins: None,
            keyring: None,
        }
    }
}

/// `build-info.json` in the output: what the tree was made from and what the gates saw.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildInfo {
    pub key: String,
    pub jemalloc_version: String,
    /// The platform it was built for (`linux/arm64`).
    #[serde(default = "default_platform")]
    pub platform: String,
    pub source_url: String,
    pub source_sha256: String,
    pub prefix: String,
    pub configure_flags: Vec<String>,
    pub patches: Vec<PatchInfo>,
    pub suite: String,
    pub mirror: String,
    pub sysroot_packages: Vec<sysroot::Pinned>,
    pub compiler: String,
    pub unwinder: Unwinder,
    pub cxx: bool,
    pub needed: Vec<String>,
    pub max_glibc: Option<String>,
    pub static_libs: bool,
}

fn default_platform() -> String {
    crate::spec::DEFAULT_PLATFORM.to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PatchInfo {
    pub name: String,
    pub sha256: String,
}

pub fn run(args: BuildArgs) -> Result<()> {
    println!("{}", jemalloc(&args)?.dir.display());
    Ok(())
}

/// What [`jemalloc`] gives: the installed tree, what it holds, and whether this run compiled
/// it (or found it up to date).
pub struct Output {
    pub dir: PathBuf,
    pub info: BuildInfo,
    pub compiled: bool,
}

/// What a build starts from: the spec, the cache, the verified source, the sysroot, the
/// compiler, the patches, the key of all of them, and the output directory.
struct Inputs {
    spec: JemallocSpec,
    cache: Cache,
    src: fetch::FetchedSource,
    sysroot: Sysroot,
    toolchain: Toolchain,
    compiler: String,
    patches: Vec<(PathBuf, PatchInfo)>,
    key: Sha256Hex,
    out: PathBuf,
}

/// Where one build works: the logs (`build/<key>/logs`) and a tree of its own beside them.
struct Workspace {
    logs: PathBuf,
    run_dir: tempfile::TempDir,
    tree: PathBuf,
}

/// What configure decided.
struct Configured {
    unwinder: Unwinder,
    cxx: bool,
}

/// Builds (or finds up to date) and returns the output directory and what it holds:
/// inputs → (up to date?) → tree with patches → configure [unwinder gate] → make → install
/// → [library gates, smoke run] → output.
pub fn jemalloc(args: &BuildArgs) -> Result<Output> {
    let inputs = gather(args)?;
    // One build of this output at a time; a run that waited finds it up to date.
    let _lock = inputs
        .cache
        .lock("build", &inputs.out.display().to_string())?;
    if !args.force {
        if let Ok(info) = read_info(&inputs.out) {
            if info.key == inputs.key.as_str() {
                progress::note(format!(
                    "up to date: {} (same source, patches, flags and sysroot; nothing to compile)",
                    inputs.out.display()
                ));
                return Ok(Output {
                    dir: inputs.out,
                    info,
                    compiled: false,
                });
            }
        }
    }
    let work = workspace(&inputs)?;
    patched_tree(&inputs, &work)?;
    let configured = configure(&inputs, &work)?;
    make(args, &inputs, &work)?;
    let stage = install(args, &inputs, &work)?;
    let installed = stage
        .path()
        .join(inputs.spec.prefix.trim_start_matches('/'));
    let facts = gate(&inputs, &work, &installed)?;
    let info = BuildInfo {
        key: inputs.key.to_string(),
        jemalloc_version: inputs.spec.version.clone(),
        platform: inputs.toolchain.platform.clone(),
        source_url: inputs.src.url.clone(),
        source_sha256: inputs.src.sha256.to_string(),
        prefix: inputs.spec.prefix.clone(),
        configure_flags: (inputs.spec.configure_flags.iter().cloned())
            .chain(inputs.toolchain.configure_flags())
            .collect(),
        patches: inputs.patches.iter().map(|(_, p)| p.clone()).collect(),
        suite: inputs.sysroot.suite.clone(),
        mirror: inputs.sysroot.mirror.clone(),
        sysroot_packages: inputs.sysroot.packages.clone(),
        compiler: format!("{} {}", inputs.toolchain.cc, inputs.compiler),
        unwinder: configured.unwinder,
        cxx: configured.cxx,
        needed: facts.needed.clone(),
        max_glibc: gates::max_glibc(&facts.version_needs),
        static_libs: args.static_libs,
    };
    std::fs::write(
        installed.join("build-info.json"),
        serde_json::to_string_pretty(&info)? + "\n",
    )?;
    unpack::replace_dir(installed, &inputs.out)?;
    progress::note(format!("installed tree: {}", inputs.out.display()));
    Ok(Output {
        dir: inputs.out,
        info,
        compiled: true,
    })
}

/// Gathers the verified source, the sysroot, the compiler and the patches, and the key over
/// them.
fn gather(args: &BuildArgs) -> Result<Inputs> {
    let root = project::root();
    let spec = JemallocSpec::load_release(&root, args.source.jemalloc.as_deref())?;
    let debian = DebianSpec::load(&root)?;
    let cache = Cache::new(
        args.cache_dir
            .clone()
            .unwrap_or_else(project::default_cache_dir),
    );
    let dl = Downloader::new();
    let suite = debian.suite(&args.suite)?;
    let platform = debian.platform(&args.platform)?;
    // Before any download: the cross compiler and qemu a foreign platform needs.
    let toolchain = Toolchain::for_platform(&args.platform, platform)?;
    let src = fetch::fetch_source(&dl, &cache, &spec, &args.source)?;
    let sysroot = sysroot::prepare(&dl, &cache, &sysroot_request(args, suite, platform))?;
    let sh = Shell::new()?;
    let cc = &toolchain.cc;
    let compiler = cmd!(sh, "{cc} -dumpfullversion")
        .quiet()
        .read()
        .with_context(|| {
            format!(
                "running `{cc} -dumpfullversion`: a C compiler is needed (apt-get install gcc g++)"
            )
        })?;
    let patches = patches_of(&spec, &root)?;
    let key = key_of(
        [
            spec.version.clone(),
            src.sha256.to_string(),
            spec.prefix.clone(),
            spec.configure_flags.join(" "),
            sysroot.key.clone(),
            format!("{cc} {compiler}"),
            format!("static={}", args.static_libs),
            Sha256Hex::of_bytes(smoke::SMOKE_C.as_bytes()).to_string(),
        ]
        .into_iter()
        // The default platform adds nothing, so its builds keep their keys.
        .chain((args.platform != crate::spec::DEFAULT_PLATFORM).then(|| {
            format!(
                "{} {} {}",
                args.platform,
                toolchain.configure_flags().join(" "),
                toolchain.cc
            )
        }))
        .chain(
            patches
                .iter()
                .map(|(_, p)| format!("{} {}", p.name, p.sha256)),
        ),
    );
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| cache.dist_dir(&spec.version, &args.suite, &platform.arch));
    Ok(Inputs {
        spec,
        cache,
        src,
        sysroot,
        toolchain,
        compiler,
        patches,
        key,
        out,
    })
}

/// Returns the sysroot `args` ask for: the suite's packages (or `--sysroot-packages`) of the
/// platform's architecture, from `--mirror` or the suite's mirror for the platform.
fn sysroot_request(
    args: &BuildArgs,
    suite: &crate::spec::SuiteSpec,
    platform: &crate::spec::PlatformSpec,
) -> sysroot::Request {
    sysroot::Request {
        mirror: args
            .mirror
            .clone()
            .unwrap_or_else(|| suite.mirror_for(&args.platform).to_string()),
        suite: args.suite.clone(),
        component: suite.component.clone(),
        platform: platform.clone(),
        packages: args
            .sysroot_packages
            .clone()
            .unwrap_or_else(|| suite.packages.clone()),
        pins: args.sysroot_pins.clone(),
        keyring: args.keyring.clone(),
    }
}

/// Returns the release's patches, in the order they apply, each with its name and sha256.
fn patches_of(spec: &JemallocSpec, root: &Path) -> Result<Vec<(PathBuf, PatchInfo)>> {
    spec.patch_files(root)?
        .into_iter()
        .map(|p| {
            let info = PatchInfo {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                sha256: Sha256Hex::of_file(&p)?.to_string(),
            };
            Ok((p, info))
        })
        .collect()
}

/// Makes the workspace: the logs at `build/<key>/logs`, and the tree in a directory of this
/// run's own beside them, so that a `make` left running by a killed run never writes into
/// ours. Trees of runs that are gone are removed (the caller holds the lock).
fn workspace(inputs: &Inputs) -> Result<Workspace> {
    let work = inputs.cache.build_dir(inputs.key.as_str());
    std::fs::create_dir_all(&work)?;
    for e in std::fs::read_dir(&work)?.flatten() {
        if e.file_name().to_string_lossy().starts_with(".tree-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let logs = work.join("logs");
    if logs.exists() {
        std::fs::remove_dir_all(&logs)
            .with_context(|| format!("cleaning the old logs {}", logs.display()))?;
    }
    std::fs::create_dir_all(&logs)?;
    let run_dir = tempfile::Builder::new()
        .prefix(".tree-")
        .tempdir_in(&work)?;
    let tree = run_dir.path().join("src");
    Ok(Workspace {
        logs,
        run_dir,
        tree,
    })
}

/// Copies the source into the workspace and applies the carried patches in order.
fn patched_tree(inputs: &Inputs, work: &Workspace) -> Result<()> {
    let sh = Shell::new()?;
    let (src_dir, tree) = (&inputs.src.dir, &work.tree);
    cmd!(sh, "cp -a {src_dir} {tree}").quiet().run()?;
    for (path, info) in &inputs.patches {
        let step = Step::start(format!("applying {}", info.name));
        let _dir = sh.push_dir(tree);
        run_logged(
            cmd!(sh, "patch -p1 --forward --batch --input {path}"),
            &work.logs.join(format!("{}.log", info.name)),
        )
        .with_context(|| {
            format!(
                "patch {} does not apply to {}",
                path.display(),
                inputs.src.url
            )
        })?;
        step.done("");
    }
    Ok(())
}

/// Runs `./configure` with the sysroot's compiler flags, then the unwinder gate (never
/// `prof-gcc`), and finds whether the C++ operators are built.
fn configure(inputs: &Inputs, work: &Workspace) -> Result<Configured> {
    let sh = Shell::new()?;
    let tree = &work.tree;
    let sysroot_flags = inputs.sysroot.compiler_flags().join(" ");
    let tc = &inputs.toolchain;
    let cc = format!("{} {sysroot_flags}", tc.cc);
    let cxx = format!("{} {sysroot_flags}", tc.cxx);
    let prefix = format!("--prefix={}", inputs.spec.prefix);
    let flags: Vec<String> = (inputs.spec.configure_flags.iter().cloned())
        .chain(tc.configure_flags())
        .collect();
    {
        let step = Step::start(format!("configure {prefix} {}", flags.join(" ")));
        let _dir = sh.push_dir(tree);
        run_logged(
            cmd!(sh, "./configure {prefix} {flags...}")
                .env("CC", &cc)
                .env("CXX", &cxx)
                .env("SOURCE_DATE_EPOCH", "0"),
            &work.logs.join("configure.log"),
        )
        .context("configure failed")?;
        step.done("");
    }
    let defs_h = tree.join("include/jemalloc/internal/jemalloc_internal_defs.h");
    let defs = std::fs::read_to_string(&defs_h)
        .with_context(|| format!("reading {}", defs_h.display()))?;
    let unwinder = gates::unwinder(&defs).with_context(|| {
        format!(
            "gate failed for the {} sysroot ({})",
            inputs.sysroot.suite,
            inputs.sysroot.dir.display()
        )
    })?;
    let makefile =
        std::fs::read_to_string(tree.join("Makefile")).context("reading the generated Makefile")?;
    let cxx = makefile
        .lines()
        .any(|l| l.starts_with("CPP_SRCS :=") && l.contains("jemalloc_cpp.cpp"));
    progress::note(format!(
        "unwinder: {unwinder}; C++ new/delete: {}",
        if cxx {
            "built in"
        } else {
            "not built (no working C++ compiler)"
        }
    ));
    Ok(Configured { unwinder, cxx })
}

/// Runs `make -jN`, with the build tree and the sysroot mapped to fixed names in debug info
/// so the same inputs give the same bytes wherever the cache is.
fn make(args: &BuildArgs, inputs: &Inputs, work: &Workspace) -> Result<()> {
    let sh = Shell::new()?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .to_string();
    let step = Step::start(format!("make -j{jobs}"));
    let _dir = sh.push_dir(&work.tree);
    let maps = format!(
        "-ffile-prefix-map={}=/usr/src/jemalloc-{} -ffile-prefix-map={}=/",
        work.tree.display(),
        inputs.spec.version,
        inputs.sysroot.dir.display()
    );
    let extra_c = format!("EXTRA_CFLAGS={maps}");
    let extra_cxx = format!("EXTRA_CXXFLAGS={maps}");
    run_logged(
        cmd!(sh, "make -j{jobs} {extra_c} {extra_cxx}"),
        &work.logs.join("make.log"),
    )
    .context("make failed")?;
    step.done("");
    Ok(())
}

/// Runs `make install` into a staging directory beside the output; `jemalloc-config`'s
/// record of the compiler command gets `/sysroot` for the sysroot's path.
fn install(args: &BuildArgs, inputs: &Inputs, work: &Workspace) -> Result<tempfile::TempDir> {
    let sh = Shell::new()?;
    let out_parent = inputs
        .out
        .parent()
        .with_context(|| format!("output {} has no parent directory", inputs.out.display()))?;
    std::fs::create_dir_all(out_parent)?;
    let stage = tempfile::Builder::new()
        .prefix(".stage-")
        .tempdir_in(out_parent)?;
    let step = Step::start("make install");
    let _dir = sh.push_dir(&work.tree);
    let mut targets = vec![
        "install_bin",
        "install_include",
        "install_lib_shared",
        "install_lib_pc",
    ];
    if args.static_libs {
        targets.push("install_lib_static");
    }
    let destdir = format!("DESTDIR={}", stage.path().display());
    run_logged(
        cmd!(sh, "make {targets...} {destdir}"),
        &work.logs.join("install.log"),
    )
    .context("make install failed")?;
    step.done("");
    let installed = stage
        .path()
        .join(inputs.spec.prefix.trim_start_matches('/'));
    let config_script = installed.join("bin/jemalloc-config");
    let text = std::fs::read_to_string(&config_script)
        .with_context(|| format!("reading {}", config_script.display()))?;
    std::fs::write(
        &config_script,
        text.replace(&inputs.sysroot.dir.display().to_string(), "/sysroot"),
    )?;
    Ok(stage)
}

/// Runs the gates on the installed library: its `DT_NEEDED` libraries and symbol versions in
/// the sysroot, and the smoke run under the sysroot's loader read by the built jeprof.
fn gate(inputs: &Inputs, work: &Workspace, installed: &Path) -> Result<elf::ElfFacts> {
    let sysroot = &inputs.sysroot;
    let step = Step::start(format!(
        "checking the library against the {} sysroot",
        sysroot.suite
    ));
    let facts = check_links(&installed.join("lib/libjemalloc.so.2"), sysroot)?;
    step.done(format!(
        "needs {}; newest glibc version {}",
        facts.needed.join(", "),
        gates::max_glibc(&facts.version_needs)
            .as_deref()
            .unwrap_or("none")
    ));
    let step = Step::start(match &inputs.toolchain.emulator {
        Some(q) => format!(
            "smoke run: heap profile under the target's loader run by {}, read by jeprof",
            q.file_name().unwrap_or_default().to_string_lossy()
        ),
        None => "smoke run: heap profile under the target's loader, read by jeprof".into(),
    });
    let sh = Shell::new()?;
    let summary = smoke::smoke(
        &sh,
        work.run_dir.path(),
        installed,
        sysroot,
        &inputs.toolchain,
    )?;
    step.done(summary);
    Ok(facts)
}

/// Reads `build-info.json` of an output directory.
fn read_info(out: &Path) -> Result<BuildInfo> {
    let path = out.join("build-info.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Gates on the ELF metadata: every `DT_NEEDED` library exists in the sysroot, and every
/// symbol version the library needs is defined there.
pub fn check_links(lib: &Path, sysroot: &Sysroot) -> Result<elf::ElfFacts> {
    let facts = elf::read(lib)?;
    let mut provided = BTreeMap::new();
    for needed in &facts.needed {
        let Some(path) = sysroot.find_lib(needed) else {
            bail!(
                "{} needs {needed}, which the {} sysroot does not have (searched {}): \
                 add the package providing it to the suite in images/debian.toml",
                lib.display(),
                sysroot.suite,
                sysroot.lib_dirs().join(", ")
            );
        };
        provided.insert(needed.clone(), elf::read(&path)?.version_defs);
    }
    let missing = gates::missing_versions(&facts.version_needs, &provided);
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(f, v)| format!("{v} from {f}"))
            .collect();
        bail!(
            "{} needs {}, which the {} sysroot (libc6 {}) does not provide: it would not load \
             on the target. Was it linked against the host's libc instead of the sysroot?",
            lib.display(),
            list.join(", "),
            sysroot.suite,
            sysroot.package_version("libc6").unwrap_or("?")
        );
    }
    Ok(facts)
}
