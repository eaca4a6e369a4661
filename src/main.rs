//! The `nsn-lane1` command-line entry point.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
#[cfg(feature = "dev")]
use std::time::Duration;

use clap::{Parser, Subcommand};
use nsn_lane1::checkpoint::Checkpoint;
use nsn_lane1::config::Config;
#[cfg(feature = "dev")]
use nsn_lane1::dev::{DevOptions, run_dev};
use nsn_lane1::sidecar::client::SidecarClient;
#[cfg(feature = "dev")]
use nsn_lane1::sidecar::server::{ReferenceSidecar, Semantics, SidecarLimits};
#[cfg(feature = "dev")]
use nsn_lane1::sidecar::store::BlobStore;

/// The Lane 1 executor of a Neural Sovereign Network node.
#[derive(Debug, Parser)]
#[command(name = "nsn-lane1", version, about)]
struct Cli {
    /// A TOML configuration file (flags override it; see the README).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: an embedded dev chain, the reference
    /// sidecar, the executor, and a requester posting Lane 1 tasks.
    #[cfg(feature = "dev")]
    Dev(DevArgs),
    /// Run the executor against a real chain and sidecar.
    Run(RunArgs),
    /// Run the reference sidecar: built-in CPU models over a content-addressed store.
    #[cfg(feature = "dev")]
    Sidecar(SidecarArgs),
}

#[cfg(feature = "dev")]
#[derive(Debug, clap::Args)]
struct DevArgs {
    /// Post this many Lane 1 tasks and stop when all are resolved (default:
    /// run until interrupted).
    #[arg(long)]
    tasks: Option<u64>,
    /// Block time in milliseconds (0: a block per transaction).
    #[arg(long, default_value_t = 0)]
    block_ms: u64,
    /// Blocks the finalized head trails the best block by (default: 2 with
    /// a block time, 0 without).
    #[arg(long, value_name = "N")]
    finality_lag: Option<u32>,
    /// A model to post tasks for, with the parameters the node runs it with
    /// (repeatable; tasks take the models in turn): `sleep`, or
    /// `sleep:{"duration_ms":200}`.
    #[arg(long = "model", value_name = "NAME[:JSON]")]
    models: Vec<String>,
    /// Tasks in flight at the sidecar at once.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Lane 1 nodes, each with its own account (Bob, Charlie, Ferdie), sharing one sidecar
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Reference sidecars, each of --concurrency slots, behind the node
    /// (runs are placed where their model is served and warm).
    #[arg(long, default_value_t = 1)]
    sidecars: usize,
    /// Post a Lane 0 task after every this many Lane 1 tasks (shows preemption).
    #[arg(long, value_name = "K")]
    lane0_every: Option<u64>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, value_name = "ADDR")]
    telemetry_listen: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The chain node's WebSocket URL.
    #[arg(long, value_name = "URL")]
    chain: Option<String>,
    /// A sidecar's URI (repeatable: one node drives several sidecars,
    /// each run placed where its model is served and warm).
    #[arg(long = "sidecar", value_name = "URL")]
    sidecars: Vec<String>,
    /// A file holding the signer's secret URI or mnemonic (never a flag value).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The chain RPC backend: `default` (real nodes) or `legacy` (chopsticks).
    #[arg(long, value_name = "KIND")]
    chain_backend: Option<nsn_lane1::config::ChainBackend>,
    /// Keep the last handled block here and backfill from it on restart.
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// A file holding the credential the sidecar asks for (its
    /// --auth-token-file); never the token itself.
    #[arg(long, value_name = "FILE")]
    sidecar_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the sidecar's certificate (TLS).
    #[arg(long, value_name = "FILE")]
    sidecar_ca_file: Option<PathBuf>,
    /// Accept a plain ws:// URL to a chain node on another host (calls and
    /// answers cross the network in clear).
    #[arg(long)]
    allow_insecure_chain: bool,
}

#[cfg(feature = "dev")]
#[derive(Debug, clap::Args)]
struct SidecarArgs {
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Keep blobs in this directory as well as in memory.
    #[arg(long, value_name = "DIR")]
    store_dir: Option<PathBuf>,
    /// Put a file into the store before serving (repeatable); its CID is printed.
    #[arg(long = "preload", value_name = "FILE")]
    preload: Vec<PathBuf>,
    /// Most models running at once (more are refused as RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = SidecarLimits::default().max_runs)]
    max_runs: usize,
    /// Longest a model may run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = SidecarLimits::default().max_run_time.as_secs())]
    max_run_secs: u64,
    /// How it treats run ids, cancels and failures: `reference` (its own)
    /// or `nsn` (as NSN's deployed sidecar: single-use run ids, a cancel
    /// that only marks, NSN's codes and words, no verdict).
    #[arg(long, default_value = "reference")]
    semantics: Semantics,
    /// Require this credential (a bearer token held in the file) on every
    /// call of the Sidecar service.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    /// While this file exists and names a set-up fault
    /// (`runner-not-configured`, `sandbox-required`, `insufficient-vram`,
    /// `container-unhealthy`), every run fails with it.
    #[arg(long, value_name = "FILE")]
    setup_fault_file: Option<PathBuf>,
    /// Most MiB of blobs kept in memory (the oldest leave first; with
    /// --store-dir they stay on disk).
    #[arg(long, value_name = "MIB", default_value_t = (nsn_lane1::sidecar::store::DEFAULT_MEMORY_LIMIT >> 20) as u64)]
    memory_limit_mib: u64,
    /// Load models before they run, as a GPU box does: a model not loaded
    /// takes this long before its first run (default: all models always
    /// loaded).
    #[arg(long, value_name = "MS")]
    load_ms: Option<u64>,
    /// With --load-ms: how many models fit at once (the least recently used
    /// leaves first).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2,
        conflicts_with = "vram_mb"
    )]
    model_slots: usize,
    /// With --load-ms: the VRAM budget, in MiB (4096 per model loaded;
    /// instead of --model-slots).
    #[arg(long, value_name = "MIB")]
    vram_mb: Option<u64>,
    /// Serve only these built-in models (repeatable; default: all).
    #[arg(long = "serve", value_name = "MODEL")]
    serve: Vec<String>,
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // `dev` draws a progress line: keep its log to warnings unless asked.
    let log = match (
        &cli.command,
        std::env::var("NSN_LANE1_LOG").is_ok(),
        cli.config.is_some(),
    ) {
        #[cfg(feature = "dev")]
        (Command::Dev(_), false, false) => "warn",
        _ => config.telemetry.log.as_str(),
    };
    if let Err(e) = nsn_lane1::telemetry::init_tracing(log, config.telemetry.log_format) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            #[cfg(feature = "dev")]
            Command::Dev(args) => dev(config, args).await,
            Command::Run(args) => run(config, args).await,
            #[cfg(feature = "dev")]
            Command::Sidecar(args) => sidecar(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, nsn_lane1::config::ConfigError> {
    let mut config = match path {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    Ok(config)
}

/// Refuses a key file that other users can read (or write): the key is the
/// node's stake.
fn check_key_file_mode(path: &std::path::Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "key file {} can be read by its group or by others (mode {:o}): run chmod 600 {} (or 400)",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM (what docker stop,
/// Kubernetes and most supervisors send): both drain gracefully.
#[cfg_attr(not(any(feature = "dev", feature = "real-chain")), allow(dead_code))]
async fn ctrl_c() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                r = tokio::signal::ctrl_c() => {
                    if r.is_err() {
                        term.recv().await;
                    }
                }
                _ = term.recv() => {}
            }
            return;
        }
    }
    // If the signal handler cannot be installed, run until killed.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(feature = "dev")]
async fn dev(config: Config, args: DevArgs) -> CliResult {
    let mut executor = config.executor_config()?;
    if let Some(c) = args.concurrency {
        if c == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        executor.max_concurrent = c;
    }
    let mut models = Vec::new();
    for spec in &args.models {
        let (name, parameters) = parse_model(spec)?;
        if let Some(p) = parameters {
            let id = nsn_lane1::task::ModelId::new(&name)
                .map_err(|e| format!("--model {spec:?}: {e}"))?;
            match executor.model_parameters.get(&id) {
                Some(old) if *old != p => {
                    return Err(format!(
                        "--model {spec:?}: {name} was given other parameters already"
                    )
                    .into());
                }
                _ => {
                    executor.model_parameters.insert(id, p);
                }
            }
        }
        models.push(name);
    }
    let defaults = DevOptions::default();
    let options = DevOptions {
        telemetry_listen: args.telemetry_listen.or(config.telemetry.listen),
        tasks: args.tasks,
        block_time: (args.block_ms > 0).then(|| Duration::from_millis(args.block_ms)),
        finality_lag: args.finality_lag,
        models: if models.is_empty() {
            defaults.models.clone()
        } else {
            models
        },
        lane0_every: args.lane0_every,
        nodes: args.nodes,
        sidecars: args.sidecars,
        executor,
        progress: true,
        ..defaults
    };
    let summary = run_dev(options, ctrl_c()).await?;
    print!("{}", summary.table());
    Ok(())
}

/// `NAME` or `NAME:JSON` → the model and its parameters (checked JSON).
#[cfg(feature = "dev")]
fn parse_model(
    spec: &str,
) -> Result<(String, Option<nsn_lane1::sidecar::client::Parameters>), Box<dyn std::error::Error>> {
    match spec.split_once(':') {
        None => Ok((spec.to_owned(), None)),
        Some((name, json)) => {
            let parameters =
                nsn_lane1::sidecar::client::Parameters::from_bytes(json.as_bytes().to_vec())
                    .map_err(|e| format!("--model {spec:?}: {e}"))?;
            Ok((name.to_owned(), Some(parameters)))
        }
    }
}

async fn run(mut config: Config, args: RunArgs) -> CliResult {
    if let Some(url) = args.chain {
        config.chain.url = Some(url);
    }
    let flag_sidecars = args.sidecars;
    if let Some(k) = args.key_file {
        config.chain.key_file = Some(k);
    }
    if let Some(b) = args.chain_backend {
        config.chain.backend = b;
    }
    if let Some(f) = args.state_file {
        config.chain.state_file = Some(f);
    }
    if let Some(f) = args.sidecar_token_file {
        config.sidecar.auth_token_file = Some(f);
    }
    if let Some(f) = args.sidecar_ca_file {
        config.sidecar.tls_ca_file = Some(f);
    }
    // Sidecars named by flags replace the file's: one is `[sidecar]`,
    // several are entries with `[sidecar]`'s other settings.
    match flag_sidecars.as_slice() {
        [] => {}
        [one] => {
            config.sidecar.endpoint = one.clone();
            config.sidecars.clear();
        }
        several => {
            config.sidecars = several
                .iter()
                .map(|endpoint| nsn_lane1::config::SidecarSection {
                    endpoint: endpoint.clone(),
                    ..config.sidecar.clone()
                })
                .collect();
        }
    }
    let executor = config.executor_config()?;
    let sidecar_configs = config.sidecar_set_configs()?;
    let url = config
        .chain
        .url
        .clone()
        .ok_or("no chain URL: give --chain, NSN_LANE1_CHAIN or [chain] url")?;
    let key_file = config
        .chain
        .key_file
        .clone()
        .ok_or("no key file: give --key-file, NSN_LANE1_KEY_FILE or [chain] key_file")?;
    nsn_lane1::config::check_chain_url(&url, args.allow_insecure_chain)?;
    check_key_file_mode(&key_file)?;
    let key = std::fs::read_to_string(&key_file)
        .map_err(|e| format!("cannot read key file {}: {e}", key_file.display()))?;
    if key.trim().is_empty() {
        return Err(format!("key file {} is empty", key_file.display()).into());
    }
    let checkpoint = config.chain.state_file.clone().map(Checkpoint::new);
    // One signer per key: a second process with this state file is refused
    // before it connects to anything (the hold goes with this process).
    let _held = checkpoint.as_ref().map(Checkpoint::lock).transpose()?;
    if let Some(cp) = &checkpoint {
        // Refuse a damaged state file before connecting to anything.
        match cp.load()? {
            Some(last) => tracing::info!(last, "resuming after the recorded block"),
            None => tracing::info!(file = %cp.path().display(), "no recorded block yet"),
        }
    }
    let roles: Vec<bool> = sidecar_configs.iter().map(|(_, _, lane0)| *lane0).collect();
    let mut sidecar = nsn_lane1::sidecar::set::SidecarSet::new(
        sidecar_configs
            .into_iter()
            .map(|(c, capacity, _)| SidecarClient::connect_lazy(c).map(|client| (client, capacity)))
            .collect::<Result<Vec<_>, _>>()?,
    );
    for (i, lane0) in roles.into_iter().enumerate() {
        sidecar = sidecar.lane0_role(i, lane0);
    }
    run_on_chain(
        ChainTarget {
            url: &url,
            backend: config.chain.backend,
            checkpoint,
        },
        key.trim(),
        executor,
        sidecar,
        config.telemetry.listen,
    )
    .await
}

/// Where and how to reach the chain.
struct ChainTarget<'a> {
    url: &'a str,
    #[cfg_attr(not(feature = "real-chain"), allow(dead_code))]
    backend: nsn_lane1::config::ChainBackend,
    #[cfg_attr(not(feature = "real-chain"), allow(dead_code))]
    checkpoint: Option<Checkpoint>,
}

#[cfg(feature = "real-chain")]
async fn run_on_chain(
    target: ChainTarget<'_>,
    key: &str,
    executor: nsn_lane1::executor::ExecutorConfig,
    sidecar: nsn_lane1::sidecar::set::SidecarSet,
    telemetry: Option<SocketAddr>,
) -> CliResult {
    use nsn_lane1::chain::subxt::{Backend, SubxtChain};
    use nsn_lane1::config::ChainBackend;
    use nsn_lane1::node::{Node, NodeParts};
    use nsn_lane1::task::AccountId;

    // The key's text never reaches a log or an error message.
    let uri: subxt_signer::SecretUri = key
        .parse()
        .map_err(|_| "the key file does not hold a secret URI or mnemonic")?;
    let signer = subxt_signer::sr25519::Keypair::from_uri(&uri)
        .map_err(|_| "the key file's secret could not be turned into an sr25519 key")?;
    let account = AccountId(signer.public_key().0);
    let url = target.url;
    let backend = match target.backend {
        ChainBackend::Default => Backend::Default,
        ChainBackend::Legacy => Backend::Legacy,
    };
    let chain = SubxtChain::connect(url, backend).await?;
    tracing::info!(%account, url, "connected");
    let metrics = nsn_lane1::telemetry::metrics::Lane1Metrics::default();
    let telemetry = match telemetry {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot serve telemetry on {addr}: {e}"))?,
        ),
        None => None,
    };
    let sidecar_client = sidecar.clone();
    let node = Node::spawn(
        executor,
        NodeParts {
            checkpoint: target.checkpoint,
            ..NodeParts::new(chain.clone(), chain.submitter(signer), account, sidecar)
                .metrics(metrics.clone())
        },
    );
    let ready =
        nsn_lane1::node::ready_check(chain.clone(), sidecar_client, Some(node.admission.clone()));
    let metrics_registry = metrics.registry.clone();
    let liveness = node.liveness();
    if let Some(listener) = telemetry {
        let live = liveness.clone();
        tokio::spawn(nsn_lane1::telemetry::http::serve_node(
            listener,
            metrics_registry,
            std::sync::Arc::new(move || live.check()),
            ready,
            std::future::pending(),
        ));
    }
    // Run until asked to stop — or until the node dies, which is an error:
    // a supervisor restarts a process that exits non-zero.
    let died = tokio::select! {
        () = ctrl_c() => None,
        cause = liveness.dead() => Some(cause),
    };
    let report = node.stop().await;
    if let Some(cause) = died {
        return Err(format!("the node stopped: {cause}").into());
    }
    println!("{:?}", report?);
    Ok(())
}

#[cfg(not(feature = "real-chain"))]
async fn run_on_chain(
    target: ChainTarget<'_>,
    _key: &str,
    executor: nsn_lane1::executor::ExecutorConfig,
    sidecar: nsn_lane1::sidecar::set::SidecarSet,
    _telemetry: Option<SocketAddr>,
) -> CliResult {
    let sidecars: Vec<&str> = sidecar.members().iter().map(|m| m.endpoint()).collect();
    tracing::info!(?executor, ?sidecars, "configuration accepted");
    Err(format!(
        "cannot connect to {}: this binary was built without the real-chain backend (build with the default features); use `nsn-lane1 dev` for the embedded chain",
        target.url
    )
    .into())
}

#[cfg(feature = "dev")]
async fn sidecar(args: SidecarArgs) -> CliResult {
    if args.max_runs == 0 || args.max_run_secs == 0 {
        return Err("--max-runs and --max-run-secs must be at least 1".into());
    }
    let memory_limit = usize::try_from(args.memory_limit_mib)
        .ok()
        .and_then(|mib| mib.checked_mul(1 << 20))
        .ok_or("--memory-limit-mib is too large for this machine")?;
    let store = match &args.store_dir {
        Some(dir) => BlobStore::with_dir(dir)?,
        None => BlobStore::in_memory(),
    }
    .with_memory_limit(memory_limit);
    for path in &args.preload {
        let cid = store.put_file(path)?;
        println!("{cid}  {}", path.display());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let token = match &args.auth_token_file {
        Some(path) => Some(nsn_lane1::sidecar::client::AuthToken::from_file(path)?),
        None => None,
    };
    if !addr.ip().is_loopback() && token.is_none() {
        // Without a credential anyone who reaches it can run models, cancel
        // runs and read every blob.
        tracing::warn!(%addr, "the sidecar listens beyond loopback without --auth-token-file");
    }
    tracing::info!(%addr, semantics = ?args.semantics, auth = token.is_some(), "reference sidecar listening");
    let limits = SidecarLimits {
        max_runs: args.max_runs,
        max_run_time: Duration::from_secs(args.max_run_secs),
    };
    let sidecar = ReferenceSidecar::with_limits(store, limits);
    if let Some(ms) = args.load_ms {
        if args.model_slots == 0 {
            return Err("--model-slots must be at least 1".into());
        }
        let load = Duration::from_millis(ms);
        sidecar.set_residency(Some(match args.vram_mb {
            Some(mb) => nsn_lane1::sidecar::server::Residency::from_vram_mb(load, mb),
            None => nsn_lane1::sidecar::server::Residency {
                load,
                slots: args.model_slots,
            },
        }));
    }
    if !args.serve.is_empty() {
        for m in &args.serve {
            if nsn_lane1::sidecar::models::find(m).is_none() {
                return Err(format!("--serve {m:?}: no such built-in model").into());
            }
        }
        let served: Vec<&str> = args.serve.iter().map(String::as_str).collect();
        sidecar.set_served(Some(&served));
    }
    sidecar.set_semantics(args.semantics);
    sidecar.set_auth_token(token);
    sidecar.set_setup_fault_file(args.setup_fault_file);
    sidecar
        .serve(listener, async {
            ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}
