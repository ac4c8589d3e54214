//! `containerd-shim-wasmstub-v1`: runwasi's shim layer with an engine that runs no wasm at all.
//!
//! The layer decides per container: an entrypoint that is an ELF (or a script) with the other-execute bit and no wasm
//! layers in the image runs as a plain Linux container; anything else is offered to the engine. This engine refuses
//! everything it is offered, so what is exercised is runwasi's task service, its container handling and its
//! libcontainer path: the part every runwasi engine shim (wasmtime, wasmedge, spin, ...) shares.
use anyhow::bail;
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{Cli, Shim};

struct WasmStub;

#[derive(Default)]
struct Refuser;

impl Shim for WasmStub {
    type Sandbox = Refuser;

    fn name() -> &'static str {
        "wasmstub"
    }
}

impl Sandbox for Refuser {
    async fn run_wasi(&self, _ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        bail!("the wasmstub engine runs no wasm modules")
    }

    async fn can_handle(&self, _ctx: &impl RuntimeContext) -> anyhow::Result<()> {
        bail!("the wasmstub engine handles no wasm modules; only native Linux entrypoints run")
    }
}

fn main() {
    WasmStub::run(None);
}
