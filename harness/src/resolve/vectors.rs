//! The test-vector table of shared/reference/runtime-names.md §5, one test per row.
//!
//! Docker columns are checked for all four release lines; containerd columns for 1.6, 1.7 and 2.x on a fake Debian
//! host (containerd in /usr/bin, started by systemd in /, opt plugin on). Rows about daemon configuration (37–42) go
//! through `docker::DaemonRuntimes`; Windows-only cells (23, 24) through `containerd::plan_for(.., Windows)`, which
//! models naming and path classification only.
use super::containerd::{self, Cache, Env, FakeFs, NameError, Outcome, Place, Plan, Version as C};
use super::docker::{self, ConfigError, ConfiguredRuntime, DaemonRuntimes, Verdict, Version as D};
use super::gopath::Platform;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Dflt,
    Stock,
    Impl,
    R400,
}

fn docker_row(name: &str, want: [Gate; 4]) {
    for (version, want) in D::ALL.into_iter().zip(want) {
        let verdict = docker::gate(name, version);
        let got = match &verdict {
            Verdict::Default => Gate::Dflt,
            Verdict::Stock { .. } => Gate::Stock,
            Verdict::Implicit { shim } => {
                assert_eq!(shim, name, "implicit names go to containerd verbatim");
                Gate::Impl
            }
            Verdict::Rejected { message } => {
                let expected = if version == D::V20_10 {
                    format!("Unknown runtime specified {name}")
                } else {
                    format!("unknown or invalid runtime name: {name}")
                };
                assert_eq!(message, &expected);
                Gate::R400
            }
            Verdict::Configured { .. } => panic!("no runtimes are configured"),
        };
        assert_eq!(got, want, "dockerd {version} on {name:?}: {verdict:?}");
        match want {
            Gate::Impl => assert!(docker::permissible(name, version), "permissible {version} {name:?}"),
            Gate::R400 => assert!(!docker::permissible(name, version), "permissible {version} {name:?}"),
            Gate::Dflt | Gate::Stock => {}
        }
    }
}

/// A Debian host: containerd 1.6 package layout, systemd cwd /, default opt plugin.
fn debian() -> FakeFs {
    FakeFs::new()
        .exe("/usr/bin/containerd")
        .exe("/usr/bin/containerd-shim")
        .exe("/usr/bin/containerd-shim-runc-v1")
        .exe("/usr/bin/containerd-shim-runc-v2")
        .alias("/bin/containerd-shim-runc-v2", "/usr/bin/containerd-shim-runc-v2")
        .dir("/opt/containerd/bin")
}

fn env(fs: &FakeFs) -> Env<'_> {
    Env {
        cwd: "/".to_owned(),
        path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        opt_dir: Some("/opt/containerd".to_owned()),
        containerd_dir: Some("/usr/bin".to_owned()),
        probe: fs,
    }
}

fn bin(name: &str, version: C) -> String {
    containerd::binary_name(name, version).unwrap_or_else(|error| panic!("{name:?} on {version}: {error}"))
}

fn assert_bin_all(name: &str, binary: &str) {
    for version in C::ALL {
        assert_eq!(bin(name, version), binary, "{version}");
    }
}

fn assert_err_name(name: &str, versions: &[C]) {
    for &version in versions {
        let example = if version == C::V2 { "io.containerd.runc.v2" } else { "io.containerd.runc.v1" };
        let error = containerd::binary_name(name, version).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "invalid runtime name {name}, correct runtime name should be either format like `{example}` or a full \
                 path to the binary"
            ),
            "{version}"
        );
        let fs = debian();
        let resolution = containerd::lookup(name, version, &env(&fs));
        assert_eq!(resolution.outcome, Outcome::Fails { error: error.to_string() });
    }
}

fn not_installed(name: &str, binary: &str) -> Outcome {
    Outcome::Fails {
        error: format!(
            "runtime {} binary not installed {}: file does not exist",
            super::gopath::quote(name),
            super::gopath::quote(binary)
        ),
    }
}

fn runs(name: &str, version: C, fs: &FakeFs) -> Option<String> {
    containerd::lookup(name, version, &env(fs)).chosen().map(str::to_owned)
}

#[test]
fn row_01_empty() {
    docker_row("", [Gate::Dflt; 4]);
    let fs = debian();
    for version in C::ALL {
        assert_eq!(containerd::binary_name("", version), Err(NameError::Empty));
        let resolution = containerd::lookup("", version, &env(&fs));
        assert_eq!(resolution.outcome, Outcome::Fails { error: "no runtime name".into() });
        assert_eq!(resolution.wrapped_error().as_deref(), Some("container.Runtime.Name must be set: invalid argument"));
    }
}

#[test]
fn row_02_runc() {
    docker_row("runc", [Gate::Stock; 4]);
    assert_eq!(docker::gate("runc", D::V28Plus), Verdict::Stock { shim: "io.containerd.runc.v2".into() });
    assert_err_name("runc", &C::ALL);
}

#[test]
fn row_03_upper_case_runc() {
    docker_row("RUNC", [Gate::R400; 4]);
    assert_err_name("RUNC", &C::ALL);
}

#[test]
fn row_04_runc_v2() {
    docker_row("io.containerd.runc.v2", [Gate::Stock; 4]);
    assert_bin_all("io.containerd.runc.v2", "containerd-shim-runc-v2");
    let fs = debian();
    for version in C::ALL {
        assert_eq!(runs("io.containerd.runc.v2", version, &fs).as_deref(), Some("/usr/bin/containerd-shim-runc-v2"));
    }
    // 25+: a daemon.json entry of the same name overrides the stock alias (code reading, unverified upstream).
    let mut config = DaemonRuntimes::default();
    config.runtimes.insert(
        "io.containerd.runc.v2".into(),
        ConfiguredRuntime { path: Some("/usr/bin/crun".into()), ..Default::default() },
    );
    assert!(matches!(docker::gate_with("io.containerd.runc.v2", D::V25_27, &config), Verdict::Configured { .. }));
    assert!(matches!(docker::gate_with("io.containerd.runc.v2", D::V23_24, &config), Verdict::Stock { .. }));
}

#[test]
fn row_05_legacy_v1_linux() {
    let name = "io.containerd.runtime.v1.linux";
    docker_row(name, [Gate::Stock, Gate::Impl, Gate::Impl, Gate::Impl]);
    let fs = debian();
    for version in [C::V1_6, C::V1_7] {
        let resolution = containerd::lookup(name, version, &env(&fs));
        assert_eq!(resolution.plan, Plan::LegacyV1 { shim: "containerd-shim".into() });
        assert_eq!(resolution.chosen(), Some("/usr/bin/containerd-shim"));
        assert!(resolution.notes.iter().any(|note| note.contains("deprecation warning")));
    }
    assert_eq!(bin(name, C::V2), "containerd-shim-v1-linux");
    let resolution = containerd::lookup(name, C::V2, &env(&fs));
    assert_eq!(resolution.outcome, not_installed(name, "containerd-shim-v1-linux"));
}

#[test]
fn row_06_runc_v1() {
    let name = "io.containerd.runc.v1";
    docker_row(name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
    assert_bin_all(name, "containerd-shim-runc-v1");
    let fs = debian();
    for version in [C::V1_6, C::V1_7] {
        let resolution = containerd::lookup(name, version, &env(&fs));
        assert_eq!(resolution.chosen(), Some("/usr/bin/containerd-shim-runc-v1"));
        assert!(resolution.notes.iter().any(|note| note.contains("deprecation warning")));
    }
    // containerd 2.x packages ship no runc v1 shim.
    let two = FakeFs::new().exe("/usr/bin/containerd").exe("/usr/bin/containerd-shim-runc-v2");
    assert_eq!(containerd::lookup(name, C::V2, &env(&two)).outcome, not_installed(name, "containerd-shim-runc-v1"));
}

#[test]
fn row_07_kata() {
    let name = "io.containerd.kata.v2";
    docker_row(name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
    assert_bin_all(name, "containerd-shim-kata-v2");
    let fs = debian();
    assert_eq!(containerd::lookup(name, C::V1_6, &env(&fs)).outcome, not_installed(name, "containerd-shim-kata-v2"));
    let fs = debian().exe("/usr/local/bin/containerd-shim-kata-v2");
    assert_eq!(runs(name, C::V2, &fs).as_deref(), Some("/usr/local/bin/containerd-shim-kata-v2"));
}

#[test]
fn row_08_runsc() {
    let name = "io.containerd.runsc.v1";
    docker_row(name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
    assert_bin_all(name, "containerd-shim-runsc-v1");
}

#[test]
fn row_09_realfake_from_moby_integration_test() {
    let name = "io.containerd.realfake.v42";
    docker_row(name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
    assert_bin_all(name, "containerd-shim-realfake-v42");
    // The test symlinks containerd-shim-runc-v2 into a temp dir put first on containerd's PATH.
    let fs = debian().alias("/tmp/t/containerd-shim-realfake-v42", "/usr/bin/containerd-shim-runc-v2");
    let mut e = env(&fs);
    e.path = format!("/tmp/t:{}", e.path);
    assert_eq!(containerd::lookup(name, C::V1_7, &e).chosen(), Some("/tmp/t/containerd-shim-realfake-v42"));
}

#[test]
fn row_10_versionless() {
    let name = "io.containerd.my-shim";
    docker_row(name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
    assert_bin_all(name, "containerd-shim-containerd-my-shim");
}

#[test]
fn row_11_no_dot() {
    docker_row("myshim", [Gate::R400; 4]);
    assert_err_name("myshim", &C::ALL);
}

#[test]
fn rows_12_to_16_dots() {
    for (name, binary) in [
        ("foo.v2", "containerd-shim-foo-v2"),
        ("a.b", "containerd-shim-a-b"),
        ("a.b.c.d.e", "containerd-shim-d-e"),
        ("a.", "containerd-shim-a-"),
        // The reference table says `containerd-shim---`; `containerd-shim-%s-%s` with two empty parts gives two
        // dashes, and containerd 1.6.20 looks for `containerd-shim--` (tests/resolve_containerd.rs).
        ("a..", "containerd-shim--"),
    ] {
        docker_row(name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
        assert_bin_all(name, binary);
    }
}

#[test]
fn rows_17_to_19_leading_dot() {
    for (name, binary) in [
        (".v2", "containerd-shim--v2"),
        (".", "containerd-shim--"),
        ("..", "containerd-shim--"),
        ("...", "containerd-shim--"),
        (".io.containerd.runc.v2", "containerd-shim-runc-v2"),
    ] {
        docker_row(name, [Gate::R400, Gate::Impl, Gate::R400, Gate::R400]);
        assert_eq!(bin(name, C::V1_6), binary, "{name}");
        assert_err_name(name, &[C::V1_7, C::V2]);
    }
    let fs = debian();
    assert_eq!(runs(".io.containerd.runc.v2", C::V1_6, &fs).as_deref(), Some("/usr/bin/containerd-shim-runc-v2"));
}

#[test]
fn row_20_empty_middle() {
    docker_row("io.containerd..v2", [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
    assert_bin_all("io.containerd..v2", "containerd-shim--v2");
}

#[test]
fn rows_21_22_runc_aliases_share_the_cache_entry() {
    for name in ["runc.v2", "x.io.containerd.runc.v2"] {
        docker_row(name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
        assert_eq!(docker::gate(name, D::V28Plus), Verdict::Implicit { shim: name.into() }, "no runc options");
        assert_bin_all(name, "containerd-shim-runc-v2");
        let fs = debian();
        for version in C::ALL {
            let mut cache = Cache::new();
            containerd::lookup_cached("io.containerd.runc.v2", version, &env(&fs), &mut cache);
            let resolution = containerd::lookup_cached(name, version, &env(&fs), &mut cache);
            assert_eq!(resolution.steps[0].place, Place::Cache);
            assert_eq!(resolution.chosen(), Some("/usr/bin/containerd-shim-runc-v2"));
        }
    }
}

#[test]
fn row_23_backslash() {
    let name = "io\\containerd.runc.v2";
    docker_row(name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
    assert_bin_all(name, "containerd-shim-runc-v2");
    let fs = debian();
    let resolution = containerd::lookup(name, C::V1_7, &env(&fs));
    assert_eq!(resolution.steps[0].path, "/containerd-shim-runc-v2", "checked at <cwd>/ on Linux");
    assert_eq!(
        containerd::plan_for(name, C::V2, Platform::Windows),
        Plan::Search { binary_name: "containerd-shim-runc-v2.exe".into(), name_dir: "io".into() }
    );
}

#[test]
fn row_24_windows_absolute() {
    let name = "C:\\shims\\io.containerd.runc.v2";
    docker_row(name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
    assert_bin_all(name, "containerd-shim-runc-v2");
    for version in C::ALL {
        assert_eq!(containerd::plan_for(name, version, Platform::Windows), Plan::AbsolutePath { path: name.into() });
    }
}

#[test]
fn rows_25_26_absolute_missing() {
    for name in ["/path/to/runc", "/path/to/io.containerd.runc.v2"] {
        docker_row(name, [Gate::R400; 4]);
        let fs = debian();
        for version in C::ALL {
            assert_eq!(containerd::binary_name(name, version), Err(NameError::AbsolutePath { path: name.into() }));
            let resolution = containerd::lookup(name, version, &env(&fs));
            assert_eq!(
                resolution.outcome,
                Outcome::Fails { error: format!("invalid custom binary path: stat {name}: no such file or directory") }
            );
        }
    }
}

#[test]
fn row_27_absolute_existing_not_cached() {
    let name = "/usr/bin/containerd-shim-runc-v2";
    docker_row(name, [Gate::R400; 4]);
    let fs = debian();
    for version in C::ALL {
        let mut cache = Cache::new();
        let resolution = containerd::lookup_cached(name, version, &env(&fs), &mut cache);
        assert_eq!(resolution.outcome, Outcome::Runs { path: name.into(), step: 0, exec_error: None });
        assert!(cache.is_empty());
    }
}

#[test]
fn row_28_relative_dir_seeds_the_cache_on_1_6() {
    let name = "my/io.containerd.runc.v2";
    docker_row(name, [Gate::R400; 4]);
    assert_eq!(bin(name, C::V1_6), "containerd-shim-runc-v2");
    assert_err_name(name, &[C::V1_7, C::V2]);
    let fs = debian().exe("/my/containerd-shim-runc-v2");
    let mut cache = Cache::new();
    let resolution = containerd::lookup_cached(name, C::V1_6, &env(&fs), &mut cache);
    assert_eq!(resolution.steps[0].place, Place::NameDirectory { dir: "my".into() });
    assert_eq!(resolution.chosen(), Some("/my/containerd-shim-runc-v2"));
    let later = containerd::lookup_cached("io.containerd.runc.v2", C::V1_6, &env(&fs), &mut cache);
    assert_eq!(later.chosen(), Some("/my/containerd-shim-runc-v2"), "cached under the binary name");
    let fs = debian();
    assert_eq!(runs(name, C::V1_6, &fs).as_deref(), Some("/usr/bin/containerd-shim-runc-v2"), "then PATH");
}

#[test]
fn row_29_relative_paths_hit_the_cwd_bug_on_1_6() {
    for (name, binary) in [
        ("./x", "containerd-shim--/x"),
        ("../x", "containerd-shim--/x"),
        ("./containerd-shim-runc-v2", "containerd-shim--/containerd-shim-runc-v2"),
        ("./fake/containerd-shim-runc-v2", "containerd-shim--/fake/containerd-shim-runc-v2"),
    ] {
        docker_row(name, [Gate::R400; 4]);
        assert_eq!(bin(name, C::V1_6), binary);
        assert_err_name(name, &[C::V1_7, C::V2]);
        let fs = debian();
        let resolution = containerd::lookup(name, C::V1_6, &env(&fs));
        assert_eq!(
            resolution.outcome,
            Outcome::Runs { path: "/".into(), step: 2, exec_error: Some("exec: \"/\": permission denied".into()) },
            "{name}"
        );
        assert_eq!(resolution.cached, Some((binary.to_owned(), "/".to_owned())));
    }
}

#[test]
fn row_30_path_without_dot() {
    let name = "fake/containerd-shim-runc-v2";
    docker_row(name, [Gate::R400; 4]);
    assert_err_name(name, &C::ALL);
}

#[test]
fn rows_31_to_35_odd_characters() {
    for (name, binary) in [
        ("io.containerd.my shim.v2", "containerd-shim-my shim-v2"),
        (" io.containerd.runc.v2", "containerd-shim-runc-v2"),
        ("io.containerd.runc.v2 ", "containerd-shim-runc-v2 "),
        ("io.containerd.ランタイム.v2", "containerd-shim-ランタイム-v2"),
        ("io.containerd.$(id).v2", "containerd-shim-$(id)-v2"),
        ("IO.CONTAINERD.KATA.V2", "containerd-shim-KATA-V2"),
    ] {
        docker_row(name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
        assert_bin_all(name, binary);
    }
    let fs = debian().exe("/usr/bin/containerd-shim-kata-v2");
    assert_eq!(runs(" io.containerd.runc.v2", C::V1_6, &fs).as_deref(), Some("/usr/bin/containerd-shim-runc-v2"));
    let trailing = "io.containerd.runc.v2 ";
    assert_eq!(
        containerd::lookup(trailing, C::V1_7, &env(&fs)).outcome,
        not_installed(trailing, "containerd-shim-runc-v2 ")
    );
    let upper = "IO.CONTAINERD.KATA.V2";
    assert_eq!(containerd::lookup(upper, C::V2, &env(&fs)).outcome, not_installed(upper, "containerd-shim-KATA-V2"));
}

#[test]
fn row_36_overlong_component() {
    let name = format!("io.containerd.{}.v2", "a".repeat(300));
    docker_row(&name, [Gate::R400, Gate::Impl, Gate::Impl, Gate::Impl]);
    let binary = format!("containerd-shim-{}-v2", "a".repeat(300));
    assert_bin_all(&name, &binary);
    let fs = debian();
    let resolution = containerd::lookup(&name, C::V1_6, &env(&fs));
    assert_eq!(resolution.outcome, not_installed(&name, &binary));
    assert!(resolution
        .steps
        .iter()
        .all(|step| matches!(step.found, containerd::Probed::Missing { error: containerd::StatError::NameTooLong })));
}

#[test]
fn row_37_configured_name_bypasses_the_gate() {
    let mut config = DaemonRuntimes::default();
    config.runtimes.insert(
        "my/custom.runtime.v1".into(),
        ConfiguredRuntime { path: Some("/bin/true".into()), ..Default::default() },
    );
    for version in D::ALL {
        let verdict = docker::gate_with("my/custom.runtime.v1", version, &config);
        assert_eq!(
            verdict,
            Verdict::Configured { shim: "io.containerd.runc.v2".into(), runc_binary: Some("/bin/true".into()) }
        );
        assert_eq!(verdict.containerd_name(), Some("io.containerd.runc.v2"), "containerd never sees the key");
    }
}

#[test]
fn row_38_runtime_type_may_be_a_path() {
    let mut config = DaemonRuntimes::default();
    config.runtimes.insert(
        "shimwithpath".into(),
        ConfiguredRuntime { runtime_type: Some("/path/to/my/shim".into()), ..Default::default() },
    );
    // runtimeType arrived in 24.0; the 23-24 line is modelled as 24 here. 20.10 has no runtimeType (n/a).
    for version in [D::V23_24, D::V25_27, D::V28Plus] {
        assert_eq!(config.validate(version), Ok(()));
        let verdict = docker::gate_with("shimwithpath", version, &config);
        assert_eq!(verdict.containerd_name(), Some("/path/to/my/shim"));
    }
    for version in C::ALL {
        assert_eq!(
            containerd::plan("/path/to/my/shim", version),
            Plan::AbsolutePath { path: "/path/to/my/shim".into() }
        );
    }
}

#[test]
fn row_39_add_runtime_lower_cases_the_name() {
    let mut config = DaemonRuntimes::default();
    config.add_runtime_flag("MyRt=/x").expect("accepted");
    assert!(config.runtimes.contains_key("myrt"));
    for version in D::ALL {
        assert!(matches!(docker::gate_with("MyRt", version, &config), Verdict::Rejected { .. }), "{version}");
        assert!(matches!(docker::gate_with("myrt", version, &config), Verdict::Configured { .. }));
    }
    assert_eq!(config.add_runtime_flag("myrt=/y"), Err(ConfigError::AlreadyDefined("myrt".into())));
    assert_eq!(config.add_runtime_flag("novalue="), Err(ConfigError::InvalidRuntimeArgument("novalue=".into())));
}

#[test]
fn row_40_runc_is_reserved() {
    let mut config = DaemonRuntimes::default();
    assert_eq!(config.add_runtime_flag("runc=/usr/bin/crun"), Err(ConfigError::Reserved));
    assert_eq!(config.add_runtime_flag("RUNC=/usr/bin/crun"), Err(ConfigError::Reserved));
    config
        .runtimes
        .insert("runc".into(), ConfiguredRuntime { path: Some("/usr/bin/crun".into()), ..Default::default() });
    for version in D::ALL {
        assert_eq!(config.validate(version).map_err(|e| e.to_string()), Err("runtime name 'runc' is reserved".into()));
    }
}

#[test]
fn row_41_shim_as_default_runtime() {
    let config = DaemonRuntimes { default_runtime: Some("io.containerd.kata.v2".into()), ..Default::default() };
    assert_eq!(
        config.validate(D::V20_10).map_err(|e| e.to_string()),
        Err("specified default runtime 'io.containerd.kata.v2' does not exist".into())
    );
    for version in [D::V23_24, D::V25_27, D::V28Plus] {
        assert_eq!(config.validate(version), Ok(()));
    }
    assert_bin_all("io.containerd.kata.v2", "containerd-shim-kata-v2");
}

#[test]
fn row_42_unknown_default_runtime() {
    let config = DaemonRuntimes { default_runtime: Some("notdefined".into()), ..Default::default() };
    for version in D::ALL {
        assert_eq!(config.validate(version), Err(ConfigError::UnknownDefault("notdefined".into())));
    }
    assert_eq!(
        ConfigError::UnknownDefault("notdefined".into()).to_string(),
        "specified default runtime 'notdefined' does not exist"
    );
}
