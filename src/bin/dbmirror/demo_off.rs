//! `dbmirror demo` in a build without the reference cloud (`--no-default-features`): the
//! command exists, so scripts get a clear answer instead of "unknown command".

/// Whatever was passed; nothing runs without the reference cloud.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

/// Says why the demo cannot run here.
pub fn run(_: DemoArgs) -> anyhow::Result<bool> {
    anyhow::bail!(
        "this dbmirror was built without the reference cloud, which `demo` runs in-process: \
         build it with the default features (`cargo build --release`)"
    )
}
