use std::process::ExitCode;

use iam_local::{Options, USAGE};

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("iam-local: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    if let Some(org) = opts.recover_admin.clone() {
        return match iam_local::recover_admin(&opts, &org).await {
            Ok(key) => {
                // Printed once, on its own line, like a bootstrap key.
                println!("Recovery API key for {org}: {key}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("iam-local: recovery failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match iam_local::serve(opts, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iam-local: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("IAM_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
